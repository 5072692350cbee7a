import StripeClient
import Testing

@Suite struct FormParametersTests {
    @Test func nestedKeys_andReservedCharacters_areEscaped() {
        var form = FormParameters()
        form.add("line_items[0][price_data][unit_amount]", 500)
        form.add("success_url", "https://shop.example/ok?x=1&y=ä b")
        let text = String(decoding: form.encoded(), as: UTF8.self)
        #expect(
            text == "line_items%5B0%5D%5Bprice_data%5D%5Bunit_amount%5D=500"
                + "&success_url=https%3A%2F%2Fshop.example%2Fok%3Fx%3D1%26y%3D%C3%A4%20b")
    }

    @Test func orderIsKept() {
        var form = FormParameters()
        form.add("b", "2")
        form.add("a", "1")
        #expect(form.queryString == "b=2&a=1")
    }
}
