"""Every CLI path, run in a scratch directory against the real (mirrored) sources."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from complexitynet.cli import main
from complexitynet.sources import FILES

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def workdir(tmp_path, monkeypatch, mirror):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COMPLEXITYNET_MIRROR", str(mirror))
    return tmp_path


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_pipeline_commands_write_outputs_and_rerun_byte_identical(workdir):
    for stage in ("fetch", "prepare", "sample"):
        assert main([stage]) == 0
    assert len(Path("data/problems.jsonl").read_text().splitlines()) == 974
    assert sorted(p.name for p in Path("data/samples").iterdir()) == [
        "codellama-7b-python.jsonl", "gpt-3.5-turbo-1106.jsonl", "gpt-4-1106-preview.jsonl"]
    metrics = json.loads(Path("reports/sample.json").read_text())
    assert metrics["models"]["gpt-4-1106-preview"]["missing_task_ids"] == ["MBPP/440"]
    first = digest(workdir / "data") | digest(workdir / "metrics") | digest(workdir / "reports")
    shutil.rmtree("data/samples")
    Path("data/problems.jsonl").unlink()
    assert main(["prepare"]) == 0 and main(["sample"]) == 0
    assert digest(workdir / "data") | digest(workdir / "metrics") | digest(workdir / "reports") == first


def test_humaneval_switch(workdir):
    params = Path("params.yaml").read_text().replace("  dataset: mbpp ", "  dataset: humaneval ")
    Path("params.yaml").write_text(params)
    for stage in ("fetch", "prepare", "sample"):
        assert main([stage]) == 0
    assert len(Path("data/problems.jsonl").read_text().splitlines()) == 164
    assert sorted(p.stem for p in Path("data/samples").iterdir()) == ["codellama-7b-instruct", "gpt-3.5-turbo", "gpt-4o"]


def test_checksum_mismatch_stops_fetch(workdir, mirror, tmp_path_factory, monkeypatch, caplog):
    bad_mirror = tmp_path_factory.mktemp("bad") / "mirror"
    shutil.copytree(mirror, bad_mirror)
    target = bad_mirror / FILES["mbpp"].relpath
    target.chmod(0o644)
    target.write_text('{"task_id": 1}\n')
    monkeypatch.setenv("COMPLEXITYNET_MIRROR", str(bad_mirror))
    assert main(["fetch"]) == 2
    assert "mirror copy of 'mbpp': sha256 is" in caplog.text and FILES["mbpp"].sha256 in caplog.text
    assert not Path("data/sources/mbpp").exists()


@pytest.mark.parametrize("stage, name", [("prepare", "mbpp"), ("sample", "complexitynet-gpt")])
def test_a_source_edited_after_fetch_is_refused_before_use(workdir, caplog, stage, name):
    """Every stage that reads a source checks its sha256 first, not only `fetch`."""
    assert main(["fetch"]) == 0
    if stage == "sample":  # (problems to sample for; MBPP+'s expected outputs do not matter here)
        text = Path("params.yaml").read_text()
        assert "  mbppplus: true" in text
        Path("params.yaml").write_text(text.replace("  mbppplus: true", "  mbppplus: false"))
        assert main(["prepare"]) == 0
    src = Path("data/sources") / FILES[name].relpath
    lines = src.read_text().splitlines()
    lines[4] = lines[4].replace('"', "'", 2)  # one record edited by hand
    src.chmod(0o644)
    src.write_text("\n".join(lines) + "\n")
    assert main([stage]) == 2
    assert f"is not the pinned {FILES[name].sha256[:12]}" in caplog.text and "complexitynet fetch" in caplog.text
    output = Path("data/problems.jsonl") if stage == "prepare" else Path("data/samples")
    assert not output.exists() and not list(Path("data").glob(".problems.jsonl.*"))


def test_bad_params_exit_2_naming_the_key(workdir, caplog):
    Path("params.yaml").write_text(Path("params.yaml").read_text().replace("  seed: 2312", "  sed: 2312"))
    assert main(["prepare"]) == 2
    assert "base.sed: unknown key" in caplog.text


def test_missing_inputs_point_to_the_stage(workdir, caplog):
    assert main(["sample"]) == 2
    assert "data/problems.jsonl: file not found" in caplog.text


def test_help_lists_stages(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(stage in out for stage in ("fetch", "prepare", "sample"))
