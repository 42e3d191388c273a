"""The execute stage through its CLI: verdict files, the comparison with source flags, caching,
and resuming after SIGKILL with output byte-identical to an uninterrupted run."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from complexitynet.cli import main
from complexitynet.execute import verdict_cache
from tests.sandbox.sandboxes import make

pytestmark = [pytest.mark.integration]
REPO = Path(__file__).resolve().parents[2]

COMPLETIONS = {  # MBPP/2: similar_elements(t1, t2) == tuple of common elements
    0: "```python\ndef similar_elements(a, b):\n    return tuple(sorted(set(a) & set(b)))\n```",
    1: "def similar_elements(a, b):\n    return list(set(a) & set(b))",  # a list: fails
    2: "def similar_elements(a, b)\n    return ()",  # syntax error
    3: "def similar_elements(a, b):\n    while True: pass",  # timeout
}


def write_workdir(tmp_path: Path, mirror: Path, backend: str, slow: int = 0) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["base"]["ladder"] = "mine"
    params["prepare"]["mbppplus"] = False  # MBPP/2's asserts judge here (hidden tests: tests/sandbox/test_hidden.py)
    params["label"]["max_missing"] = 1000  # a handful of samples: sample's check for a trainable ladder would stop it
    params["execute"].update(backend=backend, workers=1,
                             timeouts={"load_s": 3, "test_s": 1, "sample_s": 10})
    params["ladders"]["mine"] = [{
        "name": "mine", "provider": "recorded", "price": {"input": 1, "output": 1},
        "recorded": {"source": "jsonl", "model": "mine", "path": "mine.jsonl"}}]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    rows = [{"task_id": "MBPP/2", "model": "mine", "trial": t, "completion": c} for t, c in COMPLETIONS.items()]
    for i in range(slow):  # distinct programs that each take a while: something to interrupt
        rows.append({"task_id": "MBPP/2", "model": "mine", "trial": 10 + i, "completion":
                     f"import time\ndef similar_elements(a, b):\n    time.sleep(0.3)  # {i}\n    return tuple(sorted(set(a) & set(b)))"})
    (tmp_path / "mine.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(params=["docker", "bwrap"])
def workdir(request, tmp_path, monkeypatch, mirror):
    make(request.param).close()  # skip (or fail under CI) if the backend is missing
    write_workdir(tmp_path, mirror, request.param)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COMPLEXITYNET_MIRROR", str(mirror))
    for stage in ("fetch", "prepare", "sample"):
        assert main([stage]) == 0
    return tmp_path


def test_execute_writes_verdicts_metrics_and_reuses_the_cache(workdir, caplog):
    caplog.set_level(logging.INFO)
    assert main(["execute"]) == 0
    verdicts = [json.loads(line) for line in Path("data/verdicts/mine.jsonl").read_text().splitlines()]
    assert [(v["trial"], v["hidden"]["status"], v["hidden"]["tests_passed"]) for v in verdicts] == [
        (0, "pass", 3), (1, "fail", 0), (2, "error", 0), (3, "timeout", 0)]
    assert "SyntaxError" in verdicts[2]["hidden"]["detail"] and verdicts[2]["visible"] == verdicts[2]["hidden"]
    metrics = json.loads(Path("reports/execute.json").read_text())["models"]["mine"]
    assert metrics["hidden"]["status"]["pass"] == 1 and metrics["source_flags"]["no_source_flag"] == 4
    first = Path("data/verdicts/mine.jsonl").read_bytes()
    caplog.clear()
    assert main(["execute"]) == 0
    assert "0 to run" in caplog.text
    assert Path("data/verdicts/mine.jsonl").read_bytes() == first

    # a second execute in the same checkout stops at once instead of doing all the work again
    cache = Path("data/cache/verdicts/mine.jsonl")
    held = verdict_cache(cache)
    caplog.clear()
    assert main(["execute"]) == 2 and "another `complexitynet execute` is using this cache" in caplog.text
    held.close()
    # a record edited by hand to "pass" and a torn last line: the record is dropped and re-run, the
    # fragment cut; the verdicts come out as before
    lines = cache.read_text().splitlines()
    failing = next(i for i, line in enumerate(lines) if json.loads(line)["outcome"]["status"] == "fail")
    forged = json.loads(lines[failing])
    forged["outcome"] |= {"status": "pass"}
    lines[failing] = json.dumps(forged)
    cache.write_text("\n".join(lines) + '\n{"key": "0f3a", "outco')
    caplog.clear()
    assert main(["execute"]) == 0
    assert "1 to run" in caplog.text and "1 checksum mismatch" in caplog.text and "torn" in caplog.text
    assert _statuses(Path("data/verdicts/mine.jsonl").read_bytes()) == _statuses(first)


def _statuses(verdicts: bytes) -> list:
    return [(v["trial"], v["visible"]["status"], v["hidden"]["status"], v["hidden"]["tests_passed"])
            for v in map(json.loads, verdicts.decode().splitlines())]


def test_killed_run_resumes_byte_identical(tmp_path, mirror):
    backend = "bwrap" if shutil.which("bwrap") else "docker"
    make(backend).close()
    env = {**os.environ, "COMPLEXITYNET_MIRROR": str(mirror)}
    cli = [sys.executable, "-m", "complexitynet"]
    runs = {}
    for name in ("straight", "killed"):
        work = tmp_path / name
        work.mkdir()
        write_workdir(work, mirror, backend, slow=12)
        for stage in ("fetch", "prepare", "sample"):
            subprocess.run(cli + [stage], cwd=work, env=env, check=True, capture_output=True)
        if name == "killed":
            proc = subprocess.Popen(cli + ["execute"], cwd=work, env=env, stderr=subprocess.DEVNULL)
            cache = work / "data/cache/verdicts/mine.jsonl"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and (not cache.exists() or len(cache.read_text().splitlines()) < 6):
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            done_before = len(cache.read_text().splitlines())
            assert 6 <= done_before < 16 and not (work / "data/verdicts/mine.jsonl").exists()
        out = subprocess.run(cli + ["execute"], cwd=work, env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        if name == "killed":
            assert f"{16 - done_before} to run" in out.stderr
            keys = [json.loads(line)["key"] for line in cache.read_text().splitlines()]
            assert len(keys) == len(set(keys)) == 16  # nothing executed twice
        runs[name] = json.loads("[" + ",".join((work / "data/verdicts/mine.jsonl").read_text().splitlines()) + "]")
    def strip(rows):  # wall-clock durations differ between runs, at the verdict and in each suite
        return [{k: ({kk: vv for kk, vv in v.items() if kk != "duration_s"} if isinstance(v, dict) else v)
                 for k, v in r.items() if k != "duration_s"} for r in rows]

    assert strip(runs["killed"]) == strip(runs["straight"])


def test_a_full_then_read_only_disk_ends_with_one_clear_line_and_loses_nothing(tmp_path, mirror, monkeypatch, caplog):
    """A full disk while the cache is written, then a read-only verdicts directory: each run ends
    with a one-line error naming the file, the cause and the fix (exit 2); the run after keeps every
    finished verdict, cuts the torn line the full disk left, and executes nothing twice."""
    backend = "bwrap" if shutil.which("bwrap") else "docker"
    make(backend).close()
    write_workdir(tmp_path, mirror, backend, slow=12)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COMPLEXITYNET_MIRROR", str(mirror))
    for stage in ("fetch", "prepare", "sample"):
        assert main([stage]) == 0
    cache_dir, verdicts = tmp_path / "data/cache/verdicts", tmp_path / "data/verdicts"
    cache_dir.mkdir(parents=True)
    verdicts.mkdir(parents=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(cache_dir)],
                      capture_output=True).returncode != 0:
        if os.environ.get("CI"):
            pytest.fail("CI runs as root and must be able to mount a small tmpfs")
        pytest.skip("needs root to mount a 4 kB tmpfs (a disk that fills up)")
    try:
        assert main(["execute"]) == 2
        assert "mine.jsonl: No space left on device" in caplog.text and "free some disk space" in caplog.text
        held = (cache_dir / "mine.jsonl").read_bytes()
    finally:
        subprocess.run(["umount", str(cache_dir)], check=True)
    (cache_dir / "mine.jsonl").write_bytes(held)  # the same bytes, now on a disk with room
    finished = held.count(b"\n")
    assert 0 < finished < 16
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro", "tmpfs", str(verdicts)], check=True)
    try:
        caplog.clear()
        assert main(["execute"]) == 2
        assert "Read-only file system" in caplog.text and "run from a writable checkout" in caplog.text
    finally:
        subprocess.run(["umount", str(verdicts)], check=True)
    caplog.clear()
    assert main(["execute"]) == 0
    keys = [json.loads(line)["key"] for line in (cache_dir / "mine.jsonl").read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 16  # nothing lost, nothing executed twice
    assert len(Path("data/verdicts/mine.jsonl").read_text().splitlines()) == 16


def test_a_duplicated_sample_line_is_named_in_the_samples_file(workdir, caplog):
    samples = Path("data/samples/mine.jsonl")
    lines = samples.read_text().splitlines()
    samples.write_text("\n".join(lines + lines[:1]) + "\n")
    assert main(["execute"]) == 2
    assert "data/samples/mine.jsonl: MBPP/2 trial 0 appears twice" in caplog.text
    assert not Path("data/cache/verdicts/mine.jsonl").exists()  # stopped before any work
