"""Benchmark: routing overhead of `complexitynet serve` under load, loopback only.

Three processes: an instant upstream (a canned Chat Completions answer, see `InstantUpstream`), the
router (`complexitynet serve --workers W` with a trained classifier), and this client (C concurrent
workers on keep-alive connections, each sending its next request when the last one returns).

The default is the configuration the README recommends for serving on CPU cores: the TF-IDF
baseline that `train` writes (models/baselines/tfidf_lr.joblib, which routes MBPP as well as the
LoRA classifier) on 2 workers. The LoRA classifier needs 8-23 ms of CPU per prompt here, so it
cannot meet the target on two cores whatever the server does: measure it with
`--classifier models/classifier --workers 1`.

Overhead, defined: at each concurrency C, in the same run, the client first calls the upstream
directly, then calls it through the router with model "complexitynet" (classify, decide, forward,
relay). overhead p50 = p50(through the router) - p50(direct), likewise p99. So it is the latency
the router adds as a client sees it, with the router's queueing (classifier, event loop) included.
Requests carry MBPP task statements (what the classifier was trained on), in order, starting over
when all 974 have been sent (the router keeps no cache). A warm-up at the largest C runs first, and
each client's connection is open before its clock starts (long-lived clients keep theirs). Target
at C=32: p50 < 25 ms, p99 < 60 ms, zero errors. The router forwards with aiohttp's client
(serve/upstream.py, trust_env=True), as it does in service.

The client and the upstream are minimal HTTP/1.1 over asyncio (tens of microseconds a request, where
an aiohttp client and server cost ~0.3 ms each): all three processes share the machine's two cores,
and the load generator should take as little of them from the router as it can, as wrk or k6
would. `--client aiohttp` drives the same load through aiohttp's client and the tests' fake server
(tests/fake_openai.py), for comparison with earlier rows.

    .venv/bin/python benchmarks/router_load.py [--classifier models/classifier] [--workers 1]
                                               [--concurrency 1 8 32] [--client lean|aiohttp]
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import Counter
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
MBPP = REPO.parent / "shared" / "data" / "mbpp" / "mbpp.jsonl"
TARGET_P50_MS, TARGET_P99_MS = 25.0, 60.0  # issue #16's acceptance target at 32 clients


def prompts() -> list[str]:
    path = Path(os.environ.get("COMPLEXITYNET_MIRROR", MBPP.parent.parent)) / "mbpp" / "mbpp.jsonl"
    return [json.loads(line)["text"] for line in path.read_text().splitlines()]


ANSWER = json.dumps({"id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "bench",
                     "choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": "def f():\n    return 8\n"}}],
                     "usage": {"prompt_tokens": 64, "completion_tokens": 8, "total_tokens": 72}}).encode()
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(ANSWER), ANSWER)


def content_length(head: bytes) -> int:
    """The Content-Length of an HTTP/1.1 message head; a chunked body is refused (nobody here sends one)."""
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            raise ValueError(f"unexpected Transfer-Encoding: {value.strip().decode()}")
    return length


class InstantUpstream(asyncio.Protocol):
    """An upstream that answers every request on a keep-alive connection at once with RESPONSE."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport, self.buffer = transport, b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            size = end + 4 + content_length(self.buffer[:end])
            if len(self.buffer) < size:
                return
            self.buffer = self.buffer[size:]
            self.transport.write(RESPONSE)


def serve_upstream() -> None:
    """Run InstantUpstream on a free loopback port (its own process); print its base URL."""
    async def forever() -> None:
        server = await asyncio.get_running_loop().create_server(InstantUpstream, "127.0.0.1", 0)
        print(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1", flush=True)
        await server.serve_forever()

    asyncio.run(forever())


class Connection:
    """One keep-alive HTTP/1.1 client connection: POST a JSON body, read the whole answer."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port, self.path = parts.hostname, parts.port, parts.path.encode()

    async def open(self) -> Connection:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def post(self, body: bytes) -> int:
        """The answer's HTTP status."""
        self.writer.write(b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (self.path, self.host.encode(), self.port, len(body), body))
        head = await self.reader.readuntil(b"\r\n\r\n")
        await self.reader.readexactly(content_length(head))
        return int(head[9:12])

    async def worker_pid(self) -> int:
        """The pid of the router worker this connection landed on (GET /health names it)."""
        self.writer.write(b"GET /health HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (self.host.encode(), self.port))
        head = await self.reader.readuntil(b"\r\n\r\n")
        return json.loads(await self.reader.readexactly(content_length(head)))["pid"]

    def close(self) -> None:
        self.writer.close()


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
    # router=None: route with `classifier` (params.yaml's default is the router that pays, models/router)
    raw["serve"].update(ladder="bench", router=None, classifier=classifier,
                        evaluate_metrics=str(REPO / "metrics" / "evaluate.json"))
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


async def wait_ready(url: str, proc: subprocess.Popen, workers: int = 1, timeout_s: float = 120) -> None:
    """Until `workers` different router processes at `url` (the router's base URL) have answered
    GET /health, a new connection each time."""
    deadline = time.monotonic() + timeout_s
    seen: set[int] = set()
    while len(seen) < workers:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not come up ({len(seen)} of {workers} workers answered)")
        try:
            conn = await Connection(url).open()
        except OSError:  # not listening yet
            await asyncio.sleep(0.3)
            continue
        try:
            seen.add(await conn.worker_pid())
        except (OSError, asyncio.IncompleteReadError, ValueError, KeyError):
            await asyncio.sleep(0.3)
        finally:
            conn.close()
        await asyncio.sleep(0.02)


async def drive(url: str, model: str, texts: list[str], concurrency: int, client: str, split: list[int] | None = None
                ) -> tuple[list[float], int, float]:
    """(latencies in s, errors, wall s) of sending every text once with `concurrency` workers, each on
    its own keep-alive connection, opened before the clock starts. With `split` (lean client, router
    URL), it gets the number of those connections each router worker holds."""
    todo = list(reversed(texts))
    latencies: list[float] = []
    errors = 0

    def body() -> bytes:
        return json.dumps({"model": model, "messages": [{"role": "user", "content": todo.pop()}],
                           "max_tokens": 64}).encode()

    async def lean(conn: Connection) -> None:
        nonlocal errors
        while todo:
            data = body()
            t0 = time.perf_counter()
            errors += await conn.post(data) != 200
            latencies.append(time.perf_counter() - t0)

    async def with_aiohttp(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while todo:
            data = body()
            t0 = time.perf_counter()
            async with session.post(url, data=data, headers={"Content-Type": "application/json"}) as resp:
                await resp.read()
                errors += resp.status != 200
            latencies.append(time.perf_counter() - t0)

    if client == "lean":
        conns = [await Connection(url).open() for _ in range(concurrency)]
        if split is not None:
            split += sorted(Counter([await conn.worker_pid() for conn in conns]).values())
        t0 = time.perf_counter()
        await asyncio.gather(*(lean(conn) for conn in conns))
        wall = time.perf_counter() - t0
        for conn in conns:
            conn.close()
        return latencies, errors, wall
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(with_aiohttp(session) for _ in range(concurrency)))
        return latencies, errors, time.perf_counter() - t0


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values) * 1000, q))


