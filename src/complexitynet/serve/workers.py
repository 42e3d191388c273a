"""`complexitynet serve`: one router process, or several sharing the port (SO_REUSEPORT) under a
supervisor that forwards signals and stops them all when one exits."""


from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import sys
from typing import Any, NoReturn

from complexitynet.config import Params
from complexitynet.errors import ComplexityNetError, ConfigError

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1  # prctl: the signal a process gets when its parent dies


def serve(params: Params, classifier: str | None = None, ladder: str | None = None, host: str | None = None,
          port: int | None = None, workers: int | None = None) -> None:
    """Serve until interrupted: in this process, or in `workers` (default serve.workers) processes."""
    host, port = host or params.serve.host, params.serve.port if port is None else port
    workers = params.serve.workers if workers is None else workers
    if workers < 1:
        raise ConfigError(f"--workers {workers}: the router needs at least 1 worker process")
    if workers == 1:
        _serve_one(params, classifier, ladder, host=host, port=port)
    else:
        _serve_many(params, classifier, ladder, host, port, workers)


def _serve_one(params: Params, classifier: str | None, ladder: str | None, host: str, port: int,
               reuse_port: bool = False) -> None:
    """One router in this process."""
    from aiohttp import web

    from complexitynet.serve.app import build_app
    from complexitynet.serve.router import build_router

    router = build_router(params, classifier, ladder)
    for up_problem in _key_problems(router):
        log.warning("serve: %s", up_problem)
    rule = (f"the router that pays, {router.target_source}" if router.paying is not None
            else f"default target {router.target:g} from {router.target_source}")
    log.info("serve: ladder %s (%s), %s; http://%s:%d/v1 (pid %d)", router.ladder_name,
             ", ".join(router.models()), rule, host, port, os.getpid())
    # The classifier and the libraries stay for the process's life: freezing them keeps the collector's
    # full passes from walking them again (~160k objects with the TF-IDF router: ~170 ms a pass on the
    # build machine, every request in flight stalled meanwhile; 0 ms once frozen).
    gc.collect()
    gc.freeze()
    # shutdown: the drain (app.drain) answers every request within serve.drain_s; the margin covers its 503s
    # keepalive_timeout: aiohttp arms it when a connection opens and whenever it waits for a request, and
    # a request whose headers have not all arrived does not stop it: it is the header-read timeout too
    web.run_app(build_app(router), host=host, port=port, reuse_port=reuse_port, access_log=None, print=None,
                shutdown_timeout=params.serve.drain_s + 5, keepalive_timeout=params.serve.idle_timeout_s)


def _serve_many(params: Params, classifier: str | None, ladder: str | None, host: str, port: int,
                workers: int) -> None:
    """`workers` forked processes, each a whole router (classifier, batcher, upstream pool, sandboxes)
    with its own listening socket on the same port (SO_REUSEPORT: the kernel spreads connections over
    them; one shared socket would let the first worker to wake accept a whole burst). The router's
    Python work is single-threaded, so this is how it uses more than one core. Each worker loads its
    own classifier after the fork (torch is not fork-safe once its threads run). Prometheus counters
    are summed over the workers through files in a private directory (prometheus_client's
    multiprocess mode). This process only forks, forwards SIGTERM/SIGINT once and waits; a worker
    that exits on its own (bad configuration, a crash) stops the others and the service exits with
    its code, rather than staying half up."""
    import shutil
    import socket
    import tempfile

    if "prometheus_client" in sys.modules:  # its value class is fixed at import: too late to share metrics
        raise RuntimeError("serve with workers > 1 must start in a fresh process")
    # Hold the port (bound, never listening, so it is never handed a connection) while the workers bind
    # theirs: with port 0 this is also how they all get the same one.
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    hold = socket.socket(family, kind, proto)
    hold.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    hold.bind(address)
    port = hold.getsockname()[1]
    metrics_dir = tempfile.mkdtemp(prefix="complexitynet-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    children: set[int] = set()
    try:
        for _ in range(workers):
            pid = os.fork()
            if pid == 0:
                _worker(params, classifier, ladder, host, port)
            children.add(pid)
        log.info("serve: %d workers on http://%s:%d/v1", workers, host, port)
        code = _supervise(children)
    finally:
        hold.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    if code:
        raise SystemExit(code)


def _worker(params: Params, classifier: str | None, ladder: str | None, host: str, port: int) -> NoReturn:
    """A forked worker: serve until SIGTERM (or the parent's death); never returns."""
    import ctypes

    parent = os.getppid()
    code = 0
    try:
        os.setpgid(0, 0)  # a terminal's Ctrl-C reaches the parent alone, which stops us with one SIGTERM
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)
        _serve_one(params, classifier, ladder, host, port, reuse_port=True)
    except ComplexityNetError as exc:
        log.error("error: serve worker %d: %s", os.getpid(), exc)
        code = 2
    except BaseException:  # noqa: BLE001 - a worker must never return into the parent's code
        log.exception("serve worker %d failed", os.getpid())
        code = 1
    logging.shutdown()
    os._exit(code)


def _supervise(children: set[int]) -> int:
    """Wait for every worker; the first to exit unasked stops the rest. The exit code to return."""
    stopping, code = False, 0

    def stop(signum: int | None, frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while children:
            pid, status = os.wait()
            children.discard(pid)
            if not stopping:
                rc = os.waitstatus_to_exitcode(status)
                log.error("serve: worker %d exited (%s); stopping the others", pid,
                          f"code {rc}" if rc >= 0 else f"signal {-rc}")
                code = rc if rc > 0 else 1
                stop(None, None)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code


def _key_problems(router) -> list[str]:
    """Rungs whose key variable is unset: warned at start, refused per request (no silent fallback)."""
    return [f"model '{m.name}' reads its key from {m.openai.api_key_env}, which is not set: requests routed "
            "to it will fail with upstream_key_missing" for m in router.ladder
            if m.openai and m.openai.api_key_env and not os.environ.get(m.openai.api_key_env, "").strip()]
