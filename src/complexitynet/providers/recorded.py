"""Recorded completions: earlier runs of real models, replayed as the ladder's samples.

Each built-in source has a small adapter that turns its own field names and types into
`RawCompletion`s; `jsonl` is the documented generic format for completions made elsewhere:
one JSON object per line with `task_id` (str), `model` (str), `trial` (int >= 0), `completion`
(str) and optionally `prompt_tokens`, `completion_tokens` (int), `latency_s` (float) and
`source_pass` (bool: the source's own verdict, compared with ours like the built-in sources' flags).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pydantic

from complexitynet.errors import DataError
from complexitynet.io import iter_json_lines
from complexitynet.providers.base import Provider, RawCompletion, Request
from complexitynet.sources import RECORDINGS, source_path

if TYPE_CHECKING:
    from complexitynet.schemas import Problem

__all__ = ["READERS", "RawCompletion", "RecordedProvider", "read_generic"]


Reader = Callable[[Path, str], Iterator[RawCompletion]]
IMPORTS = Path("imports")  # where users' own completion files live: a DVC dependency of `sample`
log = logging.getLogger(__name__)


def _row(model: type[pydantic.BaseModel], obj: Any, path: Path, lineno: int) -> Any:
    """One line of a recorded file, validated by `model`; a bad row is an error naming the file, the
    line and the field."""
    try:
        return model.model_validate(obj)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(the row)"
        raise DataError(f"{path}:{lineno}: field '{where}': {err['msg']} (the file is not in {model.__doc__})") from None


_STRICT = pydantic.ConfigDict(strict=True, extra="ignore")  # int is not bool, str is not a number


@functools.cache
def _complexitynet_row(field: str) -> type[pydantic.BaseModel]:
    return pydantic.create_model(
        f"ComplexityNetRow_{field}", __config__=_STRICT,
        __doc__="the ComplexityNet repository's label.jsonl format",
        task_id=(int, ...),
        # The authors stored null where generation produced nothing (69 Code Llama rows); they scored
        # those as failures, and so do we: an empty completion, which cannot pass.
        **{f"method2_{field}_output": (str | None, ...), f"method2_{field}_success": (bool, ...)})


def read_complexitynet(path: Path, field: str) -> Iterator[RawCompletion]:
    """The ComplexityNet paper's MBPP runs: `method2_<field>_output` and a boolean `_success` flag."""
    model = _complexitynet_row(field)
    for lineno, obj in iter_json_lines(path):
        row = _row(model, obj, path, lineno)
        yield RawCompletion(task_id=f"MBPP/{row.task_id}", trial=0,
                            completion=getattr(row, f"method2_{field}_output") or "",
                            source_pass=getattr(row, f"method2_{field}_success"))


class AdaptiveLLMRow(pydantic.BaseModel):
    """AdaptiveLLM's results format"""

    model_config = _STRICT
    id: str
    prompt: str
    responses: list[str] = pydantic.Field(validation_alias=pydantic.AliasChoices("responses", "response"))
    results: list[bool] | None = None
    output_tokens: list[int] | None = pydantic.Field(
        None, validation_alias=pydantic.AliasChoices("output_token_counts", "response_tokens"))
    input_token_count: int | None = None

    @pydantic.model_validator(mode="after")
    def _one_per_response(self) -> AdaptiveLLMRow:
        for name in ("results", "output_tokens"):
            value = getattr(self, name)
            if value is not None and len(value) != len(self.responses):
                raise ValueError(f"{name} has {len(value)} entries for {len(self.responses)} responses")
        return self


def read_adaptivellm(path: Path, _field: str) -> Iterator[RawCompletion]:
    """AdaptiveLLM's HumanEval runs: five responses per problem, token counts where recorded."""
    for lineno, obj in iter_json_lines(path):
        row = _row(AdaptiveLLMRow, obj, path, lineno)
        for trial, text in enumerate(row.responses):
            yield RawCompletion(
                task_id=row.id, trial=trial, completion=text, prompt_tokens=row.input_token_count,
                completion_tokens=row.output_tokens[trial] if row.output_tokens else None,
                source_pass=row.results[trial] if row.results else None, source_prompt=row.prompt)


