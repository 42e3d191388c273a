"""The router behind the HTTP layer: routing decisions (micro-batched classifier) and forwarding up
the ladder with escalation.

A routed request starts at the rung the decision picks and moves to the next rung up when that one
fails (no answer after its retries), or, when the request carries unit tests, when its answer's code
fails them in the sandbox. A concrete model name is forwarded to that rung only. A client error
that the upstream reports (a 4xx such as a bad parameter) is passed back, not escalated: a bigger
model would refuse it too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import ClientResponse, ClientSession

from complexitynet.config import ExecuteParams, ModelSpec, Params, ServeParams
from complexitynet.policy import pick_answer
from complexitynet.serve.batcher import SUB_BATCH, MicroBatcher, Predict, PredictOne
from complexitynet.serve.decide import Decision, PayingRule, decide, parse_model
from complexitynet.serve.metrics import Metrics
from complexitynet.serve.upstream import Upstream, UpstreamFailed, open_session
from complexitynet.serve.verify import TestSpec, Verifier

log = logging.getLogger(__name__)


class UnknownModel(Exception):
    pass


@dataclass
class Attempt:
    """One rung tried for a request: `ok`, `upstream_error`, `tests_passed` or `tests_failed`."""

    model: str
    result: str
    detail: str = ""


@dataclass
class Answer:
    data: dict[str, Any]  # the upstream's chat.completion
    upstream: Upstream
    tried: list[Attempt] = field(default_factory=list)


class AllFailed(Exception):
    def __init__(self, tried: list[Attempt]) -> None:
        super().__init__("; ".join(f"{a.model}: {a.detail}" for a in tried))
        self.tried = tried


@dataclass(frozen=True)
class Plan:
    """Where a request goes: rungs start..stop-1, and the decision when it was routed."""

    start: int
    stop: int
    decision: Decision | None = None


class Router:
    def __init__(self, ladder_name: str, ladder: list[ModelSpec], classes: list[str], predict: Predict,
                 target: float | None, target_source: str, cfg: ServeParams, execute: ExecuteParams, sub_batch: int = SUB_BATCH,
                 inline: PredictOne | None = None, paying: PayingRule | None = None) -> None:
        self.ladder_name, self.ladder, self.classes = ladder_name, ladder, classes
        self.paying = paying  # the router that pays; None: the level classifier's target rule
        self.target, self.target_source, self.cfg = target, target_source, cfg
        self.index = {m.name: i for i, m in enumerate(ladder)}
        self.metrics = Metrics()
        self.batcher = MicroBatcher(predict, cfg.batch_size, cfg.batch_wait_ms / 1000, cfg.queue, sub_batch,
                                    inline)
        self.verifier = Verifier(cfg.verify, execute)
        self.upstreams: list[Upstream] = []
        self.client: ClientSession | None = None
        self.in_flight = 0  # chat requests being served (the HTTP layer bounds it)
        self.work: set[asyncio.Future[Any]] = set()  # their work, which a drain can stop
        self.draining = False  # shutting down: new chat requests get 503

    async def start(self) -> None:
        """Open the upstream connection pool and the batcher (inside the serving event loop)."""
        self.client = open_session(self.cfg)
        self.upstreams = [Upstream(spec, self.client, self.cfg.upstream_timeout_s, self.cfg.upstream_retries,
                                   self.cfg.backoff_s) for spec in self.ladder]
        self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()
        if self.client is not None:
            await self.client.close()
        self.verifier.close()

    async def decide(self, text: str, target: float | None, verified: bool = False) -> Decision:
        """The routing decision; `verified`: the request carries tests (the paying rule then starts
        the verified cascade)."""
        probs = await self.batcher.submit(text)
        if self.paying is not None:
            decision = self.paying.decide(probs, self.ladder, verified)
        else:
            decision = decide(probs, self.ladder, self.classes, self.target if target is None else target)
        self.metrics.routed.labels(decision.model).inc()
        return decision

    def models(self) -> list[str]:
        return [m.name for m in self.ladder]

    def resolve(self, model: str) -> tuple[bool, float | None, int]:
        """(routed, target, rung index) for a request's model name; UnknownModel or ValueError if bad."""
        routed, target = parse_model(model)
        if routed and target is not None and self.paying is not None:
            raise ValueError(f"model '{model}': this router routes by the price of quality it learned "
                             f"(serve.router), not by a target; use '{model.split(':')[0]}'")
        if routed:
            return True, target, 0
        if model not in self.index:
            raise UnknownModel(f"The model '{model}' does not exist on this router; use 'complexitynet' "
                               f"(optionally 'complexitynet:<target>') or one of {self.models()}")
        return False, None, self.index[model]

    async def answer(self, request: dict[str, Any], plan: Plan, tests: TestSpec | None) -> Answer:
        """The first rung's answer that arrives (and passes `tests`, when given), escalating up the
        plan's rungs (under the paying rule, while its gate says the next rung is worth its price);
        when no answer passes, the one that passed the most tests (policy.pick_answer) comes back."""
        tried: list[Attempt] = []
        last: Answer | None = None
        failed: dict[int, tuple[float, Answer]] = {}  # rung -> (share of tests passed, answer)
        for i in range(plan.start, plan.stop):
            up = self.upstreams[i]
            data = await self._call(up, up.complete(up.body_for(request)), i, plan, tried)
            if data is None:
                continue
            self.metrics.usage(up.name, data.get("usage"), up.spec.price.input, up.spec.price.output)
            last = Answer(data, up, tried)
            if tests is None:
                tried.append(Attempt(up.name, "ok"))
                return last
            outcome = await self.verifier.judge(_content(data), tests)
            self.metrics.verifications.labels(up.name, outcome.status).inc()
            detail = f"{outcome.tests_passed}/{outcome.tests_total} tests passed" + \
                (f"; {outcome.detail}" if outcome.detail else "")
            if outcome.status == "pass":
                tried.append(Attempt(up.name, "tests_passed", detail))
                return last
            share = outcome.tests_passed / max(outcome.tests_total, 1)
            failed[i] = (share, last)
            if self.paying is not None and plan.decision is not None and i + 1 < plan.stop \
                    and not self.paying.escalate(plan.decision, i, share):
                tried.append(Attempt(up.name, "tests_failed", f"{outcome.status}: {detail}; the gate stops here "
                                     "(the next rung is not worth its price)"))
                break
            tried.append(Attempt(up.name, "tests_failed", f"{outcome.status}: {detail}"))
            self._escalating(up.name, "tests_failed", i, plan)
        if last is None:
            raise AllFailed(tried)
        if failed:
            best = failed[pick_answer([(i, share) for i, (share, _) in failed.items()])][1]
            return Answer(best.data, best.upstream, tried)
        return last

    async def open_stream(self, request: dict[str, Any], plan: Plan) -> tuple[ClientResponse, Upstream, list[Attempt]]:
        """An open upstream stream from the first rung that starts one (escalating before the first
        byte; once bytes flow to the caller the rung cannot change)."""
        tried: list[Attempt] = []
        for i in range(plan.start, plan.stop):
            up = self.upstreams[i]
            resp = await self._call(up, up.open_stream(up.body_for(request)), i, plan, tried)
            if resp is None:
                continue
            tried.append(Attempt(up.name, "ok"))
            return resp, up, tried
        raise AllFailed(tried)

    async def _call(self, up: Upstream, call: Awaitable[Any], i: int, plan: Plan, tried: list[Attempt]) -> Any:
        """One rung's upstream call, timed; None (recorded in `tried`, counted as an escalation when a
        rung is left above it) when the rung failed after its retries."""
        started = time.perf_counter()
        try:
            return await call
        except UpstreamFailed as exc:
            tried.append(Attempt(up.name, "upstream_error", str(exc)))
            log.warning("serve: upstream %s failed: %s%s", up.name, exc,
                        "; trying the next rung" if i + 1 < plan.stop else "")
            self._escalating(up.name, "upstream_error", i, plan)
            return None
        finally:
            self.metrics.upstream_seconds.labels(up.name).observe(time.perf_counter() - started)

    def _escalating(self, model: str, reason: str, i: int, plan: Plan) -> None:
        if i + 1 < plan.stop:
            self.metrics.escalations.labels(model, reason).inc()


