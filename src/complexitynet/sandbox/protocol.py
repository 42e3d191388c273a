"""Wire protocol between the trusted harness and the sandbox runner. Standard library only: this
file is also copied into the sandbox image, where the runner imports it.

Messages are length-prefixed JSON objects. Values cross the boundary as *plain data* only (None,
bool, int, float, complex, str, bytes, list, tuple, dict, set, frozenset), tagged so their exact
types survive the trip, or as a reference: ["h", n], an opaque handle to an object that stays in
the sandbox, or ["B", name], a builtin such as `int` that a test passes in (trusted -> sandbox
only). The
trusted side decodes into exact built-in types, so nothing that comes back can carry behaviour
(a custom `__eq__`, a patched builtin): the tests compare genuine plain values.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable
from typing import Any, BinaryIO

MAX_MESSAGE = 16 * 1024 * 1024  # bytes; a larger result is the solution's failure
MAX_DEPTH = 100  # nesting of containers in one value
_HEADER = struct.Struct(">I")
HEADER_SIZE = _HEADER.size


class ProtocolError(Exception):
    """A message or value that breaks the protocol (malformed, too large, too deep, not plain)."""


def pack(message: dict[str, Any]) -> bytes:
    """A message as bytes on the wire: 4-byte big-endian length, then ASCII JSON."""
    data = json.dumps(message, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    if len(data) > MAX_MESSAGE:
        raise ProtocolError(f"message of {len(data)} bytes exceeds the {MAX_MESSAGE}-byte limit")
    return _HEADER.pack(len(data)) + data


def unpack(data: bytes) -> dict[str, Any]:
    """The message in `data` (the bytes after the length header)."""
    try:
        message = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"malformed message: {exc}") from None
    except RecursionError:  # JSON nested thousands deep: the parser's own recursion
        raise ProtocolError("malformed message: nested too deeply") from None
    if not isinstance(message, dict):
        raise ProtocolError("a message must be a JSON object")
    return message


def message_size(header: bytes) -> int:
    (size,) = _HEADER.unpack(header)
    if size > MAX_MESSAGE:
        raise ProtocolError(f"message of {size} bytes exceeds the {MAX_MESSAGE}-byte limit")
    return size


def write_message(stream: BinaryIO, message: dict[str, Any]) -> None:
    stream.write(pack(message))
    stream.flush()


def read_exact(stream: BinaryIO, n: int) -> bytes:
    chunks, remaining = [], n
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            raise EOFError("stream closed")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_message(stream: BinaryIO) -> dict[str, Any]:
    return unpack(read_exact(stream, message_size(read_exact(stream, _HEADER.size))))


# The sandbox side may meet subclasses (Counter, OrderedDict, namedtuple, IntEnum): they are sent
# as their plain base type. The trusted side only ever builds exact base types.
_SCALARS = (bool, int, float, complex, str, bytes)
_CONTAINERS = (list, tuple, dict, set, frozenset)


Ref = Callable[[Any], list]  # a non-plain object -> its reference, e.g. ["h", 3]
Deref = Callable[[str, Any], Any]  # (reference tag, payload) -> the object


def encode(value: Any, to_ref: Ref | None = None, _depth: int = 0) -> Any:
    """Plain data -> tagged JSON. Other objects become references via `to_ref`, else ProtocolError."""
    if _depth > MAX_DEPTH:
        raise ProtocolError(f"value nested deeper than {MAX_DEPTH} levels")
    if value is None:
        return ["n"]
    if isinstance(value, _SCALARS) or isinstance(value, _CONTAINERS):
        return _encode_plain(value, to_ref, _depth)
    if to_ref is None:
        raise ProtocolError(f"a {type(value).__name__} object is not plain data")
    return to_ref(value)


def _encode_plain(value: Any, to_ref: Ref | None, depth: int) -> Any:
    sub = lambda v: encode(v, to_ref, depth + 1)  # noqa: E731
    if isinstance(value, bool):
        return ["b", bool(value)]
    if isinstance(value, int):
        return ["i", hex(int.__index__(value))]
    if isinstance(value, float):
        return ["f", float.hex(float(value))]
    if isinstance(value, complex):
        return ["c", float.hex(value.real), float.hex(value.imag)]
    if isinstance(value, str):
        return ["s", str.__str__(value)]
    if isinstance(value, bytes):
        return ["y", base64.b64encode(bytes(value)).decode("ascii")]
    if isinstance(value, dict):
        return ["d", [[sub(k), sub(v)] for k, v in dict.items(value)]]
    tag = {list: "l", tuple: "t", set: "S", frozenset: "F"}[next(t for t in (list, tuple, set, frozenset)
                                                              if isinstance(value, t))]
    items = [sub(v) for v in value]
    if tag in ("S", "F"):  # iteration order follows the hash seed: sort, so the same set is the same bytes
        items.sort(key=lambda item: json.dumps(item, separators=(",", ":")))
    return [tag, items]


def decode(data: Any, from_ref: Deref | None = None, _depth: int = 0) -> Any:
    """Tagged JSON -> exact built-in types (references via `from_ref`); anything else is a ProtocolError."""
    if _depth > MAX_DEPTH:
        raise ProtocolError(f"value nested deeper than {MAX_DEPTH} levels")
    if not isinstance(data, list) or not data or not isinstance(data[0], str):
        raise ProtocolError("malformed value")
    tag, args = data[0], data[1:]
    sub = lambda v: decode(v, from_ref, _depth + 1)  # noqa: E731
    try:
        if tag == "n" and not args:
            return None
        if tag == "b" and type(args[0]) is bool:
            return args[0]
        if tag == "i":
            return int(_text(args[0]), 16)
        if tag == "f":
            return float.fromhex(_text(args[0]))
        if tag == "c":
            return complex(float.fromhex(_text(args[0])), float.fromhex(_text(args[1])))
        if tag == "s":
            return _text(args[0])
        if tag == "y":
            return base64.b64decode(_text(args[0]), validate=True)
        if tag == "d":
            pairs = [(sub(k), sub(v)) for k, v in _items(args[0])]
            _few_collisions([k for k, _ in pairs])
            return dict(pairs)
        if tag in ("l", "t", "S", "F"):
            items = [sub(v) for v in _items(args[0])]
            if tag in ("S", "F"):
                _few_collisions(items)
            return {"l": list, "t": tuple, "S": set, "F": frozenset}[tag](items)
        if tag in ("h", "B") and from_ref is not None:
            return from_ref(tag, args[0])
    except ProtocolError:
        raise
    except (IndexError, TypeError, ValueError) as exc:  # unhashable key, bad hex, short list
        raise ProtocolError(f"malformed '{tag}' value: {exc}") from None
    raise ProtocolError(f"unknown value tag {tag!r}")


MAX_SHARED_HASH = 64  # elements of one set or dict that may share a hash


def _few_collisions(keys: list) -> None:
    """Refuse a set or dict whose elements were chosen to share a hash: building it would take time
    quadratic in its size (50,000 ints with one hash: ~100 s). Counting hashes is linear."""
    if len(keys) <= MAX_SHARED_HASH:
        return
    counts: dict[int, int] = {}
    for key in keys:
        h = hash(key)  # TypeError (unhashable) is the caller's malformed value
        counts[h] = counts.get(h, 0) + 1
        if counts[h] > MAX_SHARED_HASH:
            raise ProtocolError(f"a set or dict with more than {MAX_SHARED_HASH} elements sharing one hash")


def _text(value: Any) -> str:
    if type(value) is not str:
        raise ProtocolError("expected a string")
    return value


def _items(value: Any) -> list:
    if type(value) is not list:
        raise ProtocolError("expected a list")
    return value
