#!/usr/bin/env python3
"""Generates Sources/PaymentsWire/Messages.generated.swift: Swift value types for
the method messages of payments.proto, bridged to the protobuf-c structs.

protobuf-c gives C structs with raw pointers; each Swift type here copies every
field out on decode and builds the C struct in an arena on encode, so no C
pointer escapes. Run `make wire-messages` after changing a message below or
in the proto (the list here names the fields this build uses, all of them).
"""
import sys

# message -> [(proto field, swift name, kind)] ; kinds: string, bytes, int64, uint64, uint32, bool,
# enum:SwiftEnum:CEnumType, omsg:SwiftType (optional), rmsg:SwiftType (repeated), rstring, rheader
MESSAGES = {
    "LineItem": [("sku", "sku", "string"), ("name", "name", "string"), ("quantity", "quantity", "int64"),
                 ("unit_amount", "unitAmount", "int64"), ("price_id", "priceID", "string")],
    "CreateCheckoutRequest": [("deal_id", "dealID", "string"), ("customer_ref", "customerRef", "string"),
                              ("mode", "mode", "enum:Mode:Payments__V1__Mode"), ("currency", "currency", "string"),
                              ("items", "items", "rmsg:LineItem"), ("claims", "claims", "rstring"),
                              ("success_url", "successURL", "string"), ("cancel_url", "cancelURL", "string"),
                              ("on_open", "onOpen", "enum:OnOpen:Payments__V1__OnOpen"),
                              ("metadata", "metadata", "rheader")],
    "Payment": [("payment_id", "paymentID", "string"), ("deal_id", "dealID", "string"),
                ("customer_ref", "customerRef", "string"), ("mode", "mode", "enum:Mode:Payments__V1__Mode"),
                ("status", "status", "enum:PaymentStatus:Payments__V1__PaymentStatus"),
                ("currency", "currency", "string"), ("amount_total", "amountTotal", "int64"),
                ("amount_refunded", "amountRefunded", "int64"),
                ("checkout_session_id", "checkoutSessionID", "string"), ("checkout_url", "checkoutURL", "string"),
                ("expires_at", "expiresAt", "int64"), ("payment_intent_id", "paymentIntentID", "string"),
                ("order_id", "orderID", "string"), ("created", "created", "bool"),
                ("failure_reason", "failureReason", "string"), ("created_at", "createdAt", "int64"),
                ("updated_at", "updatedAt", "int64"), ("items", "items", "rmsg:LineItem"),
                ("claims", "claims", "rstring"), ("subscription_id", "subscriptionID", "string"),
                ("refunds", "refunds", "rmsg:Refund")],
    "RefundRequest": [("deal_id", "dealID", "string"), ("payment_id", "paymentID", "string"),
                      ("amount", "amount", "int64"),
                      ("reason", "reason", "enum:RefundReason:Payments__V1__RefundReason"),
                      ("restock", "restock", "bool")],
    "Refund": [("refund_id", "refundID", "string"), ("payment_id", "paymentID", "string"),
               ("amount", "amount", "int64"), ("status", "status", "enum:RefundStatus:Payments__V1__RefundStatus"),
               ("stripe_refund_id", "stripeRefundID", "string"), ("payment", "payment", "omsg:Payment"),
               ("reason", "reason", "enum:RefundReason:Payments__V1__RefundReason"),
               ("failure_reason", "failureReason", "string"), ("created_at", "createdAt", "int64")],
    "ClaimRef": [("key", "key", "string")],
    "Claim": [("key", "key", "string"), ("state", "state", "enum:ClaimState:Payments__V1__ClaimState"),
              ("deal_id", "dealID", "string"), ("expires_at", "expiresAt", "int64")],
    "PaymentRef": [("deal_id", "dealID", "string"), ("payment_id", "paymentID", "string")],
    "PaymentList": [("payments", "payments", "rmsg:Payment")],
    "StockUpdate": [("sku", "sku", "string"), ("on_hand", "onHand", "int64")],
    "StockAdjustment": [("sku", "sku", "string"), ("delta", "delta", "int64")],
    "StockRef": [("sku", "sku", "string")],
    "Stock": [("sku", "sku", "string"), ("on_hand", "onHand", "int64"), ("reserved", "reserved", "int64"),
              ("available", "available", "int64")],
    "AuditEvent": [("seq", "seq", "uint64"), ("at", "at", "int64"), ("payment_id", "paymentID", "string"),
                   ("kind", "kind", "string"), ("from_status", "fromStatus", "string"),
                   ("to_status", "toStatus", "string"), ("detail", "detail", "string")],
    "EventList": [("events", "events", "rmsg:AuditEvent")],
    "ReconcileReport": [("expired", "expired", "uint64"), ("resumed", "resumed", "uint64"),
                        ("repaired", "repaired", "uint64"), ("orphans", "orphans", "uint64"), ("stuck", "stuck", "uint64")],
    "CancelRequest": [("deal_id", "dealID", "string"), ("reason", "reason", "string")],
    "StripeEvent": [("payload", "payload", "bytes"), ("signature", "signature", "string")],
    "EventResult": [("event_id", "eventID", "string"), ("type", "type", "string"),
                    ("outcome", "outcome", "enum:EventOutcome:Payments__V1__EventOutcome")],
}

def snake(name):
    out = ""
    for i, ch in enumerate(name):
        if ch.isupper() and i > 0:
            out += "_"
        out += ch.lower()
    return out