def _content(data: dict[str, Any]) -> str:
    try:
        return str(data["choices"][0]["message"]["content"] or "")
    except (KeyError, IndexError, TypeError):
        return ""


def build_router(params: Params, classifier: str | None = None, ladder: str | None = None):
    """A Router for params.serve (classifier and ladder may be overridden; a classifier given here
    overrides serve.router too), ready to be served."""
    from complexitynet.serve.classifiers import FileClassifier, load_router_classifier
    from complexitynet.serve.decide import check_levels, default_target, serving_ladder

    cfg = params.serve
    name, rungs = serving_ladder(params, ladder, live=True)
    if cfg.router is not None and classifier is None:  # the router that pays
        from complexitynet.serve.classifiers import load_paying

        paying = load_paying(cfg.router, name, rungs, cfg.torch_threads)
        return Router(name, rungs, paying.spec.models, paying.predict_proba, None, f"lambda ({cfg.router})", cfg,
                      params.execute, SUB_BATCH, None, paying)
    source = classifier or cfg.classifier
    clf = load_router_classifier(source, params.classes, cfg.torch_threads)
    check_levels(clf.classes, name, rungs, source)
    target, origin = default_target(cfg.target, Path(cfg.evaluate_metrics), cfg.fallback_target)
    sub_batch = 0 if isinstance(clf, FileClassifier) else SUB_BATCH  # bag-of-words baselines do not pad
    inline = clf.inline if isinstance(clf, FileClassifier) else None
    return Router(name, rungs, clf.classes, clf.predict_proba, target, origin, cfg, params.execute, sub_batch, inline)


