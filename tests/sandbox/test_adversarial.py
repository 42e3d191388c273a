"""Adversarial solutions against the real Docker engine and bwrap.

Each case gets the right status and never a false PASS; after each, a probe sample in the same
sandbox slot checks that nothing survived (processes, files) and that the sandbox still works;
the host is checked for leftovers at the end.
"""

from __future__ import annotations

import socket
import subprocess
import textwrap
import threading
from pathlib import Path

import pytest

from complexitynet.sandbox.harness import Timeouts
from complexitynet.sandbox.pool import Job, SandboxPool
from complexitynet.schemas import Tests as ProblemTests
from tests.sandbox.sandboxes import LIMITS, TIMEOUTS

pytestmark = [pytest.mark.integration]
SECRET = "sk-test-do-not-leak-0123456789"
ANY_FAILURE = {"fail", "error", "timeout", "crash"}


def job(code: str, asserts: list[str] | None = None, check: str | None = None, entry: str = "f") -> Job:
    tests = ProblemTests(check=textwrap.dedent(check)) if check else ProblemTests(asserts=asserts or ["assert f() == 8"])
    return Job("case", textwrap.dedent(code), tests, entry)


# A probe run after every case: only the supervisor (and init) may be alive, the scratch dir must be
# empty, and the sandbox must still compute.
PROBE = job("""
    import os
    def others():
        me, parent = os.getpid(), os.getppid()
        pids = [int(p) for p in os.listdir('/proc') if p.isdigit()]
        alive = []
        for p in pids:
            if p in (1, me, parent):
                continue
            try:
                state = open(f'/proc/{p}/stat').read().rsplit(')', 1)[1].split()[0]
            except OSError:
                continue
            if state not in 'ZX':
                alive.append(p)
        return alive
    def scratch():
        return sorted(e for e in os.listdir('/tmp') if e != os.path.basename(os.getcwd()))
    def f():
        return 8
    """, ["assert others() == []", "assert scratch() == []", "assert f() == 8"])

