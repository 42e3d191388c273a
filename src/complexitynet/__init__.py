"""ComplexityNet: learn the cheapest LLM that reliably solves a coding prompt, and route to it."""

__version__ = "0.1.0"
