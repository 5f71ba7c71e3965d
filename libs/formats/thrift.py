"""Thrift's compact protocol, generically: read a Parquet footer, change a few fields, write it
back byte for byte.

A struct is decoded without its IDL, as the ordered list of its ``(field id, type, value)``; a
list or set keeps its element type, a map its key and value types, so that encoding what was
decoded gives the same bytes as the canonical writers (Apache Thrift's C++ and Java, which write
Parquet footers): short field headers for id deltas 1-15, the long form otherwise, short list
headers for 0-14 elements. Values: bool, int (byte, i16, i32, i64: range-checked when written),
float (double), bytes (binary, string, and uuid: 16 bytes), :class:`Struct`, :class:`ThriftList`,
:class:`ThriftMap`. Booleans inside containers are read as 1 true, anything else false, and
written 1/2 as those writers do (the spec says 0 for false; Parquet footers hold no list of
bools).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TypeAlias, TypeVar

__all__ = [
    "BINARY",
    "BOOL",
    "BYTE",
    "DOUBLE",
    "I16",
    "I32",
    "I64",
    "LIST",
    "MAP",
    "SET",
    "STRUCT",
    "UUID",
    "Struct",
    "ThriftError",
    "ThriftList",
    "ThriftMap",
    "Value",
    "decode",
    "encode",
]

STOP = 0
BOOL = 1
"""A bool field's type whatever its value (on the wire: 1 true, 2 false)."""
FALSE = 2
BYTE, I16, I32, I64, DOUBLE, BINARY, LIST, SET, MAP, STRUCT, UUID = range(3, 14)
_BITS = {BYTE: 8, I16: 16, I32: 32, I64: 64}
_T = TypeVar("_T")
MAX_DEPTH = 64
"""Nesting refused beyond this (a Parquet footer nests about 6 deep)."""


class ThriftError(ValueError):
    """Bytes that are not a compact-protocol struct, or a value that cannot be written."""


@dataclass
class Struct:
    """A struct's fields in wire order: ``(field id, type, value)``."""

    fields: list[tuple[int, int, Value]] = field(default_factory=list)

    def get(self, field_id: int) -> Value | None:
        """The value of field ``field_id`` (None: absent)."""
        return next((value for fid, _, value in self.fields if fid == field_id), None)

    def set(self, field_id: int, kind: int, value: Value) -> None:
        """Replace field ``field_id`` where it is, or insert it in field id order."""
        for index, (fid, _, _) in enumerate(self.fields):
            if fid == field_id:
                self.fields[index] = (field_id, kind, value)
                return
        at = next((i for i, (fid, _, _) in enumerate(self.fields) if fid > field_id), None)
        self.fields.insert(len(self.fields) if at is None else at, (field_id, kind, value))


@dataclass
class ThriftList:
    """A list (or a set: ``kind`` SET) of elements of type ``element`` (BOOL may be 1 or 2)."""

    element: int
    items: list[Value] = field(default_factory=list)
    kind: int = LIST


@dataclass
class ThriftMap:
    """A map: key and value types (an empty map has none on the wire), its pairs in order."""

    key: int
    value: int
    items: list[tuple[Value, Value]] = field(default_factory=list)


Value: TypeAlias = "bool | int | float | bytes | Struct | ThriftList | ThriftMap"


# -- decoding ------------------------------------------------------------------------------------


class _Reader:
    def __init__(self, data: bytes, position: int) -> None:
        self.data = data
        self.position = position

    def byte(self) -> int:
        try:
            value = self.data[self.position]
        except IndexError:
            raise ThriftError("truncated") from None
        self.position += 1
        return value

    def take(self, length: int) -> bytes:
        end = self.position + length
        if length < 0 or end > len(self.data):
            raise ThriftError("truncated")
        chunk = self.data[self.position : end]
        self.position = end
        return chunk

    def varint(self) -> int:
        byte = self.byte()
        if byte < 0x80:
            return byte
        result, shift = byte & 0x7F, 7
        while True:
            byte = self.byte()
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result
            shift += 7
            if shift > 63:
                raise ThriftError("varint longer than 10 bytes")

    def zigzag(self, kind: int) -> int:
        raw = self.varint()
        value = (raw >> 1) ^ -(raw & 1)
        _check_int(kind, value)
        return value

    def value(self, kind: int, depth: int) -> Value:
        if kind in (BOOL, FALSE):  # an element: one byte
            return self.byte() == 1
        if kind == BYTE:
            byte = self.byte()
            return byte - 256 if byte > 127 else byte
        if kind in (I16, I32, I64):
            return self.zigzag(kind)
        if kind == DOUBLE:
            return float(struct.unpack("<d", self.take(8))[0])
        if kind == BINARY:
            return self.take(self.varint())
        if kind == UUID:
            return self.take(16)
        if depth >= MAX_DEPTH:
            raise ThriftError(f"nested deeper than {MAX_DEPTH}")
        if kind == STRUCT:
            return self.struct(depth + 1)
        if kind in (LIST, SET):
            header = self.byte()
            size = header >> 4 if header >> 4 != 15 else self.varint()
            element = _checked_type(header & 0x0F)
            items = [self.value(element, depth + 1) for _ in range(size)]
            return ThriftList(element, items, kind)
        if kind == MAP:
            size = self.varint()
            if not size:
                return ThriftMap(I32, I32)  # no types on the wire: any
            types = self.byte()
            key, value = _checked_type(types >> 4), _checked_type(types & 0x0F)
            pairs = [
                (self.value(key, depth + 1), self.value(value, depth + 1)) for _ in range(size)
            ]
            return ThriftMap(key, value, pairs)
        raise ThriftError(f"unknown type {kind}")

    def struct(self, depth: int) -> Struct:
        fields: list[tuple[int, int, Value]] = []
        last = 0
        while (header := self.byte()) != STOP:
            kind, delta = _checked_type(header & 0x0F), header >> 4
            field_id = last + delta if delta else self.zigzag(I16)
            if kind in (BOOL, FALSE):
                fields.append((field_id, BOOL, kind == BOOL))
            else:
                fields.append((field_id, kind, self.value(kind, depth)))
            last = field_id
        return Struct(fields)


