"""The trusted side of execution: runs a problem's tests against a solution living in a sandbox.

The test code (MBPP asserts, HumanEval's `check`) is benchmark code and runs here, in the harness
process. Every name the solution defines appears in the tests' namespace as a proxy: calling it,
reading an attribute of what it returned or iterating over it is forwarded to the sandbox, and
only plain data comes back (see protocol.py). Objects that cannot come back stay in the sandbox
behind an opaque `Remote`, which has no truth value and equals nothing but itself. So the verdict
is decided here, by genuine built-in values; nothing the solution does inside the sandbox (exit
early, print markers, patch builtins, forge `__eq__`, walk frames) can make a test pass.
"""

from __future__ import annotations

import builtins
import dataclasses
import functools
import importlib
import math
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from complexitynet.sandbox import protocol as P
from complexitynet.sandbox.backends import Limits, Session
from complexitynet.schemas import Cases, Tests

Status = str  # "pass" | "fail" | "timeout" | "error" | "crash"


@dataclass(frozen=True)
class Timeouts:
    """CPU-time limits judge the program (machine load does not count); the wall-clock limits are a
    backstop against a program that sleeps, and a sample that ends at one is retried once."""

    load_s: float = 30.0  # wall clock: executing the solution module (and MBPP's setup code)
    test_s: float = 30.0  # wall clock: one assert, or HumanEval's whole check()
    sample_s: float = 120.0  # wall clock: everything for one sample
    case_s: float = 2.0  # CPU seconds for one input/output case (MBPP+): the floor of its own limit
    test_cpu_s: float = 10.0  # CPU seconds for loading the module, one assert, or the whole check()
    case_factor: float = 4.0  # an input's limit covers this many times the reference's CPU cost on it


def case_limits(reference_cpu_s: list[float], timeouts: Timeouts,
                total_cpu_s: float | None = None) -> tuple[list[float], float]:
    """Per-input CPU limits from the reference solution's cost, as EvalPlus sizes its time limits
    (factor x reference, with a floor), and the budget for the whole suite.

    Each limit is the floor `case_s` doubled until it covers `case_factor` x the reference's time;
    the budget likewise covers `case_factor` x the reference's total (`total_cpu_s`, else the sum).
    The costs come from a pinned measurement (prepare: sandbox/mbppplus_cpu.json), so the limits,
    and every verdict that depends on them, are the same on every machine and run.
    """
    def covering(need: float, floor: float) -> float:
        limit = floor
        while limit < need:
            limit *= 2
        return limit

    limits = [covering(timeouts.case_factor * cpu, timeouts.case_s) for cpu in reference_cpu_s]
    total = sum(reference_cpu_s) if total_cpu_s is None else total_cpu_s
    return limits, covering(timeouts.case_factor * total, timeouts.case_s)


@dataclass(frozen=True)
class Outcome:
    """What happened to one sample; `anomaly` asks the caller to recycle the session."""

    status: Status
    tests_passed: int
    tests_total: int
    detail: str
    anomaly: bool = False
    failed: tuple[int, ...] = ()  # indices of the tests that did not pass (including those never reached)
    outputs: tuple[tuple[str, Any], ...] = ()  # `reference_outputs` only: ("v", value) or ("e", why) per input
    cpu_s: tuple[float, ...] = ()  # `reference_outputs` only: CPU seconds per input
    backstop: bool = False  # ended by a wall-clock limit (a sleeping program, or a starved machine)


class SolutionStopped(Exception):  # noqa: N818 - control flow, not an error of ours
    """The solution process is gone (timeout, crash, exit): stop running tests."""

    def __init__(self, status: Status, detail: str, backstop: bool = False):
        super().__init__(detail)
        self.status, self.detail, self.backstop = status, detail, backstop


class RemoteError(Exception):
    """The solution raised; a test that meets this fails."""


def at_backstop(reply: dict[str, Any]) -> bool:
    """The runner gave up waiting on the wall clock (not a CPU-time limit)."""
    return reply.get("status") == "timeout" and str(reply.get("detail", "")).startswith("no answer within")