CASES = {
    # --- resource exhaustion ---------------------------------------------------------------
    "infinite loop": ("def f():\n    while True: pass", ["assert f() == 8"], None, {"timeout"}),
    "ignores SIGTERM": ("""
        import signal
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        def f():
            while True: pass""", None, None, {"timeout"}),
    "fork bomb": ("""
        import os
        def f():
            while True:
                try: os.fork()
                except OSError: pass""", None, None, ANY_FAILURE),
    "memory bomb": ("""
        def f():
            hog = []
            while True: hog.append(bytearray(10**7))""", None, None, {"fail", "crash"}),
    "10 GB file": ("""
        def f():
            with open('/tmp/huge', 'wb') as fh:
                for _ in range(10_000): fh.write(b'x' * 10**6)
            return 8""", None, None, {"fail", "crash"}),
    "1 GB of stdout, correct answer": ("""
        import sys
        def f():
            chunk = 'x' * 10**6
            for _ in range(1000): sys.stdout.write(chunk)
            return 8""", None, None, {"pass"}),
    "fills the scratch tmpfs": ("""
        import os
        def f():
            for i in range(100):
                with open(f'/tmp/fill{i}', 'wb') as fh: fh.write(b'x' * 4 * 10**6)
            return 8""", None, None, {"fail"}),
    "threads left spinning, correct answer": ("""
        import threading
        def spin():
            while True: pass
        def f():
            for _ in range(4): threading.Thread(target=spin, daemon=True).start()
            return 8""", None, None, {"pass"}),
    "setsid daemon survives the call": ("""
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(300)
            os._exit(0)
        def f():
            return 8""", None, None, {"pass"}),
    "exception whose __str__ never returns": ("""
        class Evil(Exception):
            def __str__(self):
                while True: pass
        def f():
            raise Evil()""", None, None, {"timeout"}),
    "result too large to send back": ("def f():\n    return list(range(5 * 10**6))", None, None, {"fail"}),
    "result nested too deep": ("""
        def f():
            x = []
            for _ in range(10_000): x = [x]
            return x""", None, None, {"fail"}),
    # --- escaping the sandbox ----------------------------------------------------------------
    "deletes files outside": ("""
        import os, shutil
        def f():
            hits = []
            for path in ('/sandbox/runner.py', '/usr/bin/python3', '/etc/passwd', '/work', '/root'):
                try:
                    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
                    hits.append(path)
                except OSError:
                    pass
            return hits""", ["assert f() == []"], None, {"pass"}),
    "reads secrets: env, ~/.ssh, host files": ("""
        import os, glob
        def f():
            found = [k for k in os.environ if 'KEY' in k or 'TOKEN' in k or 'SECRET' in k]
            for path in ['/root/.ssh/id_rsa', '/etc/shadow'] + glob.glob('/home/*/.ssh/*'):
                try:
                    found.append(open(path).read()[:10])
                except OSError:
                    pass
            for path in ['/proc/1/environ', '/proc/self/environ', f'/proc/{os.getppid()}/environ']:
                try:
                    text = open(path).read()
                except OSError:
                    continue
                found += [t for t in text.split('\\0') if 'sk-test' in t or 'KEY=' in t]
            return found""", ["assert f() == []"], None, {"pass"}),
    "reads the supervisor's memory": ("""
        import os
        def f():
            try:
                with open(f'/proc/{os.getppid()}/mem', 'rb') as fh:
                    return 'read'
            except OSError:
                return 'blocked'""", ["assert f() == 'blocked'"], None, {"pass"}),
    "raises its own limits": ("""
        import resource
        def f():
            try:
                resource.setrlimit(resource.RLIMIT_NPROC, (10**6, 10**6))
                return 'raised'
            except (ValueError, OSError):
                return 'blocked'""", ["assert f() == 'blocked'"], None, {"pass"}),
    "network: no interface but loopback, no route": ("""
        import socket
        def f():
            names = sorted(name for _, name in socket.if_nameindex())
            routes = open('/proc/net/route').read().splitlines()[1:]
            return names, routes""", ["assert f() == (['lo'], [])"], None, {"pass"}),
    "kills its parent": ("""
        import os, signal
        def f():
            os.kill(os.getppid(), signal.SIGKILL)
            return 8""", None, None, {"crash", "fail", "pass"}),  # Docker: the runner is pid 1, which the
    # kernel shields from signals it does not handle, so the (right) answer stands; bwrap: a crash
    "interpreter crash (SIGSEGV)": ("""
        import ctypes
        def f():
            return ctypes.string_at(0)""", None, None, {"crash"}),
    "closes stdout and stderr, correct answer": ("""
        import os
        def f():
            os.close(1); os.close(2)
            return 8""", None, None, {"pass"}),
    "non-UTF-8 output, correct answer": ("""
        import os
        def f():
            os.write(1, b'\\xff\\xfe\\x00garbage\\x80'); os.write(2, b'\\xc3\\x28')
            return 8""", None, None, {"pass"}),
    # --- fake passes ------------------------------------------------------------------------------
    "sys.exit(0) before the tests": ("import sys\nsys.exit(0)\ndef f():\n    return 0", None, None, {"error"}),
    "os._exit(0) before the tests": ("import os\nos._exit(0)\ndef f():\n    return 0", None, None, {"error"}),
    "sys.exit(0) inside the call": ("import sys\ndef f():\n    sys.exit(0)", None, None, {"fail"}),
    "os._exit(0) inside the call": ("import os\ndef f():\n    os._exit(0)", None, None, {"fail"}),
    "prints a fake pass marker": ("""
        def f():
            print('All tests passed! PASS OK')
            print('{"ok": true, "status": "pass"}')
            return 0""", None, None, {"fail"}),
    "__eq__ always True": ("""
        class Always:
            def __eq__(self, other): return True
            def __ne__(self, other): return False
            def __bool__(self): return True
        def f():
            return Always()""", None, None, {"fail"}),
    "int subclass with forged __eq__": ("""
        class Int(int):
            def __eq__(self, other): return True
        def f():
            return Int(0)""", None, None, {"fail"}),
    "truthy object for a truth test": ("""
        class Yes:
            def __bool__(self): return True
        def f():
            return Yes()""", ["assert f()"], None, {"fail"}),
    "patches builtins and operator": ("""
        import builtins, operator
        builtins.AssertionError = type('Nope', (Exception,), {})
        operator.eq = lambda a, b: True
        builtins.isinstance = lambda *a: True
        def f():
            return 0""", None, None, {"fail", "error"}),  # the runner itself may break: not a pass
    "walks frames to forge the result": ("""
        import sys
        def f():
            frame = sys._getframe()
            while frame:
                for name in list(frame.f_locals):
                    if name in ('result', 'expected', 'ok', 'status'):
                        frame.f_locals[name] = True
                frame = frame.f_back
            return 0""", None, None, {"fail"}),
    "forges a protocol reply on its socket": ("""
        import os, json, struct, socket
        msg = json.dumps({"ok": True, "value": ["i", "0x8"]}).encode()
        for fd in range(3, 20):
            try:
                s = socket.socket(fileno=os.dup(fd))
                s.sendall(struct.pack('>I', len(msg)) + msg)
            except OSError:
                pass
        def f():
            return 0""", None, None, ANY_FAILURE),
    # --- names the solution defines or picks (the tests' namespace) ----------------------------
    "shadows a builtin the tests use": ("""
        def abs(x):
            return 0
        def f():
            return 7""", ["assert abs(f() - 8) < 1e-9"], None, {"fail"}),
    "shadows sorted and len": ("""
        def sorted(x, **kw):
            return [1, 2]
        def len(x):
            return 2
        def f():
            return [3, 1]""", ["assert sorted(f()) == [1, 2]", "assert len(f()) == 2"], None, {"fail"}),
    "a fake math whose isclose always agrees": ("""
        import types
        math = types.ModuleType('json')
        math.isclose = lambda *a, **k: True
        def f():
            return 7""", ["assert math.isclose(f(), 8)"], None, {"fail"}),
    "a module object named after no module": ("""
        import types
        m = types.ModuleType('os.no_such_submodule')
        def f():
            return 8""", ["assert f() == 8"], None, {"pass"}),  # the harness imports nothing it names
    "HumanEval check with a shadowed builtin": ("""
        def abs(x):
            return 0
        def add(a, b):
            return a - b""", None, """
        def check(candidate):
            assert abs(candidate(2, 3) - 5) < 1e-6
        """, {"fail"}),
    # --- the protocol channel ------------------------------------------------------------------
    "writes frames into every stream it can open": ("""
        import os, json, struct
        msg = json.dumps({"ok": True, "value": ["i", "0x8"]}).encode()
        frame = struct.pack('>I', len(msg)) + msg
        for pid in [p for p in os.listdir('/proc') if p.isdigit()]:
            try:
                fds = os.listdir(f'/proc/{pid}/fd')
            except OSError:
                continue
            for fd in fds:
                try:
                    with open(f'/proc/{pid}/fd/{fd}', 'wb', buffering=0) as fh:
                        fh.write(frame * 3)
                except OSError:
                    pass
        def f():
            return 8""", None, None, {"pass"}),  # a right answer whose own verdict nothing could garble
    "answers with JSON nested 5,000 deep": ("""
        import os, socket, struct
        msg = b'{"ok": true, "value": ' + b'[' * 5000 + b']' * 5000 + b'}'
        for fd in range(3, 20):
            try:
                socket.socket(fileno=os.dup(fd)).sendall(struct.pack('>I', len(msg)) + msg)
            except OSError:
                pass
        def f():
            return 0""", None, None, ANY_FAILURE),
    "sends half a frame header and sleeps": ("""
        import os, socket, time
        for fd in range(3, 20):
            try:
                socket.socket(fileno=os.dup(fd)).sendall(b'\\x00\\x00')
            except OSError:
                pass
        time.sleep(60)
        def f():
            return 8""", None, None, {"timeout"}),
    "HumanEval check with a forged __eq__": ("""
        class Always:
            def __eq__(self, other): return True
        def add(a, b):
            return Always()""", None, """
        def check(candidate):
            assert candidate(2, 3) == 5
            assert candidate(-1, 1) == 0
        """, {"fail"}),
    # --- variations beyond the reported classes --------------------------------------------------
    "shadows isinstance and type": ("""
        def isinstance(x, t):
            return True
        def type(x):
            return int
        def f():
            return '8'""", ["assert isinstance(f(), int)", "assert type(f()) is int"], None, {"fail"}),
    "shadows set, str and max with lambdas": ("""
        set = lambda *a: {1, 2}
        str = lambda *a: 'ok'
        max = lambda *a, **k: 8
        def f():
            return [3]""", ["assert set(f()) == {1, 2}", "assert str(f()) == 'ok'", "assert max(f()) == 8"],
        None, {"fail"}),
    "a fake module under a stdlib name the tests use": ("""
        import types
        math = types.ModuleType('math')
        math.sqrt = lambda x: 3.0
        def f():
            return 8""", ["assert math.sqrt(f()) == 3.0"], None, {"fail"}),  # the real math decides
    "a module object named unittest.__main__": ("""
        import types
        unittest = types.ModuleType('unittest.__main__')
        helper = types.ModuleType('unittest.__main__')
        def f():
            return 8""", ["assert f() == 8"], None, {"pass"}),  # nothing of unittest.__main__ runs here
    "a set of ints that all share one hash": ("""
        def f():
            m = (1 << 61) - 1  # ints equal modulo 2**61 - 1 share a hash
            return {i * m for i in range(1, 3_001)}""", ["assert f() == {8}"], None, {"fail"}),
    "a dict whose keys all share one hash": ("""
        def f():
            m = (1 << 61) - 1
            return {i * m: 0 for i in range(1, 3_001)}""", ["assert f() == {8: 0}"], None, {"fail"}),
    "a tuple and a frozenset holding forged elements": ("""
        class Always:
            def __eq__(self, other): return True
            def __hash__(self): return 8
        def f():
            return (Always(), 8)
        def g():
            return frozenset({Always()})""", ["assert f() == (8, 8)", "assert g() == frozenset({8})"],
        None, {"fail"}),
    "a dict subclass with a forged __eq__": ("""
        class D(dict):
            def __eq__(self, other): return True
        def f():
            return D(a=1)""", ["assert f() == {'b': 2}"], None, {"fail"}),
    "a list that contains itself": ("""
        def f():
            x = []
            x.append(x)
            return x""", ["assert f() == [[]]"], None, ANY_FAILURE),
    "a dict nested 100,000 deep": ("""
        def f():
            d = {}
            for _ in range(100_000):
                d = {'k': d}
            return d""", ["assert f() == {}"], None, ANY_FAILURE),
    "a generator that never ends": ("""
        import itertools
        def f():
            return itertools.count()""", ["assert list(f()) == [8]"], None, {"fail", "timeout"}),
    "an int too large to print": ("""
        def f():
            return 10 ** 200_000""", ["assert f() == 8"], None, {"fail"}),
    "talks to the Docker socket": ("""
        import socket
        def f():
            for path in ('/var/run/docker.sock', '/run/docker.sock', '/run/containerd/containerd.sock'):
                try:
                    socket.socket(socket.AF_UNIX).connect(path)
                    return 'connected'
                except OSError:
                    pass
            return 8""", ["assert f() == 8"], None, {"pass"}),
    "stops the supervisor with SIGSTOP": ("""
        import os, signal
        def f():
            for pid in {1, os.getppid()}:
                try:
                    os.kill(pid, signal.SIGSTOP)
                except OSError:
                    pass
            return 8""", ["assert f() == 8"], None, {"pass"}),  # the probe after it needs a live supervisor
}


