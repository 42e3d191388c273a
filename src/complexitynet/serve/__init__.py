"""The router service: `complexitynet serve` (an OpenAI-compatible endpoint that picks the model per
request) and the pieces it is made of (app, router, upstream, batcher, verify, sse, metrics).

`build_router` does everything that can fail on bad configuration before a port is opened: the
serving ladder must be live, the classifier must load and have one level per rung.
"""

from __future__ import annotations

import logging
from pathlib import Path

from complexitynet.config import Params

log = logging.getLogger(__name__)


def build_router(params: Params, classifier: str | None = None, ladder: str | None = None):
    """A Router for params.serve (classifier and ladder may be overridden), ready to be served."""
    from complexitynet.route import FileClassifier, check_levels, default_target, load_router_classifier, serving_ladder
    from complexitynet.serve.batcher import SUB_BATCH
    from complexitynet.serve.router import Router

    cfg = params.serve
    name, rungs = serving_ladder(params, ladder, live=True)
    source = classifier or cfg.classifier
    clf = load_router_classifier(source, params.classes, cfg.torch_threads)
    check_levels(clf.classes, name, rungs, source)
    target, origin = default_target(cfg.target, Path(cfg.eval_metrics), cfg.fallback_target)
    sub_batch = 0 if isinstance(clf, FileClassifier) else SUB_BATCH  # bag-of-words baselines do not pad
    return Router(name, rungs, clf.classes, clf.predict_proba, target, origin, cfg, params.execute, sub_batch)


def serve(params: Params, classifier: str | None = None, ladder: str | None = None, host: str | None = None,
          port: int | None = None) -> None:
    """Serve until interrupted."""
    from aiohttp import web

    from complexitynet.serve.app import build_app

    router = build_router(params, classifier, ladder)
    for up_problem in _key_problems(router):
        log.warning("serve: %s", up_problem)
    host, port = host or params.serve.host, params.serve.port if port is None else port
    log.info("serve: ladder %s (%s), default target %g from %s; http://%s:%d/v1", router.ladder_name,
             ", ".join(router.models()), router.target, router.target_source, host, port)
    web.run_app(build_app(router), host=host, port=port, access_log=None, print=None)


def _key_problems(router) -> list[str]:
    """Rungs whose key variable is unset: warned at start, refused per request (no silent fallback)."""
    import os

    return [f"model '{m.name}' reads its key from {m.openai.api_key_env}, which is not set: requests routed "
            "to it will fail with upstream_key_missing" for m in router.ladder
            if m.openai and m.openai.api_key_env and not os.environ.get(m.openai.api_key_env, "").strip()]
