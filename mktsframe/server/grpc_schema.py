"""MarketStore's gRPC messages (package ``proto``, service ``Marketstore``), described in code.

The field names, numbers and types are the wire facts pymarketstore's client relies on (see
``docs/server.md`` for the schema as ``.proto`` text); they are built here as a
``FileDescriptorProto`` in a private descriptor pool, so no generated code or ``protoc`` step is
needed and a process that also imports pymarketstore's own classes (the tests do) sees no clash
in protobuf's default pool.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

__all__ = ["FILE_NAME", "METHODS", "PACKAGE", "SERVICE", "messages"]

PACKAGE = "proto"
SERVICE = "Marketstore"
FILE_NAME = "mktsframe/marketstore_api.proto"

_F = descriptor_pb2.FieldDescriptorProto
_STR, _BYTES, _BOOL, _I32, _I64, _ENUM, _MSG = (
    _F.TYPE_STRING, _F.TYPE_BYTES, _F.TYPE_BOOL, _F.TYPE_INT32, _F.TYPE_INT64, _F.TYPE_ENUM, _F.TYPE_MESSAGE)
_REP = "repeated"
_MAP = "map<string,int32>"

# message → [(field name, number, type or message/enum name, "repeated" | map | None)], in MarketStore's order.
_MESSAGES: dict[str, list[tuple[str, int, Any, str | None]]] = {
    "DataShape": [("name", 1, _STR, None), ("type", 2, _STR, None)],
    "NumpyMultiDataset": [("data", 1, "NumpyDataset", None), ("start_index", 2, _I32, _MAP),
                          ("lengths", 3, _I32, _MAP)],
    "NumpyDataset": [("column_types", 1, _STR, _REP), ("column_names", 2, _STR, _REP),
                     ("column_data", 3, _BYTES, _REP), ("length", 4, _I32, None),
                     ("data_shapes", 5, "DataShape", _REP)],
    "CreateRequest": [("key", 1, _STR, None), ("data_shapes", 2, "DataShape", _REP), ("row_type", 3, _STR, None)],
    "MultiCreateRequest": [("requests", 1, "CreateRequest", _REP)],
    "MultiQueryRequest": [("requests", 1, "QueryRequest", _REP)],
    "QueryRequest": [("is_sql_statement", 1, _BOOL, None), ("sql_statement", 2, _STR, None),
                     ("destination", 3, _STR, None), ("key_category", 4, _STR, None),
                     ("epoch_start", 5, _I64, None), ("epoch_start_nanos", 6, _I64, None),
                     ("epoch_end", 7, _I64, None), ("epoch_end_nanos", 8, _I64, None),
                     ("limit_record_count", 9, _I32, None), ("limit_from_start", 10, _BOOL, None),
                     ("columns", 11, _STR, _REP), ("functions", 12, _STR, _REP)],
    "MultiQueryResponse": [("responses", 1, "QueryResponse", _REP), ("version", 2, _STR, None),
                           ("timezone", 3, _STR, None)],
    "QueryResponse": [("result", 1, "NumpyMultiDataset", None)],
    "MultiWriteRequest": [("requests", 1, "WriteRequest", _REP)],
    "WriteRequest": [("data", 1, "NumpyMultiDataset", None), ("is_variable_length", 2, _BOOL, None)],
    "MultiServerResponse": [("responses", 1, "ServerResponse", _REP)],
    "ServerResponse": [("error", 1, _STR, None), ("version", 2, _STR, None)],
    "MultiKeyRequest": [("requests", 1, "KeyRequest", _REP)],
    "KeyRequest": [("key", 1, _STR, None)],
    "ListSymbolsRequest": [("format", 1, "ListSymbolsRequest.Format", None)],
    "ListSymbolsResponse": [("results", 1, _STR, _REP)],
    "ServerVersionRequest": [],
    "ServerVersionResponse": [("version", 1, _STR, None)],
}
_ENUMS = {"ListSymbolsRequest": ("Format", [("SYMBOL", 0), ("TIME_BUCKET_KEY", 1)])}
#: MarketStore defines this enum (shifted by one from its disk type codes) but no message uses it.
_DATA_TYPES = ["UNKNOWN", "FLOAT32", "INT32", "FLOAT64", "INT64", "EPOCH", "BYTE", "BOOL", "NONE", "STRING",
               "INT16", "UINT8", "UINT16", "UINT32", "UINT64", "STRING16"]

#: rpc name → (request message, response message); all unary.
METHODS = {
    "Query": ("MultiQueryRequest", "MultiQueryResponse"),
    "Create": ("MultiCreateRequest", "MultiServerResponse"),
    "Write": ("MultiWriteRequest", "MultiServerResponse"),
    "Destroy": ("MultiKeyRequest", "MultiServerResponse"),
    "ListSymbols": ("ListSymbolsRequest", "ListSymbolsResponse"),
    "ServerVersion": ("ServerVersionRequest", "ServerVersionResponse"),
}


def _field(msg: descriptor_pb2.DescriptorProto, name: str, number: int, kind: Any, label: str | None) -> None:
    f = msg.field.add(name=name, number=number, json_name=_camel(name))
    f.label = _F.LABEL_REPEATED if label else _F.LABEL_OPTIONAL
    if label == _MAP:
        entry = msg.nested_type.add(name=_camel(name, upper=True) + "Entry")
        entry.options.map_entry = True
        _field(entry, "key", 1, _STR, None)
        _field(entry, "value", 2, kind, None)
        f.type, f.type_name = _MSG, f".{PACKAGE}.{msg.name}.{entry.name}"
    elif isinstance(kind, str):
        f.type = _ENUM if kind in {f"{m}.{e}" for m, (e, _) in _ENUMS.items()} else _MSG
        f.type_name = f".{PACKAGE}.{kind}"
    else:
        f.type = kind


def _camel(name: str, upper: bool = False) -> str:
    head, *rest = name.split("_")
    return (head.capitalize() if upper else head) + "".join(p.capitalize() for p in rest)


def _file() -> descriptor_pb2.FileDescriptorProto:
    fd = descriptor_pb2.FileDescriptorProto(name=FILE_NAME, package=PACKAGE, syntax="proto3")
    for name, fields in _MESSAGES.items():
        msg = fd.message_type.add(name=name)
        if name in _ENUMS:
            enum_name, values = _ENUMS[name]
            e = msg.enum_type.add(name=enum_name)
            for vname, number in values:
                e.value.add(name=vname, number=number)
        for field in fields:
            _field(msg, *field)
    dt = fd.enum_type.add(name="DataType")
    for number, vname in enumerate(_DATA_TYPES):
        dt.value.add(name=vname, number=number)
    svc = fd.service.add(name=SERVICE)
    for rpc, (req, resp) in METHODS.items():
        svc.method.add(name=rpc, input_type=f".{PACKAGE}.{req}", output_type=f".{PACKAGE}.{resp}")
    return fd


def messages() -> dict[str, type[Any]]:
    """Message classes by name (``"MultiQueryRequest"``...), from a private descriptor pool."""
    global _CLASSES
    if _CLASSES is None:
        pool = descriptor_pool.DescriptorPool()
        fd = pool.Add(_file())
        _CLASSES = {name: message_factory.GetMessageClass(fd.message_types_by_name[name]) for name in _MESSAGES}
    return _CLASSES


_CLASSES: dict[str, type[Any]] | None = None
