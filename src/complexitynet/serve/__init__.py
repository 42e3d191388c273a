"""The router service: `complexitynet serve` (an OpenAI-compatible endpoint that picks the model per
request) and the pieces it is made of:

- workers.py: serving in one process or several (the supervisor);
- app.py: the HTTP layer (aiohttp); router.py: the Router (decide, forward up the ladder, escalate),
  and `build_router`, which does everything that can fail on bad configuration before a port opens;
- decide.py: the decision for one prompt; classifiers.py: loading what decides;
- upstream.py, batcher.py, verify.py, sse.py, metrics.py: upstream calls, micro-batching, the
  sandbox for requests that carry tests, streaming, Prometheus metrics.
"""
