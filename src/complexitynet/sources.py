"""The public sources ComplexityNet builds on: where each file lives, and its sha256.

Every file is fetched from a mirror directory when one holds it (air-gapped machines, CI) and
otherwise downloaded from its pinned public URL; either way its sha256 must match this table.
The mirror layout is the `relpath` column, which is also where `fetch` puts the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

_RAW = "https://raw.githubusercontent.com"
_COMPLEXITYNET = f"{_RAW}/BaeHenryS/ComplexityNet/fb098ccf9138ae349d5ac5c388d3299bdac4415e"
_ADAPTIVELLM = f"{_RAW}/cjhCoder7/AdaptiveLLM/32dd6cf29b5adb77afb6e752bef82db846c7928c"
_HUMANEVAL = f"{_RAW}/openai/human-eval/6d43fb980f9fee3c892a914eda09951f772ad10d"
_EVALPLUS = f"{_RAW}/evalplus/evalplus/767efcc368e0ef16568bba4ee2f1b005e849e8a6"


@dataclass(frozen=True)
class SourceFile:
    """One public file: its place under the data root, its URL and its checksum."""

    relpath: str
    url: str
    sha256: str
    license: str


_OPEN_MODELS = {
    "CodeLlama-7b-Instruct-hf": "08b81b32345bab85ee06f048169cc78a0d15de399ea8a54b7c7491a3f116d5b5",
    "Codestral-22B-v0.1": "b5508f7747ffacd4b3cb015f8f0362f9ccdd6e4c5616f900a0aaeaffb5d1477a",
    "Qwen2.5-Coder-1.5B-Instruct": "be99282e55be3df0dd4e2bbae18042ff3e3c4c52a5db50c422e44199576deac3",
    "Qwen2.5-Coder-32B-Instruct": "a79fc3627fbb63b67eae88df8515213761da7a75a0e8fdf5bf0a3eb33ccc372b",
    "Yi-Coder-1.5B-Chat": "29a7d485c46dca34256b004362996a9fa086fe35d667d3e065b96bd2b8df466d",
    "deepseek-coder-33b-instruct": "3ae8ca92b02b3a0ab7dcea42bc3517829797290ff6e6e27d749c9c917f1bf919",
    "deepseek-coder-v2-lite-instruct": "fbba2e3940fef80875d8cd465149bf72e5f291847fd5240834b3f48b273965d3",
    "starcoder2-15b-instruct-v0.1": "d4a6cc9e8ecdd584cea39f4f937770de3b5312a33967a890b624caf29bce36ac",
}

FILES: dict[str, SourceFile] = {
    "mbpp": SourceFile(
        "mbpp/mbpp.jsonl",
        f"{_COMPLEXITYNET}/dataset/mbpp.jsonl",
        "ccf64ceae9c5403bf50a044cb6d505bfd2a2963ee58338ba268fd65beab92a9f",
        "CC-BY-4.0 (Austin et al. 2021)",
    ),
    "humaneval": SourceFile(
        "humaneval/HumanEval.jsonl.gz",
        f"{_HUMANEVAL}/data/HumanEval.jsonl.gz",
        "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef",
        "MIT (Chen et al. 2021)",
    ),
    # MBPP+ (EvalPlus): many more inputs for 399 MBPP problems, the hidden tests that judge MBPP samples.
    "mbppplus": SourceFile(
        "mbppplus/MbppPlus.jsonl",
        f"{_EVALPLUS}/MbppPlus.jsonl",
        "08405a4e8764a4941cfe0945d25a956355a0454f364ea902c4020a44e7057973",
        "Apache-2.0 (Liu et al. 2023, EvalPlus)",
    ),
    # The ComplexityNet paper's own recorded completions on MBPP (one per model and problem).
    "complexitynet-gpt": SourceFile(
        "recorded/mbpp-complexitynet/label.jsonl",
        f"{_COMPLEXITYNET}/dataset/label.jsonl",
        "6c1cb4552681e17b6db382c63c8d97490aa272fa798623a595989453f41e1308",
        "as published by the ComplexityNet authors",
    ),
    "complexitynet-llama": SourceFile(
        "recorded/mbpp-complexitynet/mbpp_label_llama.jsonl",
        f"{_COMPLEXITYNET}/dataset/mbpp_label_llama.jsonl",
        "7871e416495c7f98b815e99ac8ca17a67e7115f81d4f55cfe7f8c7fafa36a08c",
        "as published by the ComplexityNet authors",
    ),
    # The authors' 5-trial success COUNTS for GPT-4 / GPT-3.5 on task_ids 2-285 (comparison only).
    "complexitynet-refined": SourceFile(
        "recorded/mbpp-complexitynet/mbpp_label_refined.jsonl",
        f"{_COMPLEXITYNET}/dataset/mbpp_label_refined.jsonl",
        "7e4edf3f223cbeaef7e6e3f835fc5cf8dff3d1cb022fa07d582ffca8c65a6ca0",
        "as published by the ComplexityNet authors",
    ),
    "complexitynet-refined-250": SourceFile(
        "recorded/mbpp-complexitynet/mbpp_label_refined_250.jsonl",
        f"{_COMPLEXITYNET}/dataset/mbpp_label_refined_250.jsonl",
        "5e28869f1b3988ec64f8caa2474431f19479bdf11ee0a055bb518b0b652572c2",
        "as published by the ComplexityNet authors",
    ),
}
# The AdaptiveLLM HumanEval ladder: five completions per problem and model. Its Code Llama 7B rung is
# the same file (same sha256) as the open model "CodeLlama-7b-Instruct-hf" below, so it is listed once.
for _name, _sha in {
    "GPT3.5": "7f1de5c6a5fd891af0c6c262662f6ecfb490a75219d0d4eec2e6157b2773ef71",
    "GPT4o": "8b3e62dcbd50ad2a407a4ca1867c10b5c0183814ff2542b92a12e8209906f973",
}.items():
    _file = f"{_name}-output-HumanEval.jsonl"
    FILES[f"adaptivellm-{_name.lower()}"] = SourceFile(
        f"recorded/humaneval-adaptivellm/{_file}", f"{_ADAPTIVELLM}/Baseline/{_file}", _sha,
        "as published by the AdaptiveLLM authors",
    )
for _name, _sha in _OPEN_MODELS.items():
    _file = f"{_name}-output-HumanEval.jsonl"
    FILES[f"adaptivellm-{_name.lower()}"] = SourceFile(
        f"recorded/humaneval-adaptivellm/open-models/{_file}", f"{_ADAPTIVELLM}/Result/{_file}", _sha,
        "as published by the AdaptiveLLM authors",
    )


_VERIFIED: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, once per process


def source_path(sources_dir: Path, name: str) -> Path:
    """The path of source `name` under `sources_dir`, after checking its sha256 against the pinned
    one (once per file and run): a file edited or replaced by hand is refused, never used silently."""
    from complexitynet.errors import DataError
    from complexitynet.io import sha256_file

    spec = FILES[name]
    path = sources_dir / spec.relpath
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise DataError(f"{path}: missing; run `complexitynet fetch` (or `dvc repro fetch`)") from None
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _VERIFIED:
        _VERIFIED[key] = sha256_file(path)
    if _VERIFIED[key] != spec.sha256:
        raise DataError(f"{path}: sha256 {_VERIFIED[key][:12]}... is not the pinned {spec.sha256[:12]}... of "
                        f"{name}; the file was changed after it was fetched. Delete it and run "
                        "`complexitynet fetch` to get the pinned file back")
    return path


@dataclass(frozen=True)
class Recording:
    """A built-in recorded source: which dataset its completions answer, its models (name -> the
    file key in FILES and the field the file's adapter reads), and the adapter's format (the reader
    in providers/recorded.py)."""

    dataset: str
    models: dict[str, tuple[str, str]]
    format: str


_ADAPTIVE_OPEN = [
    "CodeLlama-7b-Instruct-hf", "Codestral-22B-v0.1", "Qwen2.5-Coder-1.5B-Instruct",
    "Qwen2.5-Coder-32B-Instruct", "Yi-Coder-1.5B-Chat", "deepseek-coder-33b-instruct",
    "deepseek-coder-v2-lite-instruct", "starcoder2-15b-instruct-v0.1",
]

RECORDINGS: dict[str, Recording] = {
    "complexitynet-mbpp": Recording(
        dataset="mbpp",
        models={
            "codellama-7b-python": ("complexitynet-llama", "llama"),
            "gpt-3.5-turbo-1106": ("complexitynet-gpt", "gpt3_5"),
            "gpt-4-1106-preview": ("complexitynet-gpt", "gpt4"),
        },
        format="complexitynet",
    ),
    "adaptivellm-humaneval": Recording(
        dataset="humaneval",
        models={
            "gpt-3.5-turbo": ("adaptivellm-gpt3.5", ""),
            "gpt-4o": ("adaptivellm-gpt4o", ""),
            **{name: (f"adaptivellm-{name.lower()}", "") for name in _ADAPTIVE_OPEN},
        },
        format="adaptivellm",
    ),
}