def explain(params: Params, prompt: str, classifier: str | None = None, ladder: str | None = None,
            target: float | None = None, verified: bool = False, as_json: bool = False) -> str:
    """`complexitynet serve --explain PROMPT`: the decision the service would make for one prompt, and
    why (the serving ladder need not be live: nothing is sent)."""
    import json

    from complexitynet.serve.classifiers import load_paying, load_router_classifier
    from complexitynet.serve.decide import check_levels, decide, default_target, serving_ladder

    cfg = params.serve
    name, rungs = serving_ladder(params, ladder, live=False)
    if cfg.router is not None and classifier is None and target is None:  # the router that pays
        paying = load_paying(cfg.router, name, rungs, cfg.torch_threads)
        decision = paying.decide(paying.predict_proba([prompt])[0], rungs, verified=verified)
        if as_json:
            return json.dumps({**decision.as_dict(), "router": cfg.router, "ladder": name}, indent=2)
        return "\n".join([
            "P(success):      " + ", ".join(f"{m} {p:.3f}" for m, p in decision.success.items()),
            f"lambda:          {decision.lam:g} ({'verified cascade' if verified else 'prompt only'}, {cfg.router})",
            f"chosen model:    {decision.model} (ladder {name})",
            f"why:             {decision.explain(rungs)}"])
    source = classifier or cfg.classifier
    clf = load_router_classifier(source, params.classes, cfg.torch_threads)
    check_levels(clf.classes, name, rungs, source)
    target, origin = (target, "--target") if target is not None else \
        default_target(cfg.target, Path(cfg.evaluate_metrics), cfg.fallback_target)
    decision = decide(clf.predict_proba([prompt])[0], rungs, clf.classes, target)
    if as_json:
        return json.dumps({**decision.as_dict(), "target_source": origin, "ladder": name}, indent=2)
    return "\n".join([
        f"predicted level: {decision.level}",
        "probabilities:   " + ", ".join(f"{c} {p:.3f}" for c, p in decision.probs.items()),
        "P(success):      " + ", ".join(f"{m} {p:.3f}" for m, p in decision.success.items()),
        f"target:          {target:g} ({origin})",
        f"chosen model:    {decision.model} (ladder {name})",
        f"why:             {decision.explain(rungs)}"])