def swift_type(kind):
    base = kind.split(":")[0]
    return {"string": "String", "bytes": "[UInt8]", "int64": "Int64", "uint64": "UInt64", "uint32": "UInt32",
            "bool": "Bool", "rstring": "[String]", "rheader": "[Header]"}.get(base) or (
        kind.split(":")[1] if base == "enum" else f"[{kind.split(':')[1]}]" if base == "rmsg"
        else f"{kind.split(':')[1]}?" if base == "omsg" else kind.split(":")[1])

def default(kind):
    base = kind.split(":")[0]
    return {"string": '""', "bytes": "[]", "int64": "0", "uint64": "0", "uint32": "0", "bool": "false",
            "rstring": "[]", "rheader": "[]", "rmsg": "[]", "omsg": "nil", "enum": ".unspecified"}[base]

def read(field, kind):
    base = kind.split(":")[0]
    if base == "string": return f"swiftString(c.{field})"
    if base == "bytes": return f"swiftBytes(c.{field})"
    if base in ("int64", "uint64", "uint32"): return f"c.{field}"
    if base == "bool": return f"c.{field} != 0"
    if base == "enum": return f"{kind.split(':')[1]}(rawValue: Int(c.{field}.rawValue)) ?? .unspecified"
    if base == "rstring": return f"repeatedStrings(c.n_{field}, c.{field})"
    if base == "rheader": return f"repeated(c.n_{field}, c.{field}, Header.init)"
    if base == "rmsg": return f"repeated(c.n_{field}, c.{field}, {kind.split(':')[1]}.init(c:))"
    if base == "omsg": return f"c.{field}.map {{ {kind.split(':')[1]}(c: $0.pointee) }}"
    raise ValueError(kind)

def write(field, swift, kind):
    base = kind.split(":")[0]
    if base == "string": return [f"c.pointee.{field} = arena.cString(self.{swift})"]
    if base == "bytes": return [f"c.pointee.{field} = binaryData(arena.bytes(self.{swift}))"]
    if base in ("int64", "uint64", "uint32"): return [f"c.pointee.{field} = self.{swift}"]
    if base == "bool": return [f"c.pointee.{field} = self.{swift} ? 1 : 0"]
    if base == "enum": return [f"c.pointee.{field} = {kind.split(':')[2]}(rawValue: UInt32(self.{swift}.rawValue))"]
    if base == "rstring": return [f"c.pointee.n_{field} = self.{swift}.count",
                                  f"c.pointee.{field} = cStringArray(self.{swift}, in: arena)"]
    if base == "rheader": return [f"c.pointee.n_{field} = self.{swift}.count",
                                  f"c.pointee.{field} = Header.cArray(self.{swift}, in: arena)"]
    if base == "rmsg": return [f"c.pointee.n_{field} = self.{swift}.count",
                               f"c.pointee.{field} = cMessageArray(self.{swift}, in: arena) {{ $0.cMessage(in: $1) }}"]
    if base == "omsg": return [f"c.pointee.{field} = self.{swift}?.cMessage(in: arena)"]
    raise ValueError(kind)

out = ["// Generated by scripts/gen-wire-messages.py from the message list in that script. Do not edit.",
       "// swift-format-ignore-file", "import PaymentsProtoC", ""]
for name, fields in MESSAGES.items():
    c = f"Payments__V1__{name}"
    fn = f"payments__v1__{snake(name)}"
    out.append(f"/// `payments.v1.{name}`.")
    out.append(f"public struct {name}: WireMessage, Equatable {{")
    for f, s, k in fields:
        out.append(f"    public var {s}: {swift_type(k)}")
    out.append("")
    params = ", ".join(f"{s}: {swift_type(k)} = {default(k)}" for f, s, k in fields)
    out.append(f"    public init({params}) {{")
    for f, s, k in fields:
        out.append(f"        self.{s} = {s}")
    out.append("    }")
    out.append("")
    out.append(f"    init(c: {c}) {{")
    for f, s, k in fields:
        out.append(f"        self.{s} = {read(f, k)}")
    out.append("    }")
    out.append("")
    out.append("    public init(serialized bytes: [UInt8]) throws {")
    out.append("        self = try withUnpacked(")
    out.append(f"            bytes, descriptor: {fn}__descriptor, unpack: {{ {fn}__unpack(nil, $0, $1) }},")
    out.append(f"            free: {{ {fn}__free_unpacked($0, nil) }}")
    out.append(f"        ) {{ c in {name}(c: c) }}")
    out.append("    }")
    out.append("")
    out.append(f"    func cMessage(in arena: CArena) -> UnsafeMutablePointer<{c}> {{")
    out.append(f"        let c = arena.allocate({c}.self)!")
    out.append(f"        {fn}__init(c)")
    for f, s, k in fields:
        for line in write(f, s, k):
            out.append("        " + line)
    out.append("        return c")
    out.append("    }")
    out.append("")
    out.append("    public func serialized() -> [UInt8] {")
    out.append("        let arena = CArena()")
    out.append("        let c = self.cMessage(in: arena)")
    out.append("        return withExtendedLifetime(arena) {")
    out.append(f"            packToArray(size: {fn}__get_packed_size(c)) {{ {fn}__pack(c, $0) }}")
    out.append("        }")
    out.append("    }")
    out.append("}")
    out.append("")
sys.stdout.write("\n".join(out))
