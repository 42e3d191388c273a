"""LLM providers: where a ladder model's completions come from.

`PROVIDERS` maps the `provider:` of a ladder rung in params.yaml to its class. Every class
implements `Provider.complete` (see `base.py`); heavy libraries (openai, torch, transformers) are
imported only when a provider first needs them, so importing this package stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from complexitynet.errors import ConfigError
from complexitynet.providers.base import LiveProvider, Provider
from complexitynet.providers.hf_local import HFLocalProvider
from complexitynet.providers.openai_compat import OpenAIProvider
from complexitynet.providers.recorded import RecordedProvider

if TYPE_CHECKING:
    from complexitynet.config import ModelSpec

PROVIDERS: dict[str, type[Provider]] = {
    "recorded": RecordedProvider,
    "openai": OpenAIProvider,
    "hf-local": HFLocalProvider,
}

__all__ = ["PROVIDERS", "LiveProvider", "Provider", "make_provider"]


def make_provider(spec: ModelSpec, sources_dir: Path) -> Provider:
    """The provider for one ladder rung."""
    try:
        cls = PROVIDERS[spec.provider]
    except KeyError:
        raise ConfigError(f"model '{spec.name}': unknown provider '{spec.provider}'; "
                          f"available: {sorted(PROVIDERS)}") from None
    return cls(spec, sources_dir)
