"""The runner that lives INSIDE the sandbox (standard library only).

A long-lived *supervisor* reads requests from the trusted harness on stdin and answers on stdout.
For every sample it forks a fresh *child* that drops to tight resource limits, executes the
solution, and then serves calls into it over a private socket. The supervisor enforces a wall-clock
timeout on every request, and after each sample kills every process it did not start (daemons,
double-forked children, threads die with their process) and wipes the scratch directory.

Nothing here decides pass or fail: the child only returns plain data or opaque handles, and the
trusted harness outside the sandbox compares them.
"""

from __future__ import annotations

import builtins
import ctypes
import os
import resource
import select
import shutil
import signal
import socket
import stat
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import protocol as P  # noqa: E402

SCRATCH = os.environ.get("SANDBOX_SCRATCH", "/tmp")
SHARED = ("/dev/shm", "/dev/mqueue")  # shared memory and POSIX message queues: wiped like the scratch dir
PR_SET_DUMPABLE = 4
MAX_CASE_TIMEOUTS = 1  # input/output cases out of CPU time before the rest of a suite is skipped
_process_time = time.process_time  # bound before any solution runs (one could patch the module)


# ----------------------------------------------------------------------------------- child side
class Child:
    """Executes one solution and answers calls into it (runs in the limited child process)."""

    def __init__(self, sock: socket.socket):
        self.stream = sock.makefile("rwb")
        self.globals: dict = {"__name__": "solution", "__builtins__": __builtins__}
        self.objects: list = []  # handle -> object

    def to_ref(self, obj) -> list:
        self.objects.append(obj)
        return ["h", len(self.objects) - 1]

    def from_ref(self, tag: str, payload):
        if tag == "B":
            return getattr(builtins, payload)
        if type(payload) is not int or not 0 <= payload < len(self.objects):
            raise P.ProtocolError(f"unknown handle {payload!r}")
        return self.objects[payload]

    def load(self, code: str, setup: str, cpu_s: float | None = None) -> dict:
        try:
            compiled = compile(code, "solution.py", "exec")
        except (SyntaxError, ValueError) as exc:  # ValueError: NUL bytes in the source
            return {"ok": False, "status": "error", "detail": _describe(exc)}
        try:
            _cpu_timer(cpu_s)
            try:
                exec(compiled, self.globals)
                if setup:
                    exec(compile(setup, "test_setup.py", "exec"), self.globals)
            finally:
                _cpu_timer(None)
        except CaseTimeout:
            return _cpu_timeout(cpu_s)
        except BaseException as exc:  # noqa: BLE001 - the solution's own failure, reported as data
            return {"ok": False, "status": "error", "detail": _describe(exc)}
        names = {}
        for name, value in list(self.globals.items()):
            if name.startswith("__"):
                continue
            if type(value).__name__ == "module":
                names[name] = {"kind": "module", "module": getattr(value, "__name__", name)}
            elif callable(value):
                names[name] = {"kind": "callable"}
            else:
                names[name] = {"kind": "value", "value": P.encode(value, self.to_ref)}
        return {"ok": True, "names": names}

    def serve(self, request: dict) -> dict:
        """One request, under its CPU-time limit (`cpu_s`; `cases` limits each case instead)."""
        cpu_s = request.get("cpu_s") if request.get("op") != "cases" else None
        try:
            _cpu_timer(cpu_s)
            try:
                return self._serve(request)
            finally:
                _cpu_timer(None)
        except CaseTimeout:  # raised between the solution's frames, e.g. while encoding its result
            return _cpu_timeout(cpu_s)

    def _serve(self, request: dict) -> dict:
        op = request.get("op")
        try:
            if op == "call":
                target = (self.globals[request["name"]] if "name" in request
                          else self.from_ref("h", request["handle"]))
                if request.get("attr"):
                    target = getattr(target, request["attr"])
                args = [P.decode(a, self.from_ref) for a in request.get("args", [])]
                kwargs = {k: P.decode(v, self.from_ref) for k, v in request.get("kwargs", {}).items()}
                result = target(*args, **kwargs)
            elif op == "getattr":
                result = getattr(self.from_ref("h", request["handle"]), request["attr"])
            elif op == "iter":
                result = list(self.from_ref("h", request["handle"]))
            elif op == "len":
                result = len(self.from_ref("h", request["handle"]))
            elif op == "cases":
                inputs = request.get("inputs", [])
                limits = request.get("case_s", 10.0)
                limits = [float(x) for x in limits] if isinstance(limits, list) else [float(limits)] * len(inputs)
                if len(limits) != len(inputs):
                    return {"ok": False, "error": "one CPU limit per input expected"}
                values, cpu = self.cases(self.globals[request["name"]], inputs, limits)
                return {"ok": True, "value": values, "cpu_s": cpu}
            elif op in ("str", "repr"):
                result = (str if op == "str" else repr)(self.from_ref("h", request["handle"]))
                result = str.__str__(result)
            else:
                return {"ok": False, "error": f"unknown op {op!r}"}
            return {"ok": True, "value": P.encode(result, self.to_ref)}
        except CaseTimeout:
            raise
        except BaseException as exc:  # noqa: BLE001 - reported to the harness as the solution's error
            return {"ok": False, "error": _describe(exc)}

    def cases(self, target, inputs: list, case_s: list[float]) -> tuple[list, list[float]]:
        """Call `target` on every input, each under its own CPU-time limit, in this one process.

        Returns a tagged list (protocol.encode of a list) of ("v", value) / ("e", error) / ("t",)
        tuples, encoded case by case so that one unencodable output fails only its own case, and the
        CPU seconds each call took (how prepare sizes per-input limits from a reference's cost).
        Outputs that together exceed the message limit fail the cases past it; once a case runs out of
        time the rest are not run: the suite has failed, and a slow solution's later inputs (MBPP+
        grows them) would each cost the whole limit too.
        """
        items, size, timeouts, cpu = [], 0, 0, []
        for args, limit in zip(inputs, case_s):
            if timeouts >= MAX_CASE_TIMEOUTS:
                items.append(P.encode(("e", "not run: an earlier input ran out of CPU time")))
                cpu.append(0.0)
                continue
            started = _process_time()
            try:
                call_args = P.decode(args, self.from_ref)
                if type(call_args) is not list:
                    raise P.ProtocolError("a case's input must be a list of arguments")
                signal.setitimer(signal.ITIMER_PROF, limit)
                try:
                    item = P.encode(("v", target(*call_args)), self.to_ref)
                finally:
                    signal.setitimer(signal.ITIMER_PROF, 0)
            except CaseTimeout:
                item = P.encode(("t",))
                timeouts += 1
            except BaseException as exc:  # noqa: BLE001 - the solution's failure on this input, as data
                item = P.encode(("e", _describe(exc)))
            cpu.append(round(_process_time() - started, 4))
            size += len(repr(item))
            if size > P.MAX_MESSAGE // 2:
                item = P.encode(("e", "outputs too large for the protocol"))
            items.append(item)
        return ["l", items], cpu

    def run(self) -> None:
        signal.signal(signal.SIGPROF, _case_timeout)
        start = P.read_message(self.stream)
        P.write_message(self.stream, self.load(start.get("code", ""), start.get("setup", ""), start.get("cpu_s")))
        while True:
            P.write_message(self.stream, self.serve(P.read_message(self.stream)))


