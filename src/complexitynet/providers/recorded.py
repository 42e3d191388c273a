"""Recorded completions: earlier runs of real models, replayed as the ladder's samples.

Each built-in source has a small adapter that turns its own field names and types into
`RawCompletion`s; `jsonl` is the documented generic format for completions made elsewhere:
one JSON object per line with `task_id` (str), `model` (str), `trial` (int >= 0), `completion`
(str) and optionally `prompt_tokens`, `completion_tokens` (int), `latency_s` (float) and
`source_pass` (bool: the source's own verdict, compared with ours like the built-in sources' flags).
"""

from __future__ import annotations

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


def _get(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], path: Path, lineno: int) -> Any:
    if key not in obj:
        raise DataError(f"{path}:{lineno}: missing field '{key}'; the file is not in the expected format")
    value = obj[key]
    # bool is an int subclass; an int field must not accept True/False.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise DataError(f"{path}:{lineno}: field '{key}' should be {kind}, got {type(value).__name__}")
    return value


def _list_of(obj: dict, key: str, kind: type, n: int, path: Path, lineno: int) -> list | None:
    if key not in obj:
        return None
    value = _get(obj, key, list, path, lineno)
    if len(value) != n or not all(isinstance(v, kind) and not (kind is int and isinstance(v, bool))
                                  for v in value):
        raise DataError(f"{path}:{lineno}: field '{key}' should be a list of {n} {kind.__name__}")
    return value


def read_complexitynet(path: Path, field: str) -> Iterator[RawCompletion]:
    """The ComplexityNet paper's MBPP runs: `method2_<field>_output` and a boolean `_success` flag."""
    for lineno, obj in iter_json_lines(path):
        task = _get(obj, "task_id", int, path, lineno)
        # The authors stored null where generation produced nothing (69 Code Llama rows); they
        # scored those as failures, and so do we: an empty completion, which cannot pass.
        output = _get(obj, f"method2_{field}_output", (str, type(None)), path, lineno)
        yield RawCompletion(
            task_id=f"MBPP/{task}",
            trial=0,
            completion=output or "",
            source_pass=_get(obj, f"method2_{field}_success", bool, path, lineno),
        )


def read_adaptivellm(path: Path, _field: str) -> Iterator[RawCompletion]:
    """AdaptiveLLM's HumanEval runs: five responses per problem, token counts where recorded."""
    for lineno, obj in iter_json_lines(path):
        key = "responses" if "responses" in obj else "response"
        responses = _get(obj, key, list, path, lineno)
        n = len(responses)
        texts = _list_of(obj, key, str, n, path, lineno) or []
        results = _list_of(obj, "results", bool, n, path, lineno)
        out_key = "output_token_counts" if "output_token_counts" in obj else "response_tokens"
        out_tokens = _list_of(obj, out_key, int, n, path, lineno)
        in_tokens = _get(obj, "input_token_count", int, path, lineno) if "input_token_count" in obj else None
        task_id = _get(obj, "id", str, path, lineno)
        prompt = _get(obj, "prompt", str, path, lineno)
        for trial, text in enumerate(texts):
            yield RawCompletion(
                task_id=task_id,
                trial=trial,
                completion=text,
                prompt_tokens=in_tokens,
                completion_tokens=out_tokens[trial] if out_tokens else None,
                source_pass=results[trial] if results else None,
                source_prompt=prompt,
            )


class GenericCompletion(pydantic.BaseModel):
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
        try:
            row = GenericCompletion.model_validate(obj)
        except pydantic.ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise DataError(f"{path}:{lineno}: field '{where}': {err['msg']} (see the generic format)") from None
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
