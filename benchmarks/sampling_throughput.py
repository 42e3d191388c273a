"""Benchmark: live sampling throughput against the ideal set by latency and concurrency.

2,000 requests through the real `openai` client to the fake OpenAI-compatible server
(tests/fake_openai.py, in its own process so it does not share our GIL) answering every request
after 200 ms, with 64 requests in flight. The ideal is 64 / 0.2 s = 320 requests/s: the ratio of
achieved to ideal shows what the engine (scheduling, cache appends, code extraction, accounting)
costs. Target >= 0.9. Then the same 2,000 again, all answered from the cache: target < 2 s.
The one-time import of the openai client and its aiohttp transport (~1 s) happens before the
clock starts: a long run amortises it, and it is not throughput.

    .venv/bin/python benchmarks/sampling_throughput.py [--requests N] [--concurrency C] [--latency S]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.fake_openai, tests.live_helpers

from complexitynet.config import parse_rung  # noqa: E402
from complexitynet.config import SampleParams  # noqa: E402
from complexitynet.sample import sample_ladder  # noqa: E402
from tests.live_helpers import make_problems  # noqa: E402

TARGET = 0.9
CACHED_TARGET_S = 2.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.2)
    args = parser.parse_args()

    import openai

    openai.DefaultAioHttpClient()  # the one-time imports, outside the timing (see the docstring)

    server = subprocess.Popen([sys.executable, "-m", "tests.fake_openai", "--latency", str(args.latency)],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        base_url = server.stdout.readline().strip()
        model = parse_rung({
            "name": "bench", "provider": "openai", "price": {"input": 1.0, "output": 2.0},
            "openai": {"base_url": base_url, "model": "fake", "api_key_env": None,
                       "concurrency": args.concurrency, "params": {"max_tokens": 256, "seed": 1}},
        })
        problems = {p.task_id: p for p in make_problems(args.requests)}
        cfg = SampleParams(k=1)
        with tempfile.TemporaryDirectory() as tmp:
            cache = Path(tmp) / "cache"
            start = time.perf_counter()
            run = sample_ladder([model], problems, Path(tmp), cache, cfg)
            live_s = time.perf_counter() - start
            assert len(run.samples["bench"]) == args.requests and run.live["bench"].sent == args.requests
            start = time.perf_counter()
            again = sample_ladder([model], problems, Path(tmp), cache, cfg)
            cached_s = time.perf_counter() - start
            assert again.live["bench"].cached == args.requests and again.samples == run.samples
    finally:
        server.terminate()
        server.wait()

    ideal = args.concurrency / args.latency
    achieved = args.requests / live_s
    ratio = achieved / ideal
    print(f"live:   {args.requests} requests in {live_s:.2f} s = {achieved:.1f} req/s; "
          f"ideal {ideal:.0f} req/s ({args.concurrency} in flight / {args.latency:g} s); "
          f"ratio {ratio:.3f} (target >= {TARGET})")
    print(f"cached: {args.requests} requests in {cached_s:.2f} s (target < {CACHED_TARGET_S:g} s)")
    ok = ratio >= TARGET and cached_s < CACHED_TARGET_S
    print(f"RESULT throughput_vs_ideal={ratio:.3f} target={TARGET} ok={str(ok).lower()}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