class CaseTimeout(BaseException):  # noqa: N818 - raised into the solution, like KeyboardInterrupt
    """One case used up its CPU time (SIGPROF)."""


def _case_timeout(signum, frame):
    raise CaseTimeout()


def _cpu_timer(cpu_s: float | None) -> None:
    """Arm (or, with None, disarm) the CPU-time timer: SIGPROF raises CaseTimeout in the solution."""
    signal.setitimer(signal.ITIMER_PROF, float(cpu_s) if cpu_s else 0)


def _cpu_timeout(cpu_s: float | None) -> dict:
    return {"ok": False, "status": "timeout", "detail": f"CPU time limit ({float(cpu_s or 0):g}s) exceeded"}


def _describe(exc: BaseException) -> str:
    try:
        text = f"{type(exc).__name__}: {exc}"
    except CaseTimeout:  # its __str__ used up the CPU time: the request is out of time
        raise
    except BaseException:  # noqa: BLE001 - an exception whose __str__ raises
        text = type(exc).__name__
    if isinstance(exc, SyntaxError):
        text += f" (line {exc.lineno})"
    return text[:500]


def _limit_child(limits: dict) -> None:
    """Resource limits for the solution: memory, CPU seconds, file size, processes, open files."""
    mb = 1024 * 1024
    caps = {
        resource.RLIMIT_AS: limits["memory_mb"] * mb,
        resource.RLIMIT_CPU: limits["cpu_s"],
        resource.RLIMIT_FSIZE: limits["file_mb"] * mb,
        resource.RLIMIT_NPROC: limits["nproc"],
        resource.RLIMIT_NOFILE: limits["nofile"],
        resource.RLIMIT_CORE: 0,
    }
    for which, value in caps.items():
        hard = value + 1 if which == resource.RLIMIT_CPU else value  # SIGXCPU first, then SIGKILL
        resource.setrlimit(which, (value, hard))