def stable_detail(reply: dict[str, Any], timeouts: Timeouts) -> str:
    """The runner's reason, with the remaining-time figure of a wall-clock timeout replaced by the
    configured limits, so the same inputs always give the same verdict text."""
    detail = str(reply.get("detail", reply.get("status")))
    if reply.get("status") == "timeout" and detail.startswith("no answer within"):
        return (f"time limit exceeded (load {timeouts.load_s:g}s, test {timeouts.test_s:g}s, "
                f"sample {timeouts.sample_s:g}s)")
    return detail


_STOPPED = {"timeout": "timeout", "crash": "crash", "exited": "fail", "protocol": "fail", "gone": "fail"}


class Connection:
    """One sample's conversation with the sandbox, with the test deadline applied to every request."""

    def __init__(self, session: Session, timeouts: Timeouts):
        self.session = session
        self.timeouts = timeouts
        self.test_deadline = float("inf")
        self.sample_deadline = time.monotonic() + timeouts.sample_s

    def budget(self) -> float:
        remaining = min(self.test_deadline, self.sample_deadline) - time.monotonic()
        if remaining <= 0:
            raise SolutionStopped("timeout", stable_detail({"status": "timeout", "detail": "no answer within"},
                                                           self.timeouts), backstop=True)
        return remaining

    def ask(self, message: dict[str, Any]) -> Any:
        return self.ask_reply(message)[0]

    def ask_reply(self, message: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """The decoded value and the whole reply (which may carry more, e.g. a `cases` reply's CPU times)."""
        reply = self.session.request({"cpu_s": self.timeouts.test_cpu_s, **message}, self.budget())
        if reply.get("ok"):
            try:
                return P.decode(reply.get("value"), self.deref), reply
            except P.ProtocolError as exc:
                raise RemoteError(f"the solution returned something that is not plain data ({exc})") from None
        if "error" in reply:
            raise RemoteError(str(reply["error"]))
        status = str(reply.get("status"))
        raise SolutionStopped(_STOPPED.get(status, "fail"), stable_detail(reply, self.timeouts), at_backstop(reply))

    def deref(self, tag: str, payload: Any) -> Remote:
        """Only handles may come back from the sandbox; they stay opaque here."""
        if tag != "h" or type(payload) is not int:
            raise P.ProtocolError(f"unexpected reference {tag!r} from the sandbox")
        return Remote(self, payload)

    def send(self, value: Any) -> Any:
        return P.encode(value, _reference)


def _reference(value: Any) -> list:
    """How a test passes a non-plain value in: a sandbox object back, or a builtin by name."""
    if isinstance(value, Remote):
        return ["h", value._handle]
    name = getattr(value, "__name__", None)
    if isinstance(name, str) and getattr(builtins, name, None) is value:
        return ["B", name]
    raise P.ProtocolError(f"cannot pass a {type(value).__name__} into the sandbox")


class RemoteFunction:
    """A name the solution defines that is callable (a function or class)."""

    def __init__(self, conn: Connection, name: str):
        self._conn, self._name = conn, name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._conn.ask({"op": "call", "name": self._name, "args": [self._conn.send(a) for a in args],
                               "kwargs": {k: self._conn.send(v) for k, v in kwargs.items()}})

    def __repr__(self) -> str:
        return f"<solution function {self._name}>"


class Remote:
    """An object that stays in the sandbox. It equals only itself and has no truth value."""

    def __init__(self, conn: Connection, handle: int):
        self._conn, self._handle = conn, handle

    def _ask(self, op: str, **extra: Any) -> Any:
        return self._conn.ask({"op": op, "handle": self._handle, **extra})

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._ask("call", args=[self._conn.send(a) for a in args],
                         kwargs={k: self._conn.send(v) for k, v in kwargs.items()})

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return self._ask("getattr", attr=attr)

    def __iter__(self):
        return iter(self._ask("iter"))

    def __len__(self) -> int:
        return self._ask("len")

    def __str__(self) -> str:
        return self._ask("str")

    def __repr__(self) -> str:
        return f"<sandbox object #{self._handle}>"

    def __bool__(self) -> bool:
        raise TypeError("a sandbox object has no truth value; the test needs plain data")

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)