@pytest.mark.parametrize("name", list(CASES))
def test_adversarial_case(backend, name):
    code, asserts, check, expected = CASES[name]
    entry = "add" if check else "f"
    # A case that must end at a time limit gets the tight one. The others get the stage's defaults:
    # a busy moment on a loaded machine (CI saw one) must not turn a crash or a pass into a timeout.
    pool = SandboxPool(backend, 1, LIMITS, TIMEOUTS if "timeout" in expected else Timeouts())
    try:
        _, outcome, _ = pool.run(job(code, asserts, check, entry))
        assert outcome.status != "pass" or "pass" in expected, f"FALSE PASS: {name}: {outcome}"
        assert outcome.status in expected, f"{name}: {outcome}"
        _, probe, _ = pool.run(PROBE)
        assert probe.status == "pass", f"after '{name}' the next sample saw: {probe}"
    finally:
        pool.close(close_backend=False)


def test_files_do_not_leak_between_samples(pool):
    """Scratch files, shared memory, POSIX message queues, the root and every usual writable place:
    nothing a sample writes is there for the next one (the root is read-only)."""
    paths = "LEAK_PATHS = ('/tmp/leak', '/dev/shm/leak', '/leak', '/var/tmp/leak', '/run/leak', '/home/leak', " \
            "'/etc/leak', '/usr/leak', '/dev/leak', '/root/leak', '/opt/leak')\n"
    _, first, _ = pool.run(job(paths + textwrap.dedent("""
        import ctypes, os
        for path in LEAK_PATHS:
            try:
                open(path, 'w').write('x')
            except OSError:
                pass
        try:
            ctypes.CDLL('librt.so.1').mq_open(b'/leak', os.O_CREAT | os.O_RDWR, 0o600, None)
        except OSError:
            pass
        def f():
            return 8""")))
    _, second, _ = pool.run(job(paths + textwrap.dedent("""
        import os
        def f():
            return [p for p in LEAK_PATHS + ('/dev/mqueue/leak',) if os.path.exists(p)]"""),
                                ["assert f() == []"]))
    assert (first.status, second.status) == ("pass", "pass"), second


