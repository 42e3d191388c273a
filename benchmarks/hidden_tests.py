"""Benchmark: the cost of judging MBPP samples on their MBPP+ hidden tests, against same-run anchors.

Both anchors run in the same process as the measurement, on the same samples, with the same number
of parallel workers.

1. Hidden inputs judged per second, sandbox pool vs an unsandboxed reference: one plain `python3`
   subprocess per sample that execs the code and calls the entry point on every input (the sandbox's
   interpreter build, per-input and per-sample CPU limits and memory limit; the harness's own
   `outputs_match`). Target ratio >= 0.5.
2. The whole execute stage (no cache, a fresh pool) with hidden tests vs visible tests only (hidden
   replaced by visible, so each sample runs once). Target time ratio <= 3.

Run from the repo root after `complexitynet prepare` and `complexitynet sample` (mbpp ladder):

    .venv/bin/python benchmarks/hidden_tests.py [--backend docker|bwrap] [--workers N] [--limit N]
"""

from __future__ import annotations

import argparse
import inspect
import os
import pickle
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from complexitynet.config import load_params
from complexitynet.execute import execute
from complexitynet.io import read_jsonl
from complexitynet.sandbox import harness
from complexitynet.sandbox import protocol as P
from complexitynet.sandbox.backends import HASH_SEED
from complexitynet.sandbox.pool import Job
from complexitynet.schemas import Problem, Sample
from complexitynet.sandbox.pool import SandboxConfig

MODELS = ["codellama-7b-python", "gpt-3.5-turbo-1106", "gpt-4-1106-preview"]
RATE_TARGET, TIME_TARGET = 0.5, 3.0
SYSTEM_PYTHON = "/usr/bin/python3"  # what bwrap runs; the Docker image's python3 is the same Debian build
MAX_CASE_TIMEOUTS = 1  # as sandbox/runner.py: after an input out of CPU time the rest are skipped
# The child gets the comparison as source: importing complexitynet costs ~0.4 s a process (pydantic).
JUDGE = "from __future__ import annotations\nimport math\n" + "\n".join(
    inspect.getsource(f) for f in (harness._is_floats, harness.outputs_match, harness._close))
CHILD = r"""
import os, pickle, resource, signal, sys
judge_py, code, entry, ins, outs, atol, compare, case_s, max_t, mem_mb, cpu_s = pickle.load(sys.stdin.buffer)
out = os.fdopen(os.dup(1), "wb")
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # what the solution prints must not mix with the answer
resource.setrlimit(resource.RLIMIT_AS, (mem_mb << 20,) * 2)  # the sandbox's limits for a sample
resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
def answer(why):
    out.write(pickle.dumps(why))
    out.close()
    os._exit(0)  # no atexit hooks or threads of the solution
class Timeout(BaseException): pass
def on_prof(*_): raise Timeout()
signal.signal(signal.SIGPROF, on_prof)
judge, ns, why, timeouts = {}, {"__name__": "solution"}, [], 0
exec(judge_py, judge)
try:
    exec(compile(code, "solution.py", "exec"), ns)
    fn = ns[entry]
except BaseException as exc:
    answer([f"load: {type(exc).__name__}"])
for args, want in zip(ins, outs):
    if timeouts >= max_t:
        why.append("not run")
        continue
    try:
        signal.setitimer(signal.ITIMER_PROF, case_s)
        try:
            got = fn(*args)
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
        why.append("" if judge["outputs_match"](got, want, atol, compare) else "wrong output")
    except Timeout:
        timeouts += 1
        why.append("CPU time limit")
    except BaseException as exc:
        why.append(type(exc).__name__)
answer(why)
"""

Key = tuple[str, str, int]  # (model, task_id, trial)
Verdicts = dict[Key, tuple[bool, str]]  # passed, first failure


def reference_verdict(job: Job, sandbox: SandboxConfig, python: str) -> tuple[Key, bool, str]:
    """Judge one sample in a plain subprocess: (key, passed, first failure)."""
    cases = job.tests.cases
    assert cases is not None
    payload = pickle.dumps((JUDGE, job.code, job.entry_point, [P.decode(a) for a in cases.inputs],
                            [P.decode(e) for e in cases.expected], cases.atol, cases.compare,
                            sandbox.timeouts["case_s"], MAX_CASE_TIMEOUTS, sandbox.limits["memory_mb"],
                            sandbox.limits["cpu_s"]))
    env = {**os.environ, "PYTHONHASHSEED": str(HASH_SEED)}
    try:
        proc = subprocess.run([python, "-c", CHILD], input=payload, capture_output=True, env=env,
                              timeout=sandbox.timeouts["sample_s"])
        rc = proc.returncode
        died = f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exited {rc}"
        why = pickle.loads(proc.stdout) if proc.stdout else [died]
    except subprocess.TimeoutExpired:
        why = ["timeout"]
    first = next((f"test {i}: {w}" for i, w in enumerate(why) if w), "")
    return job.key, not first, first  # type: ignore[return-value]


def run_reference(jobs: list[Job], sandbox: SandboxConfig, workers: int, python: str) -> tuple[float, Verdicts]:
    with ThreadPoolExecutor(workers) as ex:
        list(ex.map(lambda j: reference_verdict(j, sandbox, python), jobs[:workers]))  # warm, as the pool is
        start = time.perf_counter()
        results = list(ex.map(lambda j: reference_verdict(j, sandbox, python), jobs))
    return time.perf_counter() - start, {k: (ok, why) for k, ok, why in results}