def _checked_type(kind: int) -> int:
    if not BOOL <= kind <= UUID:
        raise ThriftError(f"unknown type {kind}")
    return kind


def _check_int(kind: int, value: int) -> None:
    bits = _BITS[kind]
    if not -(1 << (bits - 1)) <= value < 1 << (bits - 1):
        raise ThriftError(f"{value} out of range for a {bits}-bit integer")


def decode(data: bytes, start: int = 0) -> tuple[Struct, int]:
    """The struct encoded at ``data[start:]`` and the position just after it."""
    if start < 0:
        raise ThriftError("a negative position")
    reader = _Reader(data, start)
    result = reader.struct(0)
    return result, reader.position


# -- encoding ------------------------------------------------------------------------------------


class _Writer:
    def __init__(self) -> None:
        self.out = bytearray()

    def varint(self, value: int) -> None:
        while value > 0x7F:
            self.out.append(value & 0x7F | 0x80)
            value >>= 7
        self.out.append(value)

    def zigzag(self, kind: int, value: int) -> None:
        _check_int(kind, value)
        self.varint(2 * value if value >= 0 else -2 * value - 1)

    def value(self, kind: int, value: Value) -> None:
        if kind in (BOOL, FALSE):
            self.out.append(1 if _typed(value, bool, kind) else 2)
        elif kind == BYTE:
            byte = _typed(value, int, kind)
            _check_int(BYTE, byte)
            self.out.append(byte & 0xFF)
        elif kind in (I16, I32, I64):
            self.zigzag(kind, _typed(value, int, kind))
        elif kind == DOUBLE:
            self.out += struct.pack("<d", _typed(value, float, kind))
        elif kind == BINARY:
            data = _typed(value, bytes, kind)
            self.varint(len(data))
            self.out += data
        elif kind == UUID:
            data = _typed(value, bytes, kind)
            if len(data) != 16:
                raise ThriftError("a uuid is 16 bytes")
            self.out += data
        elif kind == STRUCT:
            self.struct(_typed(value, Struct, kind))
        elif kind in (LIST, SET):
            items = _typed(value, ThriftList, kind)
            size = len(items.items)
            if size < 15:
                self.out.append(size << 4 | items.element)
            else:
                self.out.append(0xF0 | items.element)
                self.varint(size)
            for item in items.items:
                self.value(items.element, item)
        elif kind == MAP:
            pairs = _typed(value, ThriftMap, kind)
            self.varint(len(pairs.items))
            if pairs.items:
                self.out.append(pairs.key << 4 | pairs.value)
            for key, item in pairs.items:
                self.value(pairs.key, key)
                self.value(pairs.value, item)
        else:
            raise ThriftError(f"unknown type {kind}")

    def struct(self, value: Struct) -> None:
        last = 0
        for field_id, kind, item in value.fields:
            wire = (BOOL if _typed(item, bool, kind) else FALSE) if kind == BOOL else kind
            delta = field_id - last
            if 0 < delta <= 15:
                self.out.append(delta << 4 | wire)
            else:
                self.out.append(wire)
                self.zigzag(I16, field_id)
            if kind != BOOL:
                self.value(kind, item)
            last = field_id
        self.out.append(STOP)


def _typed(value: Value, expected: type[_T], kind: int) -> _T:
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ThriftError(f"a value of type {kind} cannot be {type(value).__name__}")
    return value


def encode(value: Struct) -> bytes:
    """The compact-protocol bytes of ``value``."""
    writer = _Writer()
    writer.struct(value)
    return bytes(writer.out)