async def run(args: argparse.Namespace) -> int:
    texts = prompts()
    with tempfile.TemporaryDirectory() as tmp:
        upstream_cmd = ([sys.executable, str(Path(__file__).resolve()), "--serve-upstream"] if args.client == "lean"
                        else [sys.executable, "-m", "tests.fake_openai"])
        fake = start(upstream_cmd, REPO)
        router = None
        try:
            upstream = fake.stdout.readline().strip()  # the upstream prints its base URL when ready
            port = free_port()
            router = start([sys.executable, "-m", "complexitynet.cli", "--params",
                            str(router_params(Path(tmp), upstream, args.classifier)), "serve", "--port", str(port),
                            "--workers", str(args.workers)],
                           REPO)
            base = f"http://127.0.0.1:{port}"
            await wait_ready(base, router, args.workers)
            # warm-up at the largest concurrency: every connection (client -> router -> upstream) is open
            # before timing, as with long-lived clients; a cold 32-connection burst otherwise lands in the p99
            top = max(args.concurrency)
            await drive(f"{base}/v1/chat/completions", "complexitynet", texts[-4 * top:], top, args.client)
            used, rows = 0, []
            for c in args.concurrency:
                n = max(args.min_requests, args.per_client * c)
                batch, used = [texts[(used + i) % len(texts)] for i in range(n)], used + n
                direct, d_err, _ = await drive(f"{upstream}/chat/completions", "m0", batch, c, args.client)
                split: list[int] = []
                routed, r_err, wall = await drive(f"{base}/v1/chat/completions", "complexitynet", batch, c,
                                                  args.client, split if args.client == "lean" else None)
                rows.append((c, n, pct(routed, 50) - pct(direct, 50), pct(routed, 99) - pct(direct, 99),
                             n / wall, pct(direct, 50), pct(routed, 50), d_err + r_err,
                             "/".join(map(str, split)) or "-"))
        finally:
            for proc in (router, fake):
                if proc is not None:
                    proc.terminate()
                    proc.wait(10)
    print(f"{'clients':>7} {'requests':>8} {'overhead p50':>12} {'overhead p99':>12} {'req/s':>7} "
          f"{'direct p50':>10} {'router p50':>10} {'errors':>6}  connections per worker")
    for c, n, o50, o99, rps, d50, r50, err, split in rows:
        print(f"{c:>7} {n:>8} {o50:>10.1f}ms {o99:>10.1f}ms {rps:>7.1f} {d50:>8.1f}ms {r50:>8.1f}ms {err:>6}  {split}")
    c, _, o50, o99, _, _, _, err, _ = rows[-1]
    ok = o50 < TARGET_P50_MS and o99 < TARGET_P99_MS and err == 0
    print(f"at {c} clients: overhead p50 {o50:.1f} ms (target < {TARGET_P50_MS:g}), p99 {o99:.1f} ms "
          f"(target < {TARGET_P99_MS:g}), errors {err}")
    print(f"classifier: {args.classifier}; router workers: {args.workers}; client and upstream: {args.client}")
    print(f"RESULT router_overhead_p50_ms={o50:.1f} target={TARGET_P50_MS:g} ok={str(ok).lower()}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classifier", default="models/baselines/tfidf_lr.joblib",
                        help="directory (models/classifier: LoRA), .joblib file or MLflow URI (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--per-client", type=int, default=64, help="requests per client at each level")
    parser.add_argument("--min-requests", type=int, default=100)
    parser.add_argument("--client", choices=["lean", "aiohttp"], default="lean",
                        help="the load generator and upstream: minimal asyncio HTTP (default), or aiohttp's client "
                        "and the tests' fake server")
    parser.add_argument("--workers", type=int, default=2, help="router processes (serve.workers; default %(default)s)")
    parser.add_argument("--serve-upstream", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_upstream:
        serve_upstream()
        return 0
    if ":/" not in args.classifier:
        args.classifier = str((REPO / args.classifier).resolve())  # the router runs with another params file
        if not Path(args.classifier).exists():
            sys.exit(f"{args.classifier}: no trained classifier; run `complexitynet train` (or pass --classifier)")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
