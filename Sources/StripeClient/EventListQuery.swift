/// The parameters of one `GET /v1/events` page.
public struct EventListQuery: Sendable, Equatable {
    public enum Cursor: Sendable, Equatable {
        /// The page of events just newer than this one (walking forward in time).
        case endingBefore(String)
        /// The page of events just older than this one (walking back from the newest).
        case startingAfter(String)
    }

    public var types: [String]
    public var createdAtLeast: Int64?
    public var cursor: Cursor?
    public var limit = 100

    public init(types: [String], createdAtLeast: Int64? = nil, cursor: Cursor? = nil) {
        self.types = types
        self.createdAtLeast = createdAtLeast
        self.cursor = cursor
    }

    var parameters: FormParameters {
        var form = FormParameters()
        for type in self.types { form.add("types[]", type) }
        if let createdAtLeast { form.add("created[gte]", createdAtLeast) }
        switch self.cursor {
        case .endingBefore(let id): form.add("ending_before", id)
        case .startingAfter(let id): form.add("starting_after", id)
        case nil: break
        }
        form.add("limit", Int64(self.limit))
        return form
    }
}
