"""execute: run every sample's code against its problem's tests in the sandbox -> data/verdicts/.

Verdicts are cached by content (the sandbox image, limits, timeouts, code and tests), appended to
data/cache/verdicts/<model>.jsonl as they arrive (locked, checksummed, checked: io.AppendLog and
`check_outcome`): a killed run resumes without re-executing anything it finished, identical
programs (common across trials) run once, and a rerun rewrites the same bytes. The stage also
reports how our verdicts differ from the recorded sources' own pass flags.

Each sample is judged twice, on the visible tests (what its prompt showed) and on the hidden tests
(what judges); the two runs are cached separately, and a problem without hidden tests of its own
runs once.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from complexitynet.errors import DataError
from complexitynet.io import AppendLog, progress
from complexitynet.paths import load_problems, load_samples
from complexitynet.sandbox.backends import HASH_SEED
from complexitynet.sandbox.harness import Outcome
from complexitynet.sandbox.pool import Job, SandboxConfig, SandboxPool
from complexitynet.schemas import Problem, Result, Sample, Status, Tests, Verdict

if TYPE_CHECKING:
    from complexitynet.config import Params
    from complexitynet.paths import Paths

log = logging.getLogger(__name__)


def job_key(fingerprint: str, code: str, tests: Tests | str, entry_point: str) -> str:
    """Content address of one execution: same sandbox, limits, code and tests -> same result.
    A sample has one per suite; a problem whose hidden tests are its visible ones shares it.
    `tests` may be given as `suite_json(tests)`, computed once for all the samples of a problem."""
    suite = tests if isinstance(tests, str) else suite_json(tests)
    parts = [_json(fingerprint), _json(code), suite, _json(entry_point)]
    return hashlib.sha256(f"[{', '.join(parts)}]".encode()).hexdigest()  # json.dumps of the list, piece by piece


def suite_json(tests: Tests) -> str:
    """A suite as the key hashes it (MBPP+ suites run to ~100 kB: serialise each once, not per sample)."""
    return _json(tests.model_dump())


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=True)


def verdict_cache(path: Path) -> AppendLog:
    """Outcomes of one model's runs by job key (locked, checksummed, torn tail cut: io.AppendLog)."""
    return AppendLog(path, "complexitynet execute", check_outcome)


def check_outcome(record: dict[str, Any]) -> str | None:
    """Why a cached outcome cannot be a verdict this code wrote (None when it can): a status with
    test counts that contradict it, failed-test indices out of range, missing fields."""
    out = record.get("outcome")
    if not isinstance(out, dict):
        return "no outcome"
    total, passed, failed = out.get("tests_total"), out.get("tests_passed"), out.get("failed")
    if out.get("status") not in get_args(Status):
        return "unknown status"
    if not (type(total) is int and type(passed) is int and 0 <= passed <= total and isinstance(failed, list)
            and all(type(i) is int for i in failed)):
        return "malformed test counts"
    if sorted(set(failed)) != failed or (failed and not 0 <= failed[0] <= failed[-1] < total) \
            or passed + len(failed) != total:
        return "test counts that disagree"
    if (out["status"] == "pass" and failed) or (out["status"] != "pass" and not failed and total > 0):
        return "a status that disagrees with its tests"
    if not isinstance(out.get("produced_by"), dict) or not isinstance(out.get("detail"), str) \
            or type(out.get("duration_s")) not in (int, float):
        return "missing fields"
    return None


@dataclass
class Plan:
    """What one execute run must do: every sample's job key per suite, and the jobs not yet cached."""

    keyed: dict[str, dict[tuple[str, int], tuple[str | None, str]]]  # model -> (task, trial) -> (visible, hidden)
    todo: dict[tuple[str, str], Job]                # (model, key) -> job; identical runs happen once per model
    caches: dict[str, AppendLog | None]
    fresh: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def add(self, model: str, key: str, record: dict[str, Any]) -> None:
        """Keep one finished job's result record (and append it to the cache, durably)."""
        self.fresh[model, key] = record
        if self.caches[model] is not None:
            self.caches[model].add({"key": key, "outcome": record})  # type: ignore[union-attr]

    def close(self) -> None:
        for cache in self.caches.values():
            if cache is not None:
                cache.close()


def _open_caches(cache_dir: Path, models: list[str]) -> dict[str, AppendLog | None]:
    caches: dict[str, AppendLog | None] = {}
    try:
        for model in models:
            caches[model] = verdict_cache(cache_dir / f"{model}.jsonl")
    except BaseException:  # e.g. another execute holds a lock: release the ones taken
        for cache in caches.values():
            cache.close()  # type: ignore[union-attr]
        raise
    return caches