def namespace(conn: Connection, names: dict[str, Any], sources: list[str], entry_point: str) -> dict[str, Any]:
    """The tests' globals. From the solution only the entry point and the other names the tests read
    (MBPP/601's `Pair`, HumanEval/32's `poly`), as proxies; a name the tests read that is a builtin
    stays the trusted builtin, so a solution that also defines `abs` or `sorted` cannot make the
    tests compare its output with itself. A stdlib module name the solution imported (MBPP's tests
    call `math.isclose` on the solution's `import math`) binds the real module of that name, which
    the tests' text chose: the harness never imports a name the solution picked."""
    ns: dict[str, Any] = {"__builtins__": builtins, "__name__": "__tests__"}
    wanted = _names_read(sources) | {entry_point}
    for name in sorted(wanted & set(names)):
        info = names[name]
        kind = info.get("kind") if isinstance(info, dict) else None
        if name != entry_point and hasattr(builtins, name):
            continue
        if kind == "callable":
            ns[name] = RemoteFunction(conn, name)
        elif kind == "value":
            try:
                ns[name] = P.decode(info.get("value"), conn.deref)
            except P.ProtocolError:
                continue
        elif kind == "module" and name in sys.stdlib_module_names:
            try:
                ns[name] = importlib.import_module(name)
            except ImportError:  # a stdlib module this platform lacks (winreg, msvcrt)
                continue
    return ns


def _names_read(sources: list[str]) -> set[str]:
    """Every bare name the tests' source reads (a test that does not parse reads none: it fails
    on its own when run)."""
    found: set[str] = set()
    for source in sources:
        found |= _names_in(source)
    return found


_PARSE_LOCK = threading.Lock()


@functools.lru_cache(maxsize=4096)
def _names_in(source: str) -> frozenset[str]:
    """The names one test source reads; parsed once per source, one thread at a time: CPython 3.11's
    AST conversion keeps its recursion depth per interpreter, and two threads parsing at once can
    fail with "SystemError: AST constructor recursion depth mismatch" (gh-106905), as CI saw."""
    import ast

    with _PARSE_LOCK:
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return frozenset()
        return frozenset(node.id for node in ast.walk(tree) if isinstance(node, ast.Name))


def run_tests(session: Session, code: str, tests: Tests, entry_point: str,
              limits: Limits, timeouts: Timeouts) -> Outcome:
    """Load `code` in the sandbox and run `tests` here; never raises for the solution's behaviour."""
    conn = Connection(session, timeouts)
    total = tests.total
    everything = tuple(range(total))
    runner_limits = limits.runner()
    if tests.cases is not None and tests.cases.budget_cpu_s:  # a suite whose reference is costly gets more
        runner_limits["cpu_s"] = max(limits.cpu_s, math.ceil(tests.cases.budget_cpu_s))
    conn.test_deadline = time.monotonic() + timeouts.load_s
    reply = session.request({"op": "start", "code": code, "setup": tests.setup, "limits": runner_limits,
                             "cpu_s": timeouts.test_cpu_s}, conn.budget())
    if not reply.get("ok"):
        status = str(reply.get("status"))
        outcome_status = {"error": "error", "timeout": "timeout", "crash": "crash"}.get(status, "error")
        return _finish(session, Outcome(outcome_status, 0, total, _short(stable_detail(reply, timeouts)),
                                        anomaly=status != "error", failed=everything, backstop=at_backstop(reply)))
    names = reply.get("names") or {}
    failures: dict[int, str] = {}
    passed: list[int] = []  # asserts that passed before a stop
    out_of_time = False  # an input/output case ran out of CPU time: the suite is a timeout, as an assert's is
    try:
        if tests.cases is not None:
            failures, out_of_time = _run_cases(conn, timeouts, tests.cases, entry_point, names)
        elif tests.check is None:
            ns = namespace(conn, names, tests.asserts, entry_point)
            for i, source in enumerate(tests.asserts):
                ok, why = _run_one(conn, timeouts, lambda src=source: exec(compile(src, "<test>", "exec"), ns))
                if ok:
                    passed.append(i)
                else:
                    failures[i] = why
        else:
            ns = namespace(conn, names, [tests.check], entry_point)
            exec(compile(tests.check, "<check>", "exec"), ns)
            candidate = ns.get(entry_point)
            if candidate is None:
                failures[0] = f"NameError: the solution defines no '{entry_point}'"
            else:
                ok, why = _run_one(conn, timeouts, lambda: ns["check"](candidate))
                if not ok:
                    failures[0] = why
    except SolutionStopped as stop:
        return _finish(session, Outcome(stop.status, len(passed), total, _short(stop.detail), anomaly=True,
                                        failed=tuple(i for i in everything if i not in passed),
                                        backstop=stop.backstop))
    failed = tuple(sorted(failures))
    status = "pass" if not failed else "timeout" if out_of_time else "fail"
    detail = _short(f"test {failed[0]}: {failures[failed[0]]}" if total > 1 else failures[failed[0]]) if failed else ""
    return _finish(session, Outcome(status, total - len(failed), total, detail, failed=failed))


