"""LLM providers: where a ladder model's completions come from (recorded now; live ones plug in here)."""