def plan(samples: dict[str, list[Sample]], problems: dict[str, Problem], fingerprint: str,
         cache_dir: Path | None) -> Plan:
    """Key every sample's visible and hidden run by content and list the jobs the cache cannot answer."""
    for model, rows in samples.items():  # bad input stops here, before any cache is opened or work done
        seen: set[tuple[str, int]] = set()
        for sample in rows:
            if (sample.task_id, sample.trial) in seen:
                raise DataError(f"data/samples/{model}.jsonl: {sample.task_id} trial {sample.trial} appears twice; "
                                "remove the duplicate line or rerun `complexitynet sample`")
            seen.add((sample.task_id, sample.trial))
            problem = problems.get(sample.task_id)
            if problem is None:
                raise DataError(f"data/samples/{model}.jsonl: task '{sample.task_id}' is not in "
                                "data/problems.jsonl; rerun `complexitynet sample`")
            if problem.hidden.total == 0:
                raise DataError(f"data/problems.jsonl: {sample.task_id} has no hidden tests; nothing can judge it")
    caches = _open_caches(cache_dir, list(samples)) if cache_dir else dict.fromkeys(samples)
    keyed: dict[str, dict[tuple[str, int], tuple[str | None, str]]] = {}
    todo: dict[tuple[str, str], Job] = {}
    suites: dict[int, str] = {}  # id(Tests) -> suite_json, for the problems held in `problems`
    for model, rows in samples.items():
        keyed[model] = {}
        cache = caches[model]
        for sample in rows:
            problem = problems[sample.task_id]
            keys = []
            for tests in (problem.visible, problem.hidden):
                if tests.total == 0:
                    keys.append(None)
                    continue
                if id(tests) not in suites:
                    suites[id(tests)] = suite_json(tests)
                key = job_key(fingerprint, sample.code, suites[id(tests)], problem.entry_point)
                keys.append(key)
                if (cache is None or key not in cache.records) and (model, key) not in todo:
                    todo[model, key] = Job((model, key), sample.code, tests, problem.entry_point)
            keyed[model][sample.task_id, sample.trial] = (keys[0], keys[1])
    total = sum(len(k) for k in keyed.values())
    log.info("execute: %d samples, %d to run (the rest cached or shared)", total, len(todo))
    return Plan(keyed, todo, caches)


def run_jobs(pool: SandboxPool, jobs: Iterable[Job], total: int = 0,
             show_progress: bool = False) -> Iterator[tuple[tuple[str, str], dict[str, Any]]]:
    """((model, key), result record) for each job, as each finishes (with `show_progress`: a bar on a
    terminal, a line every 30 s in a log)."""
    results = progress(pool.map(jobs), total, "execute", "run") if show_progress else pool.map(jobs)
    for key, outcome, seconds in results:
        producer = {"sandbox": pool.backend.sandbox, "python": pool.python, "hash_seed": HASH_SEED}
        yield key, outcome_record(outcome, seconds, producer)  # type: ignore[misc]


def assemble(samples: dict[str, list[Sample]], done: Plan) -> dict[str, list[Verdict]]:
    """One verdict per sample, in the samples' order, from this run's results or the cache."""
    verdicts: dict[str, list[Verdict]] = {}
    for model, rows in samples.items():
        out = []
        for sample in rows:
            keys = done.keyed[model][sample.task_id, sample.trial]
            records = [None if k is None else (done.fresh.get((model, k)) or done.caches[model].records[k]["outcome"])  # type: ignore[union-attr]
                       for k in keys]
            visible, hidden = records
            seconds = hidden["duration_s"] + (visible["duration_s"] if visible and keys[0] != keys[1] else 0)  # type: ignore[index]
            out.append(Verdict(task_id=sample.task_id, trial=sample.trial, model=model,
                               visible=_result(visible), hidden=_result(hidden),  # type: ignore[arg-type]
                               duration_s=round(seconds, 4), produced_by=hidden["produced_by"]))  # type: ignore[index]
        verdicts[model] = out
    return verdicts


def _result(record: dict[str, Any] | None) -> Result | None:
    if record is None:
        return None
    return Result(**{k: record[k] for k in ("status", "tests_passed", "tests_total", "failed", "detail", "duration_s")})


def execute(samples: dict[str, list[Sample]], problems: dict[str, Problem], pool: SandboxPool,
            fingerprint: str, cache_dir: Path | None, show_progress: bool = False) -> dict[str, list[Verdict]]:
    """Verdicts for every sample of every model (models run through one shared pool)."""
    todo = plan(samples, problems, fingerprint, cache_dir)
    try:
        for (model, key), record in run_jobs(pool, todo.todo.values(), len(todo.todo), show_progress):
            todo.add(model, key, record)
    finally:
        todo.close()
    return assemble(samples, todo)


