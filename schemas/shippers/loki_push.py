"""Message classes of Loki's push API (`logproto.PushRequest`), built from a descriptor.

The fields, numbers and types are those of Loki's pkg/push/push.proto (package `logproto`);
its gogoproto options only shape Go code and do not change the wire format. Declaring the
descriptor here keeps the build free of protoc and of generated code.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2

_F = descriptor_pb2.FieldDescriptorProto
_PACKAGE = "logproto"
# name → [(field name, number, label, type, message type name)]
_MESSAGES: dict[str, list[tuple[str, int, int, int, str]]] = {
    "PushRequest": [
        ("streams", 1, _F.LABEL_REPEATED, _F.TYPE_MESSAGE, ".logproto.StreamAdapter"),
        ("format", 2, _F.LABEL_OPTIONAL, _F.TYPE_STRING, ""),
    ],
    "PushResponse": [],
    "StreamAdapter": [
        ("labels", 1, _F.LABEL_OPTIONAL, _F.TYPE_STRING, ""),
        ("entries", 2, _F.LABEL_REPEATED, _F.TYPE_MESSAGE, ".logproto.EntryAdapter"),
        ("hash", 3, _F.LABEL_OPTIONAL, _F.TYPE_UINT64, ""),
    ],
    "LabelPairAdapter": [
        ("name", 1, _F.LABEL_OPTIONAL, _F.TYPE_STRING, ""),
        ("value", 2, _F.LABEL_OPTIONAL, _F.TYPE_STRING, ""),
    ],
    "EntryAdapter": [
        ("timestamp", 1, _F.LABEL_OPTIONAL, _F.TYPE_MESSAGE, ".google.protobuf.Timestamp"),
        ("line", 2, _F.LABEL_OPTIONAL, _F.TYPE_STRING, ""),
        ("structuredMetadata", 3, _F.LABEL_REPEATED, _F.TYPE_MESSAGE,
         ".logproto.LabelPairAdapter"),
        ("parsed", 4, _F.LABEL_REPEATED, _F.TYPE_MESSAGE, ".logproto.LabelPairAdapter"),
    ],
}


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(
        name="tallenne/loki_push.proto", package=_PACKAGE, syntax="proto3",
        dependency=["google/protobuf/timestamp.proto"],
    )
    for message_name, fields in _MESSAGES.items():
        message = file.message_type.add(name=message_name)
        for name, number, label, kind, type_name in fields:
            field = message.field.add(name=name, number=number, label=label, type=kind)
            if type_name:
                field.type_name = type_name
            field.json_name = name
    return file


def _message_classes() -> dict[str, Any]:
    # A pool of its own: nothing else in the process can clash with `logproto`.
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(_file_descriptor())
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
        for name in _MESSAGES
    }


_CLASSES = _message_classes()
PushRequest: Any = _CLASSES["PushRequest"]
PushResponse: Any = _CLASSES["PushResponse"]
StreamAdapter: Any = _CLASSES["StreamAdapter"]
EntryAdapter: Any = _CLASSES["EntryAdapter"]
LabelPairAdapter: Any = _CLASSES["LabelPairAdapter"]
