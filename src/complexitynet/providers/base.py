"""The provider interface: one small ABC, one abstract method (`complete`), and the errors it may raise.

A provider turns requests (task, trial, prompt) into `RawCompletion`s. Live providers add what the
sampling engine (`complexitynet.live`) needs to schedule them: how many requests go in one
call, how many calls may be in flight, a requests-per-minute cap, a timeout, a retry policy, and
the identity that, with the prompt and trial, addresses the cache.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from complexitynet.errors import ComplexityNetError

if TYPE_CHECKING:
    from complexitynet.config import ModelSpec, RequestParams
    from complexitynet.schemas import Problem


@dataclass(frozen=True)
class RawCompletion:
    """One completion before code extraction and costing (recorded earlier, or just generated)."""

    task_id: str
    trial: int
    completion: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float | None = None
    source_pass: bool | None = None  # the source's own verdict (not trusted; kept for comparison)
    source_prompt: str | None = None  # the prompt the source actually sent, when it recorded it
    finish_reason: str | None = None  # live: "stop", "length" (cut at max_tokens), ...


@dataclass(frozen=True)
class Request:
    """One trial of one prompt for one model."""

    task_id: str
    trial: int
    prompt: str


class RetryableError(Exception):
    """A failure that may pass on retry (complexitynet.retry decides which: 408/425/429, 5xx, a timeout,
    a dropped connection)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after  # seconds the server asked us to wait, if it said


class BadResponse(RetryableError):
    """The endpoint answered, but not with a usable completion (retried, then reported)."""


class RequestError(Exception):
    """This request was refused and retrying will not help (HTTP 400: e.g. the prompt is too long)."""


class ProviderError(ComplexityNetError):
    """The model cannot be used at all (bad key, unknown model id): the run stops."""


class Provider(ABC):
    """Where one ladder model's completions come from."""

    live: ClassVar[bool] = True

    def __init__(self, spec: ModelSpec, sources_dir: Path) -> None:
        self.spec = spec
        self.sources_dir = sources_dir

    def check(self) -> None:
        """Raise ConfigError for anything knowable before a request is sent (a missing API key)."""

    def requests(self, problems: Mapping[str, Problem], k: int) -> list[Request]:
        """The requests that sample `problems`: k trials of each, in the order of `problems`."""
        return [Request(task_id, trial, problem.prompt) for task_id, problem in problems.items()
                for trial in range(k)]

    @abstractmethod
    async def complete(self, batch: list[Request]) -> list[RawCompletion]:
        """One completion per request, in order. Raise RetryableError, RequestError or ProviderError."""

    async def aclose(self) -> None:
        """Release clients and models."""


class LiveProvider(Provider):
    """A provider that generates now: scheduled, retried and cached by the sampling engine."""

    batch_size: int = 1  # requests per `complete` call
    concurrency: int = 1  # `complete` calls in flight
    rpm: float | None = None  # requests-per-minute cap
    timeout_s: float | None = None  # wall clock of one call
    max_retries: int = 0
    backoff_s: float = 1.0  # first retry delay, doubled per retry (complexitynet.retry.backoff_s)
    batch_api: bool = False  # True: the engine submits through `submit_batch` / `collect_batch` instead

    @property
    @abstractmethod
    def params(self) -> RequestParams:
        """Generation settings; `max_tokens` bounds each request's cost for the budget cap."""

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """What, besides the model's name, prompt and trial, decides the answer (endpoint, model id,
        params): the cache key is a hash of them. Never the API key."""

