from pathlib import Path

import pytest
import yaml

from complexitynet.config import load_params
from complexitynet.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def write_params(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    mutate(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def error_for(tmp_path: Path, mutate) -> str:
    with pytest.raises(ConfigError) as info:
        load_params(write_params(tmp_path, mutate))
    return str(info.value)


def test_default_params_are_valid(params):
    assert params.base.dataset == "mbpp"
    assert [m.name for m in params.ladder] == ["codellama-7b-python", "gpt-3.5-turbo-1106", "gpt-4-1106-preview"]
    assert params.ladder[-1].price.output == 30.0


def test_humaneval_switch_picks_its_ladder():
    params = load_params(REPO / "params.yaml", overrides={"base.dataset": "humaneval"})
    assert params.ladder_name == "humaneval"
    assert [m.name for m in params.ladder] == ["codellama-7b-instruct", "gpt-3.5-turbo", "gpt-4o"]


def test_unknown_key_is_named(tmp_path):
    msg = error_for(tmp_path, lambda p: p["sample"].update(chars_per_tokn=3))
    assert "sample.chars_per_tokn: unknown key" in msg


def test_unknown_section_is_named(tmp_path):
    msg = error_for(tmp_path, lambda p: p.update(trian={"epochs": 1}))
    assert "trian: unknown key" in msg


def test_wrong_type_is_named(tmp_path):
    msg = error_for(tmp_path, lambda p: p["ladders"]["mbpp"][1]["price"].update(input="cheap"))
    assert "ladders.mbpp.1.price.input" in msg and "valid number" in msg


def test_missing_ladder_is_named(tmp_path):
    msg = error_for(tmp_path, lambda p: p["base"].update(ladder="nope"))
    assert "base.ladder: no ladder named 'nope'" in msg and "humaneval-open" in msg


def test_unknown_recorded_model_lists_choices(tmp_path):
    msg = error_for(tmp_path, lambda p: p["ladders"]["mbpp"][0]["recorded"].update(model="gpt-5"))
    assert "ladders.mbpp.0" in msg and "no model 'gpt-5'" in msg and "gpt-4-1106-preview" in msg


def test_unknown_recorded_source_lists_choices(tmp_path):
    msg = error_for(tmp_path, lambda p: p["ladders"]["mbpp"][0]["recorded"].update(source="mine"))
    assert "unknown recorded source 'mine'" in msg and "complexitynet-mbpp" in msg


def test_ladder_for_other_dataset_is_refused(tmp_path):
    msg = error_for(tmp_path, lambda p: p["base"].update(ladder="humaneval"))
    assert "holds humaneval completions" in msg and "base.dataset is 'mbpp'" in msg


def test_duplicate_model_names_refused(tmp_path):
    def dup(p):
        p["ladders"]["mbpp"][1]["name"] = p["ladders"]["mbpp"][0]["name"]
    assert "must be unique" in error_for(tmp_path, dup)


def test_template_with_unknown_field(tmp_path):
    msg = error_for(tmp_path, lambda p: p["prepare"]["templates"].update(mbpp="{text} {solution}"))
    assert "templates.mbpp" in msg and "solution" in msg


def test_splits_must_sum_to_one(tmp_path):
    msg = error_for(tmp_path, lambda p: p["prepare"]["split"].update(fractions={"train": 0.5, "validation": 0.2,
                                                                                "test": 0.2}))
    assert "prepare.split.fractions" in msg and "sum to 1" in msg


def test_split_file_goes_with_method_file(tmp_path):
    msg = error_for(tmp_path, lambda p: p["prepare"]["split"].update(method="file"))
    assert "prepare.split" in msg and "method is `file`" in msg


def test_jsonl_source_needs_path(tmp_path):
    def generic(p):
        p["ladders"]["mbpp"][0]["recorded"] = {"source": "jsonl", "model": "mine"}
    assert "needs `path:`" in error_for(tmp_path, generic)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_cross_validation_needs_two_folds(tmp_path):
    assert "cv_folds: 0 (off) or at least 2" in error_for(tmp_path, lambda p: p["evaluate"].update(cv_folds=1))


def test_every_command_line_option_says_what_it_is():
    import argparse

    from complexitynet.cli import build_parser

    parser = build_parser()
    commands = [parser] + [p for a in parser._actions if isinstance(a, argparse._SubParsersAction)
                           for p in a.choices.values()]
    missing = [f"{cmd.prog} {'/'.join(a.option_strings)}" for cmd in commands for a in cmd._actions
               if a.option_strings and a.dest != "help" and not a.help]
    assert missing == []
