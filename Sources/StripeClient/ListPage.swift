/// One page of a Stripe list.
struct ListPage<Element: Decodable & Sendable>: Decodable, Sendable {
    let data: [Element]
    let has_more: Bool?
}
