"""OTLP ``ExportTraceServiceRequest`` bytes written straight to protobuf's wire format, from
ended spans turned into plain tuples (``rows``: what the export thread hands the exporter
process, ``gateway.otlp_export``).

Why not the SDK's encoder: it builds a protobuf object per span, attribute and value — about
3.5 µs per attribute on the export thread, with the GIL held. Here each field is a few byte
concatenations and the (key, value) pairs that repeat from request to request (a route, a tier,
a model) are encoded once. The bytes decode, with the official classes, to the message the
SDK's encoder makes for the same spans (tests/observability/test_otlp_wire.py).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from itertools import compress
from operator import not_
from typing import Any, cast

from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.span import DEFAULT_TRACE_STATE

from gateway.tracer import UNSET, FinishedSpan

_KINDS = {
    SpanKind.INTERNAL: 1,
    SpanKind.SERVER: 2,
    SpanKind.CLIENT: 3,
    SpanKind.PRODUCER: 4,
    SpanKind.CONSUMER: 5,
}
_STATUS = {StatusCode.UNSET: 0, StatusCode.OK: 1, StatusCode.ERROR: 2}
# Span.flags: whether the parent is remote is known (0x100), and it is (0x200).
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200
_PAIRS_KEPT = 4096  # encoded (key, value) pairs remembered; forgotten all at once when full
_SMALL = tuple(bytes((i,)) for i in range(0x80))  # the one-byte varints

_pack_double = struct.Struct("<d").pack
_pack_fixed64 = struct.Struct("<Q").pack
_pack_fixed32 = struct.Struct("<I").pack


def _varint(value: int) -> bytes:
    if 0 <= value < 0x80:
        return _SMALL[value]
    if value < 0:
        value += 1 << 64  # int64 as protobuf writes it: ten bytes
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2) numbered ``tag`` (< 16)."""
    size = len(payload)
    return _SMALL[tag << 3 | 2] + (_SMALL[size] if size < 0x80 else _varint(size)) + payload


def _any_value(value: Any) -> bytes:
    if isinstance(value, str):
        return _field(1, value.encode())
    if isinstance(value, bool):
        return b"\x10" + (b"\x01" if value else b"\x00")
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _pack_double(value)
    if isinstance(value, bytes):
        return _field(7, value)
    if isinstance(value, Sequence):
        return _field(5, b"".join(_field(1, _any_value(v)) for v in value))
    raise TypeError(f"cannot encode an attribute value of type {type(value).__name__}")


def _key_value(tag: int, key: str, value: Any) -> bytes:
    """One attribute: a ``KeyValue`` field numbered ``tag``."""
    return _field(tag, _field(1, key.encode()) + _field(2, _any_value(value)))


_SPAN_ATTRIBUTE = 9  # Span.attributes
# Span.kind by its OTLP number (0: unspecified, never written by the tracer).
_KIND_FIELDS = tuple(b"\x30" + _varint(number) for number in range(6))
_INTERNAL, _SERVER, _CLIENT = SpanKind.INTERNAL, SpanKind.SERVER, SpanKind.CLIENT
_pack_times = struct.Struct("<BQBQ").pack  # Span.start_time_unix_nano, end_time_unix_nano
_pack_ids = struct.Struct(">HQQHQ").pack  # tag+size, trace id (high, low), tag+size, span id
_pack_parent = struct.Struct(">HQ").pack  # tag+size, parent span id
_pack_two = struct.Struct("BBB").pack  # a tag and a two-byte varint
_LOW64 = (1 << 64) - 1
_NO_STATUS = _field(15, b"")  # the status written for an unset one, as the SDK's encoder does
# Span.flags: the parent is local (or there is none), or remote.
_LOCAL_FLAGS = b"\x85\x01" + _pack_fixed32(_HAS_IS_REMOTE)
_REMOTE_FLAGS = b"\x85\x01" + _pack_fixed32(_HAS_IS_REMOTE | _IS_REMOTE)
# Keys whose values differ on every span: not worth remembering.
_VARYING = frozenset({"tiergate.request_id"})
_REMEMBERED = frozenset({str, bool, int, float})


# An ended span as plain values (what ``marshal`` writes, and what the encoder reads): name,
# trace id, span id, parent span id (None: a root), whether the parent is remote, the kind's
# OTLP number, start and end (ns), attributes, the status's OTLP code and description, the
# trace state's header ("" when empty).
Row = tuple[str, int, int, int | None, bool, int, int, int, Mapping[str, Any], int, str | None, str]


