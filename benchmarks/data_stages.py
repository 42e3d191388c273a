"""Benchmark: prepare + sample (recorded) on the embedded default, against an anchor measured in
the same process: json.loads of every source line plus ONE ast.parse of every problem's reference
and every recorded completion, the least work any extractor that checks syntax must do.

The ratio says how much validation, code extraction (which may parse a completion several times
while trimming prose), costing and deterministic writing add on top of that floor.
Run from the repo root after `make run` (needs data/sources).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from complexitynet.config import load_params
from complexitynet.extract import parse_quietly
from complexitynet.io import write_jsonl
from complexitynet.prepare import prepare
from complexitynet.sample import recorded_completions, sample_recorded, write_samples
from complexitynet.schemas import task_key
from complexitynet.sources import FILES

TARGET = 2.0  # the stages may cost at most 2x the one-parse-per-completion floor
SOURCES = Path("data/sources")


def anchor(files: list[Path]) -> None:
    for path in files:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                for value in row.values():
                    if isinstance(value, str) and len(value) > 40:
                        parse_quietly(value)


def stages(params, out: Path) -> None:
    dataset = params.base.dataset
    problems = prepare(dataset, SOURCES, params.prepare.templates[dataset], params.prepare.split.fractions,
                       params.base.seed)
    write_jsonl(out / "problems.jsonl", problems, key=lambda p: task_key(p.task_id))
    by_id = {p.task_id: p for p in problems}
    write_samples(out / "samples", {m.name: sample_recorded(m, by_id, SOURCES, params.sample.chars_per_token)
                                    for m in params.ladder})


def best_of(fn, repeats: int = 7) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    params = load_params("params.yaml")
    if not (SOURCES / FILES["mbpp"].relpath).exists():
        print("data/sources is missing: run `make run` (or `complexitynet fetch`) first", file=sys.stderr)
        return 2
    inputs = sorted({SOURCES / FILES[params.base.dataset].relpath}
                    | {recorded_completions(m, SOURCES)[0] for m in params.ladder})
    with tempfile.TemporaryDirectory() as tmp:
        t_anchor = best_of(lambda: anchor(inputs))
        t_stages = best_of(lambda: stages(params, Path(tmp)))
    ratio = t_stages / t_anchor
    print(f"inputs: {len(inputs)} files, {sum(p.stat().st_size for p in inputs) / 1e6:.1f} MB "
          f"(dataset {params.base.dataset}, ladder {params.ladder_name})")
    print(f"anchor (json + one parse each): {t_anchor * 1000:.1f} ms   prepare+sample: {t_stages * 1000:.1f} ms")
    print(f"RESULT stages_over_parse_floor={ratio:.2f} target={TARGET} ok={str(ratio <= TARGET).lower()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
