"""Benchmark: routing overhead of `complexitynet serve` under load, loopback only.

Three processes: the fake OpenAI-compatible upstream (tests/fake_openai.py, answering at once), the
router (`complexitynet serve` with a trained classifier: serve.classifier from params.yaml, or
--classifier, e.g. models/baselines/tfidf_lr.joblib), and this client
(aiohttp, C concurrent workers, each sending its next request when the last one returns).

Overhead, defined: at each concurrency C, in the same run, the client first calls the fake
upstream directly, then calls it through the router with model "complexitynet" (classify, decide,
forward, relay). overhead p50 = p50(through the router) - p50(direct), likewise p99. So it is the
latency the router adds as a client sees it, with the router's queueing (classifier micro-batches,
event loop) included. Every request carries a distinct MBPP task statement (what the classifier
was trained on), so no cache could help. A warm-up at the largest C opens every connection first
(long-lived clients keep theirs). Target at C=32: p50 < 15 ms, p99 < 60 ms, zero errors.

    .venv/bin/python benchmarks/router_load.py [--classifier models/baselines/tfidf_lr.joblib] [--concurrency 1 8 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
MBPP = REPO.parent / "shared" / "data" / "mbpp" / "mbpp.jsonl"
TARGET_P50_MS, TARGET_P99_MS = 15.0, 60.0


def prompts() -> list[str]:
    path = Path(os.environ.get("COMPLEXITYNET_MIRROR", MBPP.parent.parent)) / "mbpp" / "mbpp.jsonl"
    return [json.loads(line)["text"] for line in path.read_text().splitlines()]


def start(cmd: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def router_params(tmp: Path, upstream: str, classifier: str) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["ladders"]["bench"] = [{"name": f"rung{i}", "provider": "openai", "price": {"input": 1, "output": 1},
                                "openai": {"base_url": upstream, "model": f"m{i}", "api_key_env": None}}
                               for i in range(3)]
    raw["serve"].update(ladder="bench", classifier=classifier,
                        eval_metrics=str(REPO / "metrics" / "eval.json"))
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


async def wait_ready(url: str, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up")
            await asyncio.sleep(0.3)


async def drive(url: str, model: str, texts: list[str], concurrency: int) -> tuple[list[float], int, float]:
    """(latencies in s, errors, wall s) of sending every text once with `concurrency` workers."""
    todo = list(reversed(texts))
    latencies: list[float] = []
    errors = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while todo:
            body = {"model": model, "messages": [{"role": "user", "content": todo.pop()}], "max_tokens": 64}
            t0 = time.perf_counter()
            async with session.post(url, json=body) as resp:
                await resp.read()
                errors += resp.status != 200
            latencies.append(time.perf_counter() - t0)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        return latencies, errors, time.perf_counter() - t0


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values) * 1000, q))


async def run(args: argparse.Namespace) -> int:
    texts = prompts()
    with tempfile.TemporaryDirectory() as tmp:
        fake = start([sys.executable, "-m", "tests.fake_openai"], REPO)
        router = None
        try:
            upstream = fake.stdout.readline().strip()  # the fake prints its base URL when ready
            port = free_port()
            router = start([sys.executable, "-m", "complexitynet.cli", "--params",
                            str(router_params(Path(tmp), upstream, args.classifier)), "serve", "--port", str(port)],
                           REPO)
            base = f"http://127.0.0.1:{port}"
            await wait_ready(f"{base}/health", router)
            # warm-up at the largest concurrency: every connection (client -> router -> upstream) is open
            # before timing, as with long-lived clients; a cold 32-connection burst otherwise lands in the p99
            top = max(args.concurrency)
            await drive(f"{base}/v1/chat/completions", "complexitynet", texts[-2 * top:], top)
            used, rows = 0, []
            for c in args.concurrency:
                n = max(args.min_requests, args.per_client * c)
                batch, used = texts[used:used + n], used + n
                direct, d_err, _ = await drive(f"{upstream}/chat/completions", "m0", batch, c)
                routed, r_err, wall = await drive(f"{base}/v1/chat/completions", "complexitynet", batch, c)
                rows.append((c, n, pct(routed, 50) - pct(direct, 50), pct(routed, 99) - pct(direct, 99),
                             n / wall, pct(direct, 50), pct(routed, 50), d_err + r_err))
        finally:
            for proc in (router, fake):
                if proc is not None:
                    proc.terminate()
                    proc.wait(10)
    print(f"{'clients':>7} {'requests':>8} {'overhead p50':>12} {'overhead p99':>12} {'req/s':>7} "
          f"{'direct p50':>10} {'router p50':>10} {'errors':>6}")
    for c, n, o50, o99, rps, d50, r50, err in rows:
        print(f"{c:>7} {n:>8} {o50:>10.1f}ms {o99:>10.1f}ms {rps:>7.1f} {d50:>8.1f}ms {r50:>8.1f}ms {err:>6}")
    c, _, o50, o99, _, _, _, err = rows[-1]
    ok = o50 < TARGET_P50_MS and o99 < TARGET_P99_MS and err == 0
    print(f"at {c} clients: overhead p50 {o50:.1f} ms (target < {TARGET_P50_MS:g}), p99 {o99:.1f} ms "
          f"(target < {TARGET_P99_MS:g}), errors {err}")
    print(f"classifier: {args.classifier}")
    print(f"RESULT router_overhead_p50_ms={o50:.1f} target={TARGET_P50_MS:g} ok={str(ok).lower()}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = yaml.safe_load((REPO / "params.yaml").read_text())["serve"]["classifier"]
    parser.add_argument("--classifier", default=default, help=f"directory, .joblib file or MLflow URI (default: "
                        f"serve.classifier, {default})")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--per-client", type=int, default=8, help="requests per client at each level")
    parser.add_argument("--min-requests", type=int, default=100)
    args = parser.parse_args()
    if ":/" not in args.classifier:
        args.classifier = str((REPO / args.classifier).resolve())  # the router runs with another params file
        if not Path(args.classifier).exists():
            sys.exit(f"{args.classifier}: no trained classifier; run `complexitynet train` (or pass --classifier)")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