def child_main(sock: socket.socket, limits: dict, workdir: str) -> None:
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # the solution's prints go nowhere; the protocol has its own socket
        os.dup2(devnull, fd)
    os.chdir(workdir)
    _limit_child(limits)
    code = 0
    try:
        Child(sock).run()
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass
    except BaseException:  # noqa: BLE001
        code = 3
    os._exit(code)


# ------------------------------------------------------------------------------ supervisor side
class Supervisor:
    def __init__(self) -> None:
        self.inp = sys.stdin.buffer
        self.out = sys.stdout.buffer
        self.child_pid: int | None = None
        self.sock: socket.socket | None = None
        self.stream = None
        self.samples = 0

    def reply(self, message: dict) -> None:
        P.write_message(self.out, message)

    def start(self, request: dict) -> dict:
        self.stop()
        self.samples += 1
        workdir = os.path.join(SCRATCH, f"w{self.samples}")
        os.makedirs(workdir, mode=0o700)
        parent, child = socket.socketpair()
        pid = os.fork()
        if pid == 0:
            parent.close()
            child_main(child, request["limits"], workdir)
        child.close()
        self.child_pid, self.sock = pid, parent
        self.stream = parent.makefile("rwb")
        load = {"code": request.get("code", ""), "setup": request.get("setup", ""), "cpu_s": request.get("cpu_s")}
        return self.exchange(load, request["timeout_s"])

    def exchange(self, message: dict, timeout_s: float) -> dict:
        """Send one request to the child and wait for its answer, at most timeout_s seconds."""
        if self.child_pid is None:
            return {"ok": False, "status": "gone", "detail": "no solution process"}
        deadline = time.monotonic() + timeout_s
        try:
            self.sock.settimeout(max(timeout_s, 0.001))  # a child that stops reading cannot stall us
            P.write_message(self.stream, message)
        except (BrokenPipeError, ConnectionResetError):
            return self.child_gone()
        except TimeoutError:
            self.kill_all()
            return {"ok": False, "status": "timeout", "detail": f"no answer within {timeout_s:g}s"}
        try:
            header = self._read_before(P.HEADER_SIZE, deadline)
            body = self._read_before(P.message_size(header), deadline) if header is not None else None
            if body is None:
                self.kill_all()
                return {"ok": False, "status": "timeout", "detail": f"no answer within {timeout_s:g}s"}
            return P.unpack(body)
        except (EOFError, ConnectionResetError):
            return self.child_gone()
        except P.ProtocolError as exc:
            self.kill_all()
            return {"ok": False, "status": "protocol", "detail": str(exc)}

    def _read_before(self, n: int, deadline: float) -> bytes | None:
        """n bytes from the child, or None when the deadline passes first: a child that sends half a
        message and stops is out of time like one that sends nothing."""
        chunks, missing = [], n
        while missing:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([self.sock], [], [], remaining)
            if not ready:
                continue
            chunk = self.sock.recv(min(missing, 1 << 20))
            if not chunk:
                raise EOFError("the child closed its socket")
            chunks.append(chunk)
            missing -= len(chunk)
        return b"".join(chunks)

    def child_gone(self) -> dict:
        """The child died: report how (a signal is a crash; SIGXCPU is the CPU-time limit)."""
        pid, self.child_pid = self.child_pid, None
        _, status = os.waitpid(pid, 0)
        self.kill_all()
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            if sig == signal.SIGXCPU:
                return {"ok": False, "status": "timeout", "detail": "CPU time limit exceeded"}
            return {"ok": False, "status": "crash", "detail": f"killed by {signal.Signals(sig).name}"}
        return {"ok": False, "status": "exited", "detail": f"exited with code {os.WEXITSTATUS(status)}"}

    def kill_all(self) -> int:
        """SIGKILL every process in the sandbox but this one (and init); return how many there were."""
        killed = 0
        for _ in range(100):
            alive = _other_processes()
            if not alive:
                break
            killed = max(killed, len(alive))
            try:
                os.kill(-1, signal.SIGKILL)  # all processes we may signal, except ourselves and init
            except ProcessLookupError:
                pass
            _reap()
            time.sleep(0.001)
        if self.child_pid is not None:
            _reap()
            self.child_pid = None
        if self.sock is not None:
            self.sock.close()
            self.sock = self.stream = None
        return killed

    def stop(self) -> dict:
        had_child = self.child_pid is not None
        stray = max(self.kill_all() - (1 if had_child else 0), 0)
        for root in (SCRATCH, *SHARED):
            if os.path.isdir(root) and os.access(root, os.W_OK):
                _wipe(root)
        return {"ok": True, "stray": stray}

    def run(self) -> None:
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        self.reply({"ok": True, "ready": True, "python": sys.version.split()[0], "pid": os.getpid(),
                    "hash_seed": None if sys.flags.ignore_environment else os.environ.get("PYTHONHASHSEED")})
        while True:
            try:
                request = P.read_message(self.inp)
            except EOFError:
                self.stop()
                return
            op = request.get("op")
            if op == "start":
                self.reply(self.start(request))
            elif op == "stop":
                self.reply(self.stop())
            elif op == "ping":
                self.reply({"ok": True, "pong": True})
            else:
                self.reply(self.exchange(request, request.get("timeout_s", 10.0)))


def _other_processes() -> list[int]:
    me = os.getpid()
    alive = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in (1, me):
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                state = fh.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in (b"Z", b"X"):
            alive.append(int(entry))
    return alive


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _wipe(root: str) -> None:
    def unlock(func, path, _exc):  # a solution may chmod its files read-only
        os.chmod(os.path.dirname(path), stat.S_IRWXU)
        if os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, stat.S_IRWXU)
        func(path)

    for entry in os.listdir(root):
        path = os.path.join(root, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, onerror=unlock)
        else:
            os.unlink(path)


def main() -> None:
    # Not dumpable: a solution running as the same user cannot ptrace us or read our memory.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    try:
        Supervisor().run()
    except Exception:  # noqa: BLE001 - the harness sees EOF and treats the sandbox as broken
        traceback.print_exc(file=sys.stderr)
        sys.exit(70)


if __name__ == "__main__":
    main()
