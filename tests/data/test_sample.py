import json

import pytest

from complexitynet.config import Price, parse_rung
from complexitynet.errors import DataError
from complexitynet.prepare import read_problems
from complexitynet.sample import cost_usd, estimate_tokens, sample_recorded


@pytest.fixture(scope="module")
def mbpp_problems(sources_dir, params):
    probs = read_problems("mbpp", sources_dir, params.prepare.templates["mbpp"], params.prepare.split.fractions, 1)
    return {p.task_id: p for p in probs}


def model(name="m", source="complexitynet-mbpp", source_model="gpt-4-1106-preview", path=None):
    return parse_rung({
        "name": name, "provider": "recorded", "price": {"input": 10, "output": 30},
        "recorded": {"source": source, "model": source_model, "path": path},
    })


def test_cost_and_token_estimate():
    assert cost_usd(Price(input=10, output=30), 1_000_000, 0) == 10.0
    assert cost_usd(Price(input=10, output=30), 100, 10) == pytest.approx(0.0013)
    assert estimate_tokens("", 3.4) == 0 and estimate_tokens("abcd", 3.4) == 2


def test_recorded_mbpp_gpt4(sources_dir, mbpp_problems):
    samples = sample_recorded(model(), mbpp_problems, sources_dir, 3.4)
    assert len(samples) == 973 and "MBPP/440" not in {s.task_id for s in samples}  # absent in the source
    s = samples[0]
    assert (s.task_id, s.trial, s.model, s.source) == ("MBPP/1", 0, "m", "recorded")
    assert s.tokens_estimated and s.prompt_tokens == estimate_tokens(mbpp_problems["MBPP/1"].prompt, 3.4)
    assert s.cost_usd == cost_usd(Price(input=10, output=30), s.prompt_tokens, s.completion_tokens)
    assert s.source_pass is True and s.code.startswith("def min_cost(")


def test_recorded_codellama_nulls_become_empty_completions(sources_dir, mbpp_problems):
    samples = sample_recorded(model(source_model="codellama-7b-python"), mbpp_problems, sources_dir, 3.4)
    assert len(samples) == 974
    assert sum(not s.completion for s in samples) == 69


def test_recorded_humaneval_token_counts(sources_dir, params):
    probs = read_problems("humaneval", sources_dir, params.prepare.templates["humaneval"], params.prepare.split.fractions, 1)
    problems = {p.task_id: p for p in probs}
    llama = sample_recorded(model(source="adaptivellm-humaneval", source_model="CodeLlama-7b-Instruct-hf"),
                            problems, sources_dir, 3.4)
    assert len(llama) == 820 and {s.trial for s in llama} == {0, 1, 2, 3, 4}
    assert not any(s.tokens_estimated for s in llama)
    assert (llama[0].prompt_tokens, llama[0].completion_tokens) == (204, 195)  # as the source recorded them
    gpt4o = sample_recorded(model(source="adaptivellm-humaneval", source_model="gpt-4o"), problems, sources_dir, 3.4)
    assert all(s.tokens_estimated for s in gpt4o) and gpt4o[0].completion_tokens == 196


def write_generic(tmp_path, rows):
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_generic_jsonl_import(tmp_path, mbpp_problems):
    path = write_generic(tmp_path, [
        {"task_id": "MBPP/2", "model": "mine", "trial": 1, "completion": "```python\ndef f(): pass\n```",
         "prompt_tokens": 10, "completion_tokens": 5},
        {"task_id": "MBPP/2", "model": "mine", "trial": 0, "completion": "def f(): pass"},
        {"task_id": "MBPP/3", "model": "other", "trial": 0, "completion": "x"},
    ])
    samples = sample_recorded(model(source="jsonl", source_model="mine", path=path), mbpp_problems, tmp_path, 3.4)
    assert [(s.task_id, s.trial, s.tokens_estimated) for s in samples] == [("MBPP/2", 0, True), ("MBPP/2", 1, False)]
    assert samples[1].code == "def f(): pass\n" and samples[1].cost_usd == cost_usd(Price(input=10, output=30), 10, 5)


@pytest.mark.parametrize("rows, message", [
    ([{"task_id": "MBPP/9999", "model": "mine", "trial": 0, "completion": "x"}], "not in data/problems.jsonl"),
    ([{"task_id": "MBPP/2", "model": "mine", "trial": 0, "completion": "x"}] * 2, "appears twice"),
    ([{"task_id": "MBPP/2", "model": "mine", "trial": -1, "completion": "x"}], r"mine.jsonl:1: field 'trial'"),
    ([{"task_id": "MBPP/2", "model": "mine", "completion": "x"}], r"mine.jsonl:1: field 'trial'"),
])
def test_generic_jsonl_errors(tmp_path, mbpp_problems, rows, message):
    path = write_generic(tmp_path, rows)
    with pytest.raises(DataError, match=message):
        sample_recorded(model(source="jsonl", source_model="mine", path=path), mbpp_problems, tmp_path, 3.4)


@pytest.mark.parametrize("reader, row, message", [
    ("read_complexitynet", {"task_id": "2", "method2_gpt4_output": "x", "method2_gpt4_success": True},
     r"bad.jsonl:1: field 'task_id': Input should be a valid integer \(the file is not in the ComplexityNet"),
    ("read_complexitynet", {"task_id": 2, "method2_gpt4_output": "x", "method2_gpt4_success": 1},
     r"bad.jsonl:1: field 'method2_gpt4_success': Input should be a valid boolean"),
    ("read_complexitynet", {"task_id": 2, "method2_gpt4_success": True}, r"field 'method2_gpt4_output': Field required"),
    ("read_adaptivellm", {"id": "HumanEval/0", "prompt": "p", "responses": ["a", "b"], "results": [True]},
     r"bad.jsonl:1: field '\(the row\)': Value error, results has 1 entries for 2 responses"),
    ("read_adaptivellm", {"id": "HumanEval/0", "prompt": "p", "response": ["a"], "response_tokens": [True]},
     r"field 'response_tokens.0': Input should be a valid integer"),
])
def test_recorded_rows_are_validated_naming_file_line_and_field(tmp_path, reader, row, message):
    from complexitynet.providers import recorded

    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match=message):
        list(getattr(recorded, reader)(path, "gpt4"))


def test_every_built_in_recording_reads(sources_dir):
    from complexitynet.providers.recorded import READERS
    from complexitynet.sources import RECORDINGS, source_path

    total = 0
    for recording in RECORDINGS.values():
        for file_key, field in recording.models.values():
            total += sum(1 for _ in READERS[recording.format](source_path(sources_dir, file_key), field))
    assert total == 11120