def rows(spans: Sequence[FinishedSpan]) -> list[Row]:
    """Ended spans as ``Row`` tuples: what the export thread hands the exporter process."""
    out: list[Row] = []
    append = out.append
    for span in spans:
        context, parent, status, kind = span.context, span.parent, span.status, span.kind
        state = context[4]
        append(
            (
                span.name,
                context[0],
                context[1],
                None if parent is None else parent[1],
                parent is not None and parent[2],
                1
                if kind is _INTERNAL
                else 2
                if kind is _SERVER
                else 3
                if kind is _CLIENT
                else _KINDS[kind],
                span.start_time,
                span.end_time or 0,
                span.attributes,
                0 if status is UNSET else _STATUS[status.status_code],
                None if status is UNSET else status.description,
                "" if state is DEFAULT_TRACE_STATE else state.to_header(),
            )
        )
    return out


class SpanEncoder:
    """Ended spans → ``ExportTraceServiceRequest`` bytes, all under one resource and scope.
    One per exporting thread (its memos are not shared).

    What repeats from request to request is encoded once and remembered: a span name's field,
    and each attribute's ``KeyValue`` field by (key, value, type of the value) — a route, a
    tier, a model, token counts. A span's attributes are looked up in one pass of C loops
    (``map`` over ``zip``); only those not remembered are encoded, in Python."""

    def __init__(self, resource: Resource, scope: str) -> None:
        self._known: dict[tuple[str, Any, type], bytes] = {}
        self._names: dict[str, bytes] = {}
        pairs = b"".join(_key_value(1, k, v) for k, v in resource.attributes.items())
        self._resource = _field(1, pairs)  # ResourceSpans.resource
        if resource.schema_url:
            self._resource += _field(3, resource.schema_url.encode())
        self._scope = _field(1, _field(1, scope.encode()))

    def encode(self, spans: Sequence[FinishedSpan]) -> bytes:
        return self.encode_rows(rows(spans))

    def encode_rows(self, spans: Sequence[Row]) -> bytes:
        body = self._scope + b"".join([self._span(s) for s in spans])
        return _field(1, self._resource + _field(2, body))

    def _attributes(self, attributes: Mapping[str, Any]) -> list[bytes]:
        """The ``KeyValue`` fields of a span's attributes, in order."""
        values = attributes.values()
        # The type is part of the key: 1 == 1.0 == True, and each is written differently.
        keys = list(zip(attributes, values, map(type, values), strict=True))
        known = self._known
        try:
            fields: list[bytes | None] = list(map(known.get, keys))  # None: not remembered
        except TypeError:  # a value that cannot be a dict key (a list): encoded every time
            fields = [None] * len(keys)
        if None in fields:
            for i in compress(range(len(fields)), map(not_, fields)):
                key, value, kind = keys[i]
                fields[i] = encoded = _key_value(_SPAN_ATTRIBUTE, key, value)
                # Worth remembering: strings, booleans, integers and floats (not 0.0, which
                # would also answer for -0.0), except keys whose values never repeat.
                # A tuple of strings too (finish reasons, candidates): equal tuples of other
                # types may differ in their elements' types, as 1 and True do.
                if (
                    (kind in _REMEMBERED and (kind is not float or value))
                    or (kind is tuple and all(type(v) is str for v in value))
                ) and key not in _VARYING:
                    if len(known) >= _PAIRS_KEPT:
                        known.clear()  # forgotten all at once: the pairs in use come back
                    known[keys[i]] = encoded
        return cast("list[bytes]", fields)  # each None replaced above

    def _span(self, row: Row) -> bytes:
        (
            name,
            trace_id,
            span_id,
            parent_id,
            remote,
            kind,
            start,
            end,
            attributes,
            code,
            description,
            state,
        ) = row
        name_field = self._names.get(name)
        if name_field is None:
            name_field = _field(5, name.encode())
            if len(self._names) >= _PAIRS_KEPT:
                self._names.clear()
            self._names[name] = name_field
        # Span.trace_id and span_id (the 128-bit id as two big-endian halves): one pack.
        out = [_pack_ids(0x0A10, trace_id >> 64, trace_id & _LOW64, 0x1208, span_id)]
        if state:
            out.append(_field(3, state.encode()))
        if parent_id is not None:
            out.append(_pack_parent(0x2208, parent_id))  # Span.parent_span_id
        out.append(name_field)
        out.append(_KIND_FIELDS[kind])
        out.append(_pack_times(0x39, start, 0x41, end))
        if attributes:
            out += self._attributes(attributes)
        # The status is always written, as the SDK's encoder writes it (empty when unset).
        if code or description:
            body = _field(2, description.encode()) if description else b""
            if code:
                body += b"\x18" + _varint(code)
            out.append(_field(15, body))
        else:
            out.append(_NO_STATUS)
        out.append(_REMOTE_FLAGS if remote else _LOCAL_FLAGS)
        body = b"".join(out)
        size = len(body)  # Scope.spans: a span is 0.1-16 KB, its size two bytes
        if 0x80 <= size < 0x4000:
            return _pack_two(0x12, size & 0x7F | 0x80, size >> 7) + body
        return b"\x12" + (_SMALL[size] if size < 0x80 else _varint(size)) + body