def outcome_record(outcome: Outcome, seconds: float, producer: dict[str, Any]) -> dict[str, Any]:
    return {"status": outcome.status, "tests_passed": outcome.tests_passed, "tests_total": outcome.tests_total,
            "failed": list(outcome.failed), "duration_s": round(seconds, 4), "detail": outcome.detail,
            "produced_by": producer}


def compare_with_source(samples: list[Sample], verdicts: list[Verdict], examples: int = 10) -> dict[str, Any]:
    """How our verdicts on the visible tests (the ones the sources' own harnesses ran) differ from
    the recorded source's own pass flags, for one model."""
    ours = {(v.task_id, v.trial): (v.visible or v.hidden).status == "pass" for v in verdicts}
    counts: Counter[str] = Counter()
    lists: dict[str, list[str]] = {"ours_pass_source_fail": [], "ours_fail_source_pass": []}
    for s in samples:
        if s.source_pass is None:
            counts["no_source_flag"] += 1
            continue
        mine = ours[s.task_id, s.trial]
        if mine == s.source_pass:
            counts["agree"] += 1
            continue
        name = "ours_pass_source_fail" if mine else "ours_fail_source_pass"
        counts[name] += 1
        if len(lists[name]) < examples:
            lists[name].append(f"{s.task_id}#{s.trial}")
    compared = counts["agree"] + counts["ours_pass_source_fail"] + counts["ours_fail_source_pass"]
    return {
        "compared": compared,
        "agree": counts["agree"],
        "agreement": round(counts["agree"] / compared, 4) if compared else None,
        "ours_pass_source_fail": counts["ours_pass_source_fail"],
        "ours_fail_source_pass": counts["ours_fail_source_pass"],
        "no_source_flag": counts["no_source_flag"],
        "examples": lists,
    }


def summarize(samples: list[Sample], verdicts: list[Verdict]) -> dict[str, Any]:
    """Status counts and pass rates on hidden and on visible tests, and the samples that pass the
    visible tests but fail the hidden ones (the code a user's own tests would wrongly accept)."""
    out: dict[str, Any] = {"samples": len(verdicts)}
    for suite in ("hidden", "visible"):
        results = [r for v in verdicts if (r := v.result(suite)) is not None]  # type: ignore[arg-type]
        statuses = Counter(r.status for r in results)
        out[suite] = {"judged": len(results),
                      "status": {s: statuses.get(s, 0) for s in ("pass", "fail", "timeout", "error", "crash")},
                      "pass_rate": round(statuses.get("pass", 0) / len(results), 4) if results else None}
    fooled = [v for v in verdicts if v.visible is not None and v.visible.status == "pass" and v.hidden.status != "pass"]
    out["pass_visible_fail_hidden"] = len(fooled)
    out["source_flags"] = compare_with_source(samples, verdicts)
    return out


# --- the stage's edge: params and paths in, files out (dvc.yaml and the Prefect flow call it) ---

def write_outputs(params: Params, paths: Paths, samples: dict, verdicts: dict, backend: str) -> None:
    from complexitynet.io import write_jsonl, write_metrics
    from complexitynet.schemas import verdict_key

    paths.verdicts.mkdir(parents=True, exist_ok=True)
    for name, rows in verdicts.items():
        write_jsonl(paths.verdicts / f"{name}.jsonl", rows, key=verdict_key)
    for stale in paths.verdicts.glob("*.jsonl"):
        if stale.stem not in verdicts:
            stale.unlink()
    metrics = {name: summarize(samples[name], verdicts[name]) for name in verdicts}
    write_metrics(paths.execute_report, paths.execute_metrics,
                  {"ladder": params.ladder_name, "backend": backend, "models": metrics},
                  {"models": {name: {"hidden_pass_rate": m["hidden"]["pass_rate"], "visible_pass_rate": m["visible"]["pass_rate"],
                                     "source_agreement": m["source_flags"]["agreement"]} for name, m in metrics.items()}})
    for name, m in metrics.items():
        flags = m["source_flags"]
        log.info("execute: %-28s pass rate hidden %.3f, visible %s %s; %d pass visible but fail hidden; "
                 "agrees with the source's flags on %s/%s", name, m["hidden"]["pass_rate"] or 0,
                 m["visible"]["pass_rate"], m["hidden"]["status"], m["pass_visible_fail_hidden"], flags["agree"],
                 flags["compared"])


def run(params: Params, paths: Paths, backend: str | None = None) -> None:
    sandbox = SandboxConfig.from_params(params, backend)
    samples = load_samples(params, paths)
    pool = sandbox.open_pool()
    log.info("execute: %s backend, %d workers", pool.backend.name, pool.workers)
    try:
        verdicts = execute(samples, load_problems(paths), pool, sandbox.fingerprint(),
                              paths.verdict_cache if params.execute.cache else None, show_progress=True)
    finally:
        pool.close()
    write_outputs(params, paths, samples, verdicts, pool.backend.name)
