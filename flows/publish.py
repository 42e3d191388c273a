"""What a finished flow run leaves behind: the evaluation as Prefect artifacts, and the new data
version recorded in DVC."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from complexitynet.config import Params, load_params
from complexitynet.errors import ComplexityNetError
from complexitynet.paths import Paths


def publish(result: dict[str, Any], params: Params, paths: Paths) -> None:
    """The evaluation summary table, the report and a link to the frontier plot, as Prefect artifacts."""
    rows = [{"policy": name, "pass_rate": p["pass_rate"], "cost_vs_largest": p["cost_vs_largest"],
             "pgr": p.get("pgr")} for name, p in result["policies"].items()]
    what = f"{params.base.dataset}, ladder {params.ladder_name}, {result['n_test']} test prompts"
    create_table_artifact(key="complexitynet-evaluation", table=rows, description=f"Routing policies ({what})")
    create_markdown_artifact(key="complexitynet-report", markdown=paths.report.read_text(encoding="utf-8"),
                             description=f"reports/report.md ({what})")
    create_link_artifact(key="complexitynet-frontier", link=(paths.plots / "frontier.png").resolve().as_uri(),
                         link_text="cost-quality frontier (plots/frontier.png)")


def record_version(root: Path, params: Params, params_file: Path) -> str:
    """`dvc commit` the outputs (dvc.lock now names this data version) and `dvc push` when a remote is
    set. Skipped when the run's params differ from the params file (dvc.lock would then lie)."""
    if not (root / ".dvc").is_dir():
        return "not a DVC repository: data version not recorded"
    if params_file.resolve() != (root / "params.yaml").resolve() or load_params(params_file) != params:
        return "params differ from params.yaml (flow parameters): data version not recorded"
    dvc = [sys.executable, "-m", "dvc"]
    for cmd in ([*dvc, "commit", "--force", "--quiet"], [*dvc, "remote", "list"]):
        proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise ComplexityNetError(f"`{' '.join(cmd[2:])}` failed in {root}: {proc.stderr.strip()}")
    if not proc.stdout.strip():
        return "dvc commit (no DVC remote configured: nothing pushed)"
    push = subprocess.run([*dvc, "push", "--quiet"], cwd=root, capture_output=True, text=True, check=False)
    if push.returncode != 0:
        raise ComplexityNetError(f"`dvc push` failed in {root}: {push.stderr.strip()}")
    return "dvc commit and dvc push"
