"""What a flow run reads from DVC and leaves behind: which stages dvc.lock says are up to date (the
flow skips them) and the record of each stage that ran; the evaluation as Prefect artifacts on the
top-level run; and the data version pushed to the DVC remote."""

from __future__ import annotations

import base64
import contextlib
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from complexitynet.config import Params, load_params
from complexitynet.errors import ComplexityNetError
from complexitynet.paths import Paths

# --- DVC: what is up to date, what ran ----------------------------------------------------------


def unversioned(root: Path, params: Params, params_file: Path) -> str | None:
    """Why dvc.lock cannot describe a run with these params (None when it can): no DVC repository
    here, or params other than params.yaml's (flow parameters, another params file)."""
    if not (root / ".dvc").is_dir():
        return "not a DVC repository"
    if params_file.resolve() != (root / "params.yaml").resolve() or load_params(params_file) != params:
        return "params differ from params.yaml (flow parameters)"
    return None


def stage_changes(root: Path, stage: str) -> str | None:
    """What `dvc status` finds changed in `stage` against dvc.lock, as one line (None: up to date).
    In process: the same content hashes `dvc repro` compares, without a DVC process per stage."""
    from dvc.repo import Repo

    lock = root / "dvc.lock"
    locked = yaml.safe_load(lock.read_text(encoding="utf-8")) if lock.exists() else None
    if stage not in ((locked or {}).get("stages") or {}):
        return "not in dvc.lock yet"
    with contextlib.chdir(root), Repo(str(root)) as repo:  # DVC resolves stage names against the cwd
        status = repo.status(targets=[stage])
    if not status:
        return None
    parts = []
    for entry in status.get(stage, []):
        if isinstance(entry, str):  # "changed command", "always changed"
            parts.append(entry)
            continue
        for what, files in entry.items():
            if isinstance(files, dict):
                named = [f"{path} {how}" for path, how in sorted(files.items())]
                more = f" and {len(named) - 4} more" if len(named) > 4 else ""
                parts.append(f"{what}: {', '.join(named[:4])}{more}")
            else:
                parts.append(f"{what}: {files}")
    return "; ".join(parts) or f"dvc status: {status}"


def record_stage(root: Path, stage: str) -> None:
    """`dvc commit` one stage that just ran: dvc.lock names its outputs (and the DVC cache holds
    them), so the next stage's status, and the next run's, compare against what it wrote."""
    from dvc.repo import Repo

    with contextlib.chdir(root), Repo(str(root)) as repo:
        repo.commit(stage, force=True)


def record_version(root: Path, params: Params, params_file: Path) -> str:
    """The data version this run leaves: dvc.lock (each stage that ran was committed as it finished),
    and `dvc push` when a DVC remote is set. Nothing when the run's params differ from the params
    file (dvc.lock would then lie)."""
    why = unversioned(root, params, params_file)
    if why is not None:
        return f"{why}: data version not recorded"
    dvc = [sys.executable, "-m", "dvc"]
    proc = subprocess.run([*dvc, "remote", "list"], cwd=root, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ComplexityNetError(f"`dvc remote list` failed in {root}: {proc.stderr.strip()}")
    if not proc.stdout.strip():
        return "dvc commit (no DVC remote configured: nothing pushed)"
    push = subprocess.run([*dvc, "push", "--quiet"], cwd=root, capture_output=True, text=True, check=False)
    if push.returncode != 0:
        raise ComplexityNetError(f"`dvc push` failed in {root}: {push.stderr.strip()}")
    return "dvc commit and dvc push"


# --- Prefect artifacts ----------------------------------------------------------------------------


def publish(result: dict[str, Any], params: Params, paths: Paths) -> None:
    """The evaluation as artifacts of the current flow run: the policy table (rounded), the report
    and the frontier plot (both markdown with the PNGs embedded as data URIs: the UI renders those,
    while a file:// link is one the browser refuses to open)."""
    what = f"{params.base.dataset}, ladder {params.ladder_name}, {result['n_test']} test prompts"
    create_table_artifact(key="complexitynet-evaluation", table=policy_rows(result["policies"]),
                          description=f"Routing policies on the test split ({what}): pass rate, cost relative "
                                      "to always using the largest model, PGR")
    report = paths.report.read_text(encoding="utf-8")
    create_markdown_artifact(key="complexitynet-report", markdown=embed_images(report, paths.report.parent),
                             description=f"reports/report.md ({what})")
    frontier = paths.plots / "frontier.png"
    create_markdown_artifact(key="complexitynet-frontier",
                             markdown=f"![cost-quality frontier]({data_uri(frontier)})\n\n"
                                      f"Pass rate against cost relative to always using the largest model ({what}).",
                             description="cost-quality frontier (plots/frontier.png)")


def policy_rows(policies: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per policy, the router first, then by cost; numbers to 3 decimals (None where undefined)."""
    def rounded(value: Any) -> float | None:
        return round(value, 3) if isinstance(value, (int, float)) and math.isfinite(value) else None

    order = sorted(policies, key=lambda name: (name != "router", policies[name]["cost_vs_largest"], name))
    return [{"policy": name, "pass_rate": rounded(policies[name]["pass_rate"]),
             "cost_vs_largest": rounded(policies[name]["cost_vs_largest"]), "pgr": rounded(policies[name].get("pgr"))}
            for name in order]


def data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def embed_images(markdown: str, base: Path) -> str:
    """Markdown whose images (PNG paths relative to `base`) are embedded as data URIs."""
    def inline(match: re.Match[str]) -> str:
        path = base / match.group(2)
        return f"![{match.group(1)}]({data_uri(path)})" if path.is_file() else match.group(0)

    return re.sub(r"!\[([^\]]*)\]\(([^)\s]+\.png)\)", inline, markdown)
