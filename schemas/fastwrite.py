"""A specialised Avro binary writer, compiled once per schema into nested closures.

fastavro's `schemaless_writer` costs ~10 us per call whatever the record, which is most of a
producer's per-message budget. This module turns a parsed schema into a function that writes
the same bytes for the value shapes our model produces (ints for timestamps, tuple notation for
record branches of unions) in a fraction of that time.

It is deliberately conservative: any value it is not sure about (a bool where an int is
expected, a dict branch without a name, an out-of-range int, a string that is not valid UTF-8)
raises `Unsupported`, and the codec then falls back to fastavro's strict writer, which either
encodes the value or explains what is wrong with it. A property test asserts byte equality with
fastavro for generated requests and results.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any

Write = Callable[[bytearray, Any], None]

_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_FLOAT = struct.Struct("<f")
_DOUBLE = struct.Struct("<d")


class Unsupported(Exception):
    """The fast path cannot encode this value; use the general writer."""


def _varint(n: int) -> bytes:
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# Zigzag varints of small non-negative numbers (string lengths, union and enum indexes).
_SMALL = tuple(_varint(n << 1) for n in range(8192))


def _long_bytes(n: int) -> bytes:
    if 0 <= n < 8192:
        return _SMALL[n]
    return _varint((n << 1) ^ (n >> 63))


def _write_null(out: bytearray, value: Any) -> None:
    if value is not None:
        raise Unsupported


def _write_boolean(out: bytearray, value: Any) -> None:
    if value is True:
        out += b"\x01"
    elif value is False:
        out += b"\x00"
    else:
        raise Unsupported


def _write_int(out: bytearray, value: Any) -> None:
    if type(value) is not int or not _INT_MIN <= value <= _INT_MAX:
        raise Unsupported
    out += _long_bytes(value)


def _write_long(out: bytearray, value: Any) -> None:
    if type(value) is not int or not _LONG_MIN <= value <= _LONG_MAX:
        raise Unsupported
    out += _long_bytes(value)


def _write_float(out: bytearray, value: Any) -> None:
    if type(value) is not float and type(value) is not int:
        raise Unsupported
    try:
        out += _FLOAT.pack(value)
    except (OverflowError, struct.error) as exc:
        raise Unsupported from exc


def _write_double(out: bytearray, value: Any) -> None:
    if type(value) is not float and type(value) is not int:
        raise Unsupported
    out += _DOUBLE.pack(value)


def _write_string(out: bytearray, value: Any) -> None:
    if type(value) is not str:
        raise Unsupported
    try:
        data = value.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates
        raise Unsupported from exc
    size = len(data)
    out += _SMALL[size] if size < 8192 else _long_bytes(size)
    out += data


def _write_bytes(out: bytearray, value: Any) -> None:
    if type(value) is not bytes:
        raise Unsupported
    out += _long_bytes(len(value))
    out += value


_PRIMITIVES: dict[str, Write] = {
    "null": _write_null,
    "boolean": _write_boolean,
    "int": _write_int,
    "long": _write_long,
    "float": _write_float,
    "double": _write_double,
    "string": _write_string,
    "bytes": _write_bytes,
}


def compile_writer(schema: Any) -> Callable[[Any], bytes]:
    """A function that encodes a datum of `schema` (as parsed by fastavro) to Avro binary."""
    named: dict[str, Write] = {}
    write = _compile(schema, named)

    def encode(datum: Any) -> bytes:
        out = bytearray()
        write(out, datum)
        return bytes(out)

    return encode


_CONTAINERS: dict[str, Callable[[Mapping[str, Any], dict[str, Write]], Write]] = {}


def _compile(schema: Any, named: dict[str, Write]) -> Write:
    if isinstance(schema, list):
        return _compile_union(schema, named)
    if isinstance(schema, str):
        known = _PRIMITIVES.get(schema)
        if known is None and schema not in named:
            raise ValueError(f"unknown type {schema!r}")
        return known or _late(named, schema)
    kind = schema["type"]
    compiler = _CONTAINERS.get(kind)
    if compiler is not None:
        return compiler(schema, named)
    if kind in _PRIMITIVES:  # {"type": "long", "logicalType": ...}: ints pass through unchanged
        return _PRIMITIVES[kind]
    raise ValueError(f"type {kind!r} has no fast writer")


def _late(named: dict[str, Write], name: str) -> Write:
    """A reference to a named type that may still be compiling (recursive schemas)."""

    def write(out: bytearray, value: Any) -> None:
        named[name](out, value)

    return write


def _compile_record(schema: Mapping[str, Any], named: dict[str, Write]) -> Write:
    name = schema["name"]
    fields: list[tuple[str, Write]] = []
    field_count = len(schema["fields"])

    def write(out: bytearray, value: Any) -> None:
        # Same size and every field present means no extra fields either. Anything else goes
        # to the strict writer, which names the missing or unknown field.
        if type(value) is not dict or len(value) != field_count:
            raise Unsupported
        try:
            for field_name, write_field in fields:
                write_field(out, value[field_name])
        except KeyError as exc:
            raise Unsupported from exc

    named[name] = write
    fields.extend((f["name"], _compile(f["type"], named)) for f in schema["fields"])
    return write


def _compile_enum(schema: Mapping[str, Any], named: dict[str, Write]) -> Write:
    index = {symbol: _long_bytes(i) for i, symbol in enumerate(schema["symbols"])}

    def write(out: bytearray, value: Any) -> None:
        encoded = index.get(value) if type(value) is str else None
        if encoded is None:
            raise Unsupported
        out += encoded

    named[schema["name"]] = write
    return write


def _compile_map(schema: Mapping[str, Any], named: dict[str, Write]) -> Write:
    write_value = _compile(schema["values"], named)

    def write(out: bytearray, value: Any) -> None:
        if type(value) is not dict:
            raise Unsupported
        if value:
            out += _long_bytes(len(value))
            for key, item in value.items():
                _write_string(out, key)
                write_value(out, item)
        out += b"\x00"

    return write


def _compile_array(schema: Mapping[str, Any], named: dict[str, Write]) -> Write:
    write_item = _compile(schema["items"], named)

    def write(out: bytearray, value: Any) -> None:
        if type(value) is not list:
            raise Unsupported
        if value:
            out += _long_bytes(len(value))
            for item in value:
                write_item(out, item)
        out += b"\x00"

    return write


def _branch_name(branch: Any) -> str | None:
    if isinstance(branch, dict) and branch.get("type") in ("record", "enum", "fixed"):
        return str(branch["name"])
    return None


def _compile_union(branches: list[Any], named: dict[str, Write]) -> Write:
    writers = [_compile(b, named) for b in branches]
    by_name = {
        name: (_long_bytes(i), writers[i])
        for i, b in enumerate(branches)
        if (name := _branch_name(b)) is not None
    }
    null_index = next((i for i, b in enumerate(branches) if b == "null"), None)
    null_bytes = None if null_index is None else _long_bytes(null_index)
    others = [(_long_bytes(i), writers[i]) for i, b in enumerate(branches) if b != "null"]
    # ["null", T], the optional field, is unambiguous. With several non-null branches only
    # tuple notation says which one is meant; guessing is left to fastavro.
    single = others[0] if len(others) == 1 else None
    if single is not None and null_bytes is not None:
        return _compile_optional(null_bytes, *single)

    def write(out: bytearray, value: Any) -> None:
        if value is None:
            if null_bytes is None:
                raise Unsupported
            out += null_bytes
            return
        if type(value) is tuple and len(value) == 2:
            entry = by_name.get(value[0])
            if entry is None:
                raise Unsupported
            out += entry[0]
            entry[1](out, value[1])
            return
        if single is None:
            raise Unsupported
        out += single[0]
        single[1](out, value)

    return write


def _compile_optional(null_bytes: bytes, index_bytes: bytes, write_value: Write) -> Write:
    def write(out: bytearray, value: Any) -> None:
        if value is None:
            out += null_bytes
        else:
            out += index_bytes
            write_value(out, value)

    return write


_CONTAINERS.update(
    record=_compile_record,
    enum=_compile_enum,
    map=_compile_map,
    array=_compile_array,
)
