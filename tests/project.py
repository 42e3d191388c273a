"""A scratch copy of the repository for tests that run the whole DAG (DVC, the Prefect flow)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def make_project(tmp_path: Path, mirror: Path, smoke: bool = True,
                 **param_updates: dict) -> tuple[Path, dict[str, str]]:
    """The repository's tracked and unignored files in a fresh git repo with no DVC outputs, training
    cut to a smoke run unless `smoke` is False (the full one takes minutes on 2 cores), params
    sections updated from `param_updates`, and the environment to run it in."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    dest = tmp_path / "repo"
    for rel in files:
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    (dest / "dvc.lock").unlink(missing_ok=True)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    if smoke:
        params["train"].update(epochs=1, max_train=16, max_length=64)
        params["evaluate"]["bootstrap"] = 100
    for section, values in param_updates.items():
        params[section].update(values)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "COMPLEXITYNET_MIRROR": str(mirror),
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    run(["git", "init", "-q"], dest, env)
    return dest, env


def run(cmd: list[str], cwd: Path, env: dict, timeout: float = 900) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def tree_digest(root: Path) -> dict[str, str]:
    """Every output file's hash (caches, append logs, are not outputs)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".gitignore" and "cache" not in p.relative_to(root).parts}


STAGES = ("fetch", "prepare", "sample", "execute", "label", "train", "evaluate")


def code_closure(stage: str, src: Path = REPO / "src") -> set[str]:
    """Every module of the package that `complexitynet.<stage>` imports, directly or not (imports
    inside functions too), as repository-relative file paths: the code that shapes the stage's
    outputs, which dvc.yaml must list as the stage's dependencies."""
    import ast

    def module_file(mod: str) -> Path | None:
        path = src / Path(*mod.split("."))
        if (path / "__init__.py").exists():
            return path / "__init__.py"
        return path.with_suffix(".py") if path.with_suffix(".py").exists() else None

    seen: set[str] = set()
    todo = [f"complexitynet.{stage}"]
    while todo:
        mod = todo.pop()
        file = module_file(mod)
        if file is None or mod in seen:
            continue
        seen.add(mod)
        parts = mod.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages run their __init__
        package = mod if file.name == "__init__.py" else mod.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                todo += [a.name for a in node.names if a.name.startswith("complexitynet")]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + [base] * bool(base))
                if base.startswith("complexitynet"):
                    todo += [base] + [f"{base}.{a.name}" for a in node.names]
    return {str(module_file(m).relative_to(src.parent)) for m in seen}


def dvc_code_deps(stage: str, dvc_yaml: Path = REPO / "dvc.yaml") -> set[str]:
    """The package files dvc.yaml lists for `stage` (a listed directory stands for its .py files)."""
    deps = yaml.safe_load(dvc_yaml.read_text())["stages"][stage]["deps"]
    out: set[str] = set()
    for dep in deps:
        if dep.startswith("src/"):
            path = dvc_yaml.parent / dep
            out |= ({str(p.relative_to(dvc_yaml.parent)) for p in path.rglob("*.py")} if path.is_dir() else {dep})
    return out
