import collections
import io
import math

import pytest

from complexitynet.sandbox import protocol as P

PLAIN = [None, True, False, 0, -7, 2**4000, 1.5, -0.0, math.inf, complex(1, -2), "", "é\udce9", b"\x00\xff",
         [1, [2, (3,)]], (), {1: "a", (2, 3): frozenset({4})}, {1, 2}, frozenset()]


@pytest.mark.parametrize("value", PLAIN, ids=repr)
def test_plain_values_round_trip_with_exact_types(value):
    back = P.decode(P.encode(value))
    assert back == value and type(back) is type(value)


def test_nan_round_trips():
    assert math.isnan(P.decode(P.encode(float("nan"))))


def test_subclasses_are_sent_as_their_plain_base():
    class Int(int):
        def __eq__(self, other):
            return True

    back = P.decode(P.encode({"c": collections.Counter("aab"), "i": Int(3), "o": collections.OrderedDict(x=1)}))
    assert back == {"c": {"a": 2, "b": 1}, "i": 3, "o": {"x": 1}}
    assert type(back["c"]) is dict and type(back["i"]) is int and not (back["i"] == 4)


def test_non_plain_needs_a_reference():
    with pytest.raises(P.ProtocolError, match="not plain data"):
        P.encode(object())
    assert P.encode([object()], lambda obj: ["h", 7]) == ["l", [["h", 7]]]


@pytest.mark.parametrize("data", [
    ["x"], [], "s", ["d", [[["l", []], ["n"]]]], ["i", "zz"], ["b", 1], ["l", "notalist"], ["h", 1],
    ["s", 5], ["y", "***"],
])
def test_decode_rejects_anything_but_plain(data):
    with pytest.raises(P.ProtocolError):
        P.decode(data)


def test_depth_is_bounded_both_ways():
    deep: list = []
    for _ in range(P.MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(P.ProtocolError, match="deeper"):
        P.encode(deep)
    wire = ["n"]
    for _ in range(P.MAX_DEPTH + 5):
        wire = ["l", [wire]]
    with pytest.raises(P.ProtocolError, match="deeper"):
        P.decode(wire)


def test_references_only_through_the_callback():
    assert P.decode(["h", 3], lambda tag, payload: (tag, payload)) == ("h", 3)
    with pytest.raises(P.ProtocolError):
        P.decode(["B", "int"])


def test_framing_round_trip_and_limits():
    stream = io.BytesIO()
    P.write_message(stream, {"ok": True, "value": P.encode([1, "two"])})
    stream.seek(0)
    assert P.decode(P.read_message(stream)["value"]) == [1, "two"]
    with pytest.raises(EOFError):
        P.read_message(stream)
    with pytest.raises(P.ProtocolError, match="exceeds"):
        P.message_size((P.MAX_MESSAGE + 1).to_bytes(4, "big"))
    with pytest.raises(P.ProtocolError, match="malformed"):
        P.unpack(b"{not json")


def test_json_nested_thousands_deep_is_a_protocol_error_not_a_crash():
    deep = b'{"ok": true, "value": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    with pytest.raises(P.ProtocolError, match="nested too deeply"):
        P.unpack(deep)


def test_a_set_built_to_collide_in_hash_is_refused_in_linear_time():
    modulus = (1 << 61) - 1  # int hashes are taken modulo this prime: its multiples all hash to 0
    colliding = [k * modulus for k in range(1, 50_001)]
    assert len({hash(x) for x in colliding}) == 1
    for tag in ("S", "F", "d"):
        value = ["d", [[["i", hex(x)], ["n"]] for x in colliding]] if tag == "d" else \
            [tag, [["i", hex(x)] for x in colliding]]
        with pytest.raises(P.ProtocolError, match="sharing one hash"):
            P.decode(value)
    ordinary = P.decode(P.encode(set(range(50_000))))  # distinct hashes: built as usual
    assert ordinary == set(range(50_000))