class GenericCompletion(pydantic.BaseModel):
    """the generic import format (docs/configuration.md, "Bring your own models")"""

    model_config = pydantic.ConfigDict(extra="forbid")
    task_id: str
    model: str
    trial: int = pydantic.Field(ge=0)
    completion: str
    prompt_tokens: int | None = pydantic.Field(None, ge=0)
    completion_tokens: int | None = pydantic.Field(None, ge=0)
    latency_s: float | None = pydantic.Field(None, ge=0)
    source_pass: bool | None = None  # the source's own verdict, if it judged the completion (compared, not trusted)


def warn_outside_imports(path: Path, what: str) -> None:
    if not path.resolve().is_relative_to(IMPORTS.resolve()):
        log.warning("%s: outside %s/, so DVC does not see it change; move it there to have `dvc repro` rerun "
                    "`%s` when it does", path, IMPORTS, what)


def read_generic(path: Path, model: str) -> Iterator[RawCompletion]:
    """The generic import format (module docstring); rows of other models are skipped."""
    if not path.exists():
        raise DataError(f"{path}: recorded completions file not found (ladder `recorded.path`)")
    for lineno, obj in iter_json_lines(path):
        row = _row(GenericCompletion, obj, path, lineno)
        if row.model == model:
            yield RawCompletion(
                task_id=row.task_id, trial=row.trial, completion=row.completion,
                prompt_tokens=row.prompt_tokens, completion_tokens=row.completion_tokens,
                latency_s=row.latency_s, source_pass=row.source_pass,
            )


READERS: dict[str, Reader] = {"complexitynet": read_complexitynet, "adaptivellm": read_adaptivellm}


class RecordedProvider(Provider):
    """Replays a recorded source: the trials it holds are the requests, and it answers them from disk."""

    live: ClassVar[bool] = False

    def source(self) -> tuple[Path, Iterable[RawCompletion]]:
        """The file this model replays, and its raw completions."""
        spec = self.spec.recorded
        assert spec is not None  # guaranteed by config validation
        if spec.source == "jsonl":
            path = Path(spec.path or "")
            warn_outside_imports(path, "sample")
            return path, read_generic(path, spec.model)
        recording = RECORDINGS[spec.source]
        file_key, field = recording.models[spec.model]
        path = source_path(self.sources_dir, file_key)
        return path, READERS[recording.format](path, field)

    def task_ids(self) -> set[str]:
        """The prompts this recording has at least one completion for."""
        return {raw.task_id for raw in self.source()[1]}

    def completions(self, problems: Mapping[str, Problem]) -> list[RawCompletion]:
        """Every recorded completion for the given problems, one per (task, trial). Tasks that are not
        in `problems` are skipped for built-in sources; in a user's jsonl file they are an error."""
        path, raws = self.source()
        name = self.spec.name
        strict = self.spec.recorded is not None and self.spec.recorded.source == "jsonl"
        out: dict[tuple[str, int], RawCompletion] = {}
        for raw in raws:
            if raw.task_id not in problems:
                if strict:
                    raise DataError(f"{path}: task_id '{raw.task_id}' (model '{name}') is not in "
                                    "data/problems.jsonl; check the dataset in params (base.dataset)")
                continue
            if (raw.task_id, raw.trial) in out:
                raise DataError(f"{path}: task '{raw.task_id}' trial {raw.trial} appears twice for model "
                                f"'{name}'; keep one row per (task_id, trial)")
            out[raw.task_id, raw.trial] = raw
        return list(out.values())

    def requests(self, problems: Mapping[str, Problem], k: int) -> list[Request]:
        """The trials the source holds (k does not apply: the recording decided it)."""
        return [Request(r.task_id, r.trial, problems[r.task_id].prompt) for r in self.completions(problems)]

    async def complete(self, batch: list[Request]) -> list[RawCompletion]:
        path, raws = self.source()
        index = {(r.task_id, r.trial): r for r in raws}
        missing = [f"{r.task_id}#{r.trial}" for r in batch if (r.task_id, r.trial) not in index]
        if missing:
            raise DataError(f"{path}: no recorded completion for {missing[:5]} (model '{self.spec.name}')")
        return [index[r.task_id, r.trial] for r in batch]
