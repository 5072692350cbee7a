#pragma once
#include <protobuf-c/protobuf-c.h>

// ProtobufCType is an anonymous enum the importer renames; ask C instead.
static inline int paymentsd_field_is_string(const ProtobufCFieldDescriptor *field) {
    return field->type == PROTOBUF_C_TYPE_STRING;
}
static inline int paymentsd_field_is_message(const ProtobufCFieldDescriptor *field) {
    return field->type == PROTOBUF_C_TYPE_MESSAGE;
}