def reference_outputs(session: Session, code: str, entry_point: str, inputs: list[Any],
                      limits: Limits, timeouts: Timeouts, setup: str = "") -> Outcome:
    """Run a trusted reference on test inputs in the sandbox (prepare's expected outputs): status
    `pass` with one output per input, or the reason the reference could not run."""
    conn = Connection(session, timeouts)
    conn.test_deadline = time.monotonic() + timeouts.load_s
    reply = session.request({"op": "start", "code": code, "setup": setup, "limits": limits.runner(),
                             "cpu_s": timeouts.test_cpu_s}, conn.budget())
    if not reply.get("ok"):
        status = str(reply.get("status"))
        return _finish(session, Outcome("error" if status == "error" else "crash", 0, len(inputs),
                                        _short(stable_detail(reply, timeouts)), anomaly=status != "error",
                                        backstop=at_backstop(reply)))
    if not _defines_function(reply.get("names") or {}, entry_point):
        return _finish(session, Outcome("error", 0, len(inputs), f"the reference defines no '{entry_point}'"))
    try:
        outputs, cpu = call_cases(conn, timeouts, entry_point, inputs)
    except SolutionStopped as stop:
        return _finish(session, Outcome(stop.status, 0, len(inputs), _short(stop.detail), anomaly=True,
                                        backstop=stop.backstop))
    ok = sum(kind == "v" for kind, _ in outputs)
    return _finish(session, Outcome("pass", ok, len(inputs), "", outputs=tuple(outputs), cpu_s=tuple(cpu)))


def _run_cases(conn: Connection, timeouts: Timeouts, cases: Cases, entry_point: str,
               names: dict[str, Any]) -> tuple[dict[int, str], bool]:
    """Call the entry point on every input in one request; compare here. Returns failures by index,
    and whether an input ran out of CPU time."""
    if not _defines_function(names, entry_point):
        return {i: f"NameError: the solution defines no function '{entry_point}'"
                for i in range(len(cases.inputs))}, False
    results, _ = call_cases(conn, timeouts, entry_point, cases.inputs, cases.cpu_s)
    failures: dict[int, str] = {}
    out_of_time = False
    for i, (result, expected) in enumerate(zip(results, cases.expected)):
        kind, value = result
        if kind != "v":
            failures[i] = value
            out_of_time = out_of_time or kind == "t"
            continue
        if cases.compare != "not_none" and opaque(value):
            failures[i] = "returned an object that is not plain data"
            continue
        try:
            same = outputs_match(value, P.decode(expected), cases.atol, cases.compare)
        except Exception as exc:  # noqa: BLE001 - a comparison that cannot be made is a failed test
            same, value = False, f"{type(exc).__name__}: {exc}"
        if not same:
            failures[i] = f"wrong output {_preview(value)}"
    return failures, out_of_time


def _defines_function(names: dict[str, Any], name: str) -> bool:
    """Whether the loaded program's names (the runner's `start` reply) hold a callable `name`."""
    info = names.get(name)
    return isinstance(info, dict) and info.get("kind") == "callable"


