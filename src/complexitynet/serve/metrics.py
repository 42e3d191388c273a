"""Prometheus metrics of the router, in a registry of its own (so several apps, e.g. in tests, never
share counters). Labels are model names from the ladder and fixed words, never request content.
With several router processes (serve.workers > 1) the counters live in files that /metrics sums."""

from __future__ import annotations

import functools
import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("complexitynet_requests", "Chat requests, each counted once, by the model "
                                "that answered ('none' when no model did) and outcome: ok, upstream_rejected "
                                "(the model's 4xx passed back), upstream_error, rejected (refused here, see "
                                "complexitynet_rejected), client_gone, config_error, sandbox_error, "
                                "internal_error", ["model", "outcome"], registry=r)
        self.routed = Counter("complexitynet_routed", "Routing decisions, by chosen model", ["model"], registry=r)
        self.escalations = Counter("complexitynet_escalations", "Requests moved up the ladder, by the model "
                                   "that failed and why", ["model", "reason"], registry=r)
        self.rejected = Counter("complexitynet_rejected", "Requests refused before forwarding, by reason",
                                ["reason"], registry=r)
        self.verifications = Counter("complexitynet_verifications", "Answers judged against request tests",
                                     ["model", "status"], registry=r)
        self.routing_seconds = Histogram("complexitynet_routing_seconds", "Arrival to routing decision "
                                         "(classifier queueing and inference included)", buckets=LATENCY_BUCKETS,
                                         registry=r)
        self.upstream_seconds = Histogram("complexitynet_upstream_seconds", "Upstream call, first byte for "
                                          "streams, by model", ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("complexitynet_tokens", "Tokens reported by upstream usage", ["model", "kind"],
                              registry=r)
        self.spend = Counter("complexitynet_spend_usd", "Estimated spend: usage x ladder prices", ["model"],
                             registry=r)
        # labels() takes a lock and re-checks its arguments on every call; the label values here come
        # from a small fixed set, so each metric's children are looked up once and kept
        for metric in (self.requests, self.routed, self.escalations, self.rejected, self.verifications,
                       self.upstream_seconds, self.tokens, self.spend):
            metric.labels = functools.cache(metric.labels)

    def usage(self, model: str, usage: dict | None, price_in: float, price_out: float) -> None:
        """Count tokens and estimated spend from an upstream `usage` object (absent: nothing to count)."""
        if not isinstance(usage, dict):
            return
        prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        self.tokens.labels(model, "prompt").inc(prompt)
        self.tokens.labels(model, "completion").inc(completion)
        self.spend.labels(model).inc((prompt * price_in + completion * price_out) / 1e6)

    def render(self) -> bytes:
        """The text exposition: this process's counters, or every worker's summed when the router runs
        in several processes (PROMETHEUS_MULTIPROC_DIR, set by `serve`)."""
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