def test_loopback_server_on_the_host_is_unreachable(pool):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    port = server.getsockname()[1]
    hits = []

    def accept():
        try:
            hits.append(server.accept())
        except OSError:
            pass

    thread = threading.Thread(target=accept)
    thread.start()
    code = f"""
        import socket
        def f():
            try:
                socket.create_connection(('127.0.0.1', {port}), timeout=1).close()
                return 'connected'
            except OSError:
                return 'blocked'"""
    _, outcome, _ = pool.run(job(code, ["assert f() == 'blocked'"]))
    thread.join()
    server.close()
    assert outcome.status == "pass" and hits == []


def test_host_secret_and_files_are_invisible(backend, monkeypatch, tmp_path):
    """An API key in the harness's environment and a file on the host never reach the sandbox."""
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    canary = tmp_path / "canary.txt"
    canary.write_text(SECRET)
    pool = SandboxPool(backend, 1, LIMITS, TIMEOUTS)
    try:
        code = f"""
            import os
            def f():
                seen = [v for v in os.environ.values() if 'sk-test' in v]
                try:
                    seen.append(open({str(canary)!r}).read())
                    os.remove({str(canary)!r})
                except OSError:
                    pass
                return seen"""
        _, outcome, _ = pool.run(job(code, ["assert f() == []"]))
    finally:
        pool.close(close_backend=False)
    assert outcome.status == "pass", outcome
    assert canary.read_text() == SECRET


def test_nothing_left_on_the_host(backend):
    """After the suite: no sandbox process on the host runs as a sandbox uid, no container remains."""
    out = subprocess.run(["ps", "-eo", "uid=,stat=,args="], capture_output=True, text=True, check=True).stdout
    rows = [line.split(None, 2) for line in out.splitlines()]
    leftovers = [row for row in rows if backend.uid_base <= int(row[0]) < backend.uid_base + 64
                 and not row[1].startswith("Z") and "runner.py" not in row[2]]
    assert leftovers == []
    if backend.name == "docker":
        import os

        mine = backend.client.containers.list(all=True, filters={"label": f"complexitynet.sandbox={os.getpid()}"})
        assert len(mine) <= 1  # at most the module pool's idle session, closed with the backend
    assert Path("/tmp").exists()