def call_cases(conn: Connection, timeouts: Timeouts, entry_point: str, inputs: list[Any],
               limits: list[float] | None = None) -> tuple[list[tuple[str, Any]], list[float]]:
    """(kind, value) per input, from one `cases` request: ("v", output), ("e", why) for an error, or
    ("t", why) for a CPU-time overrun; and the CPU seconds each input took. Each input runs under its
    own limit (`limits`, else the floor `case_s`). Raises SolutionStopped like `ask`."""
    conn.test_deadline = float("inf")  # one deadline for the whole batch: the sample's
    limits = list(limits) if limits is not None else [timeouts.case_s] * len(inputs)
    nothing = [0.0] * len(inputs)
    try:
        raw, reply = conn.ask_reply({"op": "cases", "name": entry_point, "inputs": inputs, "case_s": limits})
    except RemoteError as exc:
        return [("e", str(exc))] * len(inputs), nothing
    if not isinstance(raw, list) or len(raw) != len(inputs):
        return [("e", "the sandbox answered the wrong number of results")] * len(inputs), nothing
    cpu = reply.get("cpu_s")
    if not (isinstance(cpu, list) and len(cpu) == len(inputs) and all(type(c) in (int, float) for c in cpu)):
        cpu = nothing
    out: list[tuple[str, Any]] = []
    for item, limit in zip(raw, limits):
        if isinstance(item, tuple) and len(item) == 2 and item[0] == "v":
            out.append(("v", item[1]))  # may hold sandbox objects (see `opaque`)
        elif isinstance(item, tuple) and len(item) == 2 and item[0] == "e" and isinstance(item[1], str):
            out.append(("e", item[1]))
        elif item == ("t",):
            out.append(("t", f"CPU time limit ({limit:g}s) exceeded"))
        else:
            out.append(("e", "malformed result from the sandbox"))
    return out, [float(c) for c in cpu]


def opaque(value: Any, depth: int = 0) -> bool:
    """True when `value` holds a sandbox object (which compares equal to nothing)."""
    if isinstance(value, Remote):
        return True
    if depth > P.MAX_DEPTH:
        return False
    if isinstance(value, dict):
        return any(opaque(k, depth + 1) or opaque(v, depth + 1) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(opaque(v, depth + 1) for v in value)
    return False


def _is_floats(x: Any) -> bool:
    if isinstance(x, float):
        return True
    return isinstance(x, (list, tuple)) and len(x) > 0 and all(isinstance(i, float) for i in x)


def outputs_match(out: Any, expected: Any, atol: float = 0.0, compare: str = "exact") -> bool:
    """EvalPlus's comparison: exact equality, or set equality / "returned something" for the few MBPP+
    problems whose answers are unordered or free-form; float outputs within atol (1e-6 when 0) plus a
    relative 1e-7, like numpy's allclose. Both sides are plain built-in data."""
    if compare == "set":
        return set(out) == set(expected)
    if compare == "not_none":
        return out == expected if isinstance(out, bool) else expected == (out is not None)
    if out == expected:
        return True
    if atol == 0 and _is_floats(expected):
        atol = 1e-6
    if atol == 0 or type(out) is not type(expected):
        return False
    pairs = list(zip(out, expected)) if isinstance(expected, (list, tuple)) else [(out, expected)]
    if isinstance(expected, (list, tuple)) and len(out) != len(expected):
        return False
    return all(_close(a, b, atol) for a, b in pairs)


def _close(a: Any, b: Any, atol: float) -> bool:
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return a == b
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= atol + 1e-7 * abs(b)


def _run_one(conn: Connection, timeouts: Timeouts, test) -> tuple[bool, str]:
    conn.test_deadline = time.monotonic() + timeouts.test_s
    try:
        test()
        return True, ""
    except SolutionStopped:
        raise
    except AssertionError as exc:
        return False, f"AssertionError{': ' + str(exc) if str(exc) else ''}"
    except Exception as exc:  # noqa: BLE001 - whatever the test raised, the test failed
        return False, f"{type(exc).__name__}: {exc}"
    finally:
        conn.test_deadline = float("inf")


def _finish(session: Session, outcome: Outcome) -> Outcome:
    """Kill everything the sample left in the sandbox; stray processes are an anomaly too."""
    reply = session.request({"op": "stop"}, 10.0)
    if reply.get("stray"):
        return dataclasses.replace(outcome, detail=outcome.detail or f"left {reply['stray']} process(es) behind",
                                   anomaly=True)
    return outcome


def _preview(value: Any) -> str:
    """A short repr of a returned value (a huge int has none: Python caps int-to-str conversion)."""
    try:
        return _short(repr(value), 120)
    except ValueError:
        return f"<{type(value).__name__} too large to print>"


def _short(text: Any, limit: int = 300) -> str:
    text = str(text).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."
