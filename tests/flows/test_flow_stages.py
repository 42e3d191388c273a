"""Which stages the flow runs (DVC's status against dvc.lock, in a small DVC repository of two
stages), what it publishes on the top-level run, and the ephemeral server's startup timeout."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import yaml

from complexitynet.config import load_params
from flows import pipeline
from flows.pipeline import Stages
from flows.publish import embed_images, policy_rows, publish

pytestmark = pytest.mark.integration  # DVC in process, a temporary Prefect server
REPO = Path(__file__).resolve().parents[2]
DVC_YAML = {"stages": {
    "one": {"cmd": "complexitynet one", "deps": ["in.txt"], "outs": ["mid.txt"]},
    "two": {"cmd": "complexitynet two", "deps": ["mid.txt"], "outs": ["out.txt"]},
}}


@pytest.fixture()
def dvc_project(tmp_path):
    from dvc.repo import Repo

    Repo.init(str(tmp_path), no_scm=True).close()
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML))
    (tmp_path / "in.txt").write_text("a\n")
    return tmp_path


class Pipeline:
    """The two stages through `Stages`, as the flow runs its seven: `one` writes the number of lines
    of in.txt to mid.txt, `two` copies mid.txt to out.txt."""

    def __init__(self, root: Path, **overrides: object) -> None:
        self.root, self.params_file = root, root / "params.yaml"
        self.params = load_params(self.params_file, overrides or None)
        self.calls: list[str] = []

    def one(self) -> str:
        self.calls.append("one")
        lines = (self.root / "in.txt").read_text().splitlines()
        (self.root / "mid.txt").write_text(f"{len(lines)}\n")
        return "ran"

    def two(self) -> str:
        self.calls.append("two")
        shutil.copy(self.root / "mid.txt", self.root / "out.txt")
        return "ran"

    def run(self) -> Stages:
        stages = Stages(self.root, self.params, self.params_file, logging.getLogger("complexitynet"))
        for stage, work in (("one", self.one), ("two", self.two)):
            outcome = stages.run(stage, work, lambda: "skipped")
            assert outcome == ("ran" if stage in stages.ran else "skipped")
        return stages


def test_a_stage_runs_only_when_dvc_status_finds_it_changed(dvc_project, caplog):
    caplog.set_level(logging.INFO, "complexitynet")
    flow = Pipeline(dvc_project)
    first = flow.run()
    assert (first.ran, first.skipped) == (["one", "two"], [])
    assert "one: ran (not in dvc.lock yet); recorded in dvc.lock" in caplog.text
    assert set(yaml.safe_load((dvc_project / "dvc.lock").read_text())["stages"]) == {"one", "two"}

    caplog.clear()
    again = flow.run()
    assert (again.ran, again.skipped) == ([], ["one", "two"]) and flow.calls == ["one", "two"]
    assert "two: skipped (up to date with dvc.lock)" in caplog.text

    # one's input changes, its output does not: two, recorded against that output, is skipped
    (dvc_project / "in.txt").write_text("b\n")
    caplog.clear()
    third = flow.run()
    assert (third.ran, third.skipped) == (["one"], ["two"])
    assert "one: ran (changed deps: in.txt modified); recorded in dvc.lock" in caplog.text

    (dvc_project / "out.txt").unlink()  # a deleted output makes its stage run again
    fourth = flow.run()
    assert (fourth.ran, fourth.skipped) == (["two"], ["one"])
    assert "two: ran (changed outs: out.txt deleted); recorded in dvc.lock" in caplog.text


def test_every_stage_runs_and_nothing_is_recorded_when_dvc_lock_cannot_describe_the_run(dvc_project, caplog):
    caplog.set_level(logging.INFO, "complexitynet")
    Pipeline(dvc_project).run()
    lock = (dvc_project / "dvc.lock").read_text()
    (dvc_project / "in.txt").write_text("changed\n")

    flow = Pipeline(dvc_project, **{"base.dataset": "humaneval"})
    other = flow.run()
    assert (other.ran, other.skipped, flow.calls) == (["one", "two"], [], ["one", "two"])
    assert "one: ran (params differ from params.yaml (flow parameters): every stage runs)" in caplog.text
    assert (dvc_project / "dvc.lock").read_text() == lock  # dvc.lock describes params.yaml's runs only

    shutil.rmtree(dvc_project / ".dvc")
    plain = Pipeline(dvc_project).run()
    assert plain.ran == ["one", "two"] and "not a DVC repository: every stage runs" in caplog.text


def test_the_policy_table_is_rounded_and_starts_with_the_router():
    rows = policy_rows({
        "always:big": {"pass_rate": 0.5912345, "cost_vs_largest": 1.0, "pgr": 1.0},
        "oracle": {"pass_rate": 0.7, "cost_vs_largest": 0.123456, "pgr": float("nan")},
        "router": {"pass_rate": 0.61234, "cost_vs_largest": 0.44449, "pgr": 0.98765},
    })
    assert rows == [{"policy": "router", "pass_rate": 0.612, "cost_vs_largest": 0.444, "pgr": 0.988},
                    {"policy": "oracle", "pass_rate": 0.7, "cost_vs_largest": 0.123, "pgr": None},
                    {"policy": "always:big", "pass_rate": 0.591, "cost_vs_largest": 1.0, "pgr": 1.0}]


def test_report_images_are_embedded(tmp_path):
    for sub in ("plots", "reports"):
        (tmp_path / sub).mkdir()
    (tmp_path / "plots/frontier.png").write_bytes(b"\x89PNG fake")
    md = "# r\n![frontier](../plots/frontier.png)\n![gone](../plots/missing.png)\n"
    out = embed_images(md, tmp_path / "reports")
    assert "![frontier](data:image/png;base64,iVBORyBmYWtl)" in out
    assert "![gone](../plots/missing.png)" in out  # left as it was: nothing to embed


def test_publish_puts_the_artifacts_on_the_calling_flow_run(tmp_path, prefect_results):
    from prefect import flow, get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.runtime import flow_run

    from complexitynet.paths import Paths

    paths = Paths().under(tmp_path)
    paths.plots.mkdir(parents=True)
    paths.report.parent.mkdir(parents=True)
    (paths.plots / "frontier.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # what is embedded, not what it shows
    paths.report.write_text("# report\n\n![frontier](../plots/frontier.png)\n")
    result = {"n_test": 3, "policies": {"router": {"pass_rate": 2 / 3, "cost_vs_largest": 0.25, "pgr": 0.5}}}

    @flow
    def top() -> str:
        publish(result, load_params(REPO / "params.yaml"), paths)
        return str(flow_run.id)

    run_id = top()
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    by_key = {a.key: a for a in found}
    assert {k: a.type for k, a in by_key.items()} == {"complexitynet-evaluation": "table",
                                                      "complexitynet-report": "markdown",
                                                      "complexitynet-frontier": "markdown"}
    assert "0.667" in str(by_key["complexitynet-evaluation"].data)
    assert "](data:image/png;base64," in by_key["complexitynet-frontier"].data
    assert "](data:image/png;base64," in by_key["complexitynet-report"].data


@pytest.mark.parametrize("env, expected", [(None, 120), ("300", 300)])
def test_main_gives_the_ephemeral_server_120_s_to_start_unless_set(monkeypatch, env, expected):
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

    var = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
    if env is None:
        monkeypatch.delenv(var, raising=False)
    else:
        monkeypatch.setenv(var, env)
    seen = {}

    def flow_stub(*args):
        seen.update(setting=PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value(), env=pipeline.os.environ[var])

    monkeypatch.setattr(pipeline, "complexitynet", flow_stub)
    assert pipeline.main([]) == 0
    assert seen == {"setting": expected, "env": str(expected)}