def run_sandbox(jobs: list[Job], sandbox: SandboxConfig, workers: int) -> tuple[float, Verdicts]:
    pool = sandbox.open_pool(workers)
    try:
        list(pool.map(jobs[:workers]))  # warm: one session per worker
        start = time.perf_counter()
        results = {k: (o.status == "pass", o.detail) for k, o, _ in pool.map(jobs)}
        return time.perf_counter() - start, results  # type: ignore[return-value]
    finally:
        pool.close()


def time_execute(samples: dict[str, list[Sample]], problems: dict[str, Problem], sandbox: SandboxConfig,
                 workers: int) -> tuple[float, int]:
    """Seconds for the execute stage's core (fresh pool, no cache, pool start and close included), and
    how many samples pass their hidden tests."""
    start = time.perf_counter()
    pool = sandbox.open_pool(workers)
    try:
        verdicts = execute(samples, problems, pool, sandbox.fingerprint(), cache_dir=None)
    finally:
        pool.close()
    return time.perf_counter() - start, sum(v.hidden.status == "pass" for rows in verdicts.values() for v in rows)


def say(text: str) -> None:
    """Progress on stderr; the load average shows whether other jobs shared the machine."""
    print(f"{text} (load average {os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)


def result(metric: str, value: float, target: float, ok: bool) -> str:
    return f"RESULT {metric}={value:.2f} target={target} ok={str(ok).lower()}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="auto", choices=["auto", "docker", "bwrap"],
                    help="sandbox backend (auto: docker when an engine answers, else bwrap)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="parallel sandboxes, and parallel reference subprocesses (default: CPU cores)")
    ap.add_argument("--limit", type=int, default=0, help="first N problems only (0 = all 974)")
    ap.add_argument("--python", default=SYSTEM_PYTHON if Path(SYSTEM_PYTHON).exists() else sys.executable,
                    help="interpreter of the reference (default: the system's, the build the sandbox runs; "
                         "a pyenv build without PGO can be ~1.8x slower on loops)")
    ap.add_argument("--problems", type=Path, default=Path("data/problems.jsonl"), help="prepare's output")
    ap.add_argument("--samples", type=Path, default=Path("data/samples"), help="sample's output folder")
    args = ap.parse_args()
    sandbox = SandboxConfig.from_params(load_params(), args.backend).resolved()
    problems = [p for p in read_jsonl(args.problems, Problem) if p.dataset == "mbpp"]
    by_id = {p.task_id: p for p in (problems[: args.limit] if args.limit else problems)}
    samples = {m: [s for s in read_jsonl(args.samples / f"{m}.jsonl", Sample) if s.task_id in by_id]
               for m in MODELS}
    jobs = [Job((m, s.task_id, s.trial), s.code, by_id[s.task_id].hidden, by_id[s.task_id].entry_point)
            for m, rows in samples.items() for s in rows if by_id[s.task_id].hidden_source == "mbpp+"]
    if not jobs:
        print(f"{args.problems} holds no MBPP+ hidden tests: rerun `complexitynet prepare`", file=sys.stderr)
        return 2
    n_in, n_jobs, n_samples = sum(j.tests.total for j in jobs), len(jobs), sum(map(len, samples.values()))
    say(f"1/4 reference: {n_jobs} samples, {n_in} hidden inputs, {args.workers} workers")
    t_ref, ref = run_reference(jobs, sandbox, args.workers, args.python)
    say(f"2/4 sandbox ({sandbox.backend}); the reference took {t_ref:.1f} s")
    t_box, box = run_sandbox(jobs, sandbox, args.workers)
    say(f"3/4 execute, visible tests only, {n_samples} samples; the sandbox took {t_box:.1f} s")
    visible_only = {t: p.model_copy(update={"hidden": p.visible, "hidden_source": "visible"})
                    for t, p in by_id.items()}
    t_vis, pass_vis = time_execute(samples, visible_only, sandbox, args.workers)
    say(f"4/4 execute with hidden tests; visible-only took {t_vis:.1f} s")
    t_hid, pass_hid = time_execute(samples, by_id, sandbox, args.workers)
    say(f"done; execute with hidden tests took {t_hid:.1f} s")

    differ = sorted(k for k in box if box[k][0] != ref[k][0])
    print(f"{n_jobs} samples of {len({j.key[1] for j in jobs})} MBPP+ problems (3 models), {n_in} hidden inputs, "
          f"{args.workers} workers")
    print(f"reference: one `{args.python} -c` subprocess per sample, no sandbox")
    for name, t, verdicts in (("reference (plain subprocess per sample)", t_ref, ref),
                              (f"complexitynet sandbox ({sandbox.backend})", t_box, box)):
        print(f"{name:<40} {n_in / t:8.1f} inputs/s {t:7.1f} s, "
              f"{sum(ok for ok, _ in verdicts.values())}/{n_jobs} samples pass")
    print(f"verdicts agree on {n_jobs - len(differ)}/{n_jobs} samples")
    for k in differ[:8]:
        print(f"  {k[0]} {k[1]}#{k[2]}: sandbox {'pass' if box[k][0] else 'fail'} {box[k][1][:90]!r}, "
              f"reference {'pass' if ref[k][0] else 'fail'} {ref[k][1]!r}")
    print(f"execute, {n_samples} samples: visible-only {t_vis:.1f} s ({pass_vis} pass), with hidden tests "
          f"{t_hid:.1f} s ({pass_hid} pass hidden)")
    rate_ratio, time_ratio = t_ref / t_box, t_hid / t_vis  # same inputs both sides: rate ratio = time ratio
    print(result("hidden_rate_ratio", rate_ratio, RATE_TARGET, rate_ratio >= RATE_TARGET))
    print(result("execute_hidden_vs_visible", time_ratio, TIME_TARGET, time_ratio <= TIME_TARGET))
    return 0


if __name__ == "__main__":
    sys.exit(main())
