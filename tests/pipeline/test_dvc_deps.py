"""dvc.yaml lists, for every stage, exactly the package modules that shape its outputs: the stage
module's import closure (imports inside functions too). A module missing from a stage's deps would
let `dvc repro` call stale outputs up to date; an extra one reruns the stage for nothing. The slow
DVC test (test_dvc.py) edits each shared module in a copy and checks `dvc status` names exactly the
stages listed here."""

import pytest

from tests.project import STAGES, code_closure, dvc_code_deps


@pytest.mark.parametrize("stage", STAGES)
def test_dvc_yaml_lists_exactly_the_code_each_stage_imports(stage):
    closure, listed = code_closure(stage), dvc_code_deps(stage)
    assert not closure - listed, f"dvc.yaml stage '{stage}' misses {sorted(closure - listed)}"
    assert not listed - closure, f"dvc.yaml stage '{stage}' lists code it does not import: {sorted(listed - closure)}"


def test_the_closure_follows_imports_inside_functions():
    assert "src/complexitynet/train.py" in code_closure("evaluate")  # evaluate imports train lazily
    assert "src/complexitynet/serve/app.py" not in code_closure("evaluate")
