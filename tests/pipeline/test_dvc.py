"""`dvc repro` on a copy of the repository: the DAG runs, a second run does nothing, and a forced
rerun rewrites byte-identical outputs."""

import contextlib
import json
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.project import STAGES, code_closure, make_project, run, tree_digest

# The whole DAG, twice over (MBPP, then the HumanEval switch): minutes, not seconds.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(2400)]


@pytest.fixture()
def project(tmp_path, mirror):
    return make_project(tmp_path, mirror)


def test_repro_twice_then_forced_rerun_is_byte_identical(project):
    root, env = project
    dvc = [sys.executable, "-m", "dvc"]
    out = run([*dvc, "repro"], root, env)
    for stage in STAGES:
        assert f"Running stage '{stage}'" in out
    assert (root / "data/problems.jsonl").exists() and (root / "metrics/sample.json").exists()
    execute = json.loads((root / "reports/execute.json").read_text())["models"]
    # MBPP/6: GPT-4's completion equals the reference, yet the paper's harness flagged it as failed.
    assert "MBPP/6#0" in execute["gpt-4-1106-preview"]["source_flags"]["examples"]["ours_pass_source_fail"]
    assert sum(execute["gpt-4-1106-preview"]["hidden"]["status"].values()) == 973
    first = tree_digest(root / "data") | tree_digest(root / "metrics") | tree_digest(root / "reports")
    # MLflow: every success-model candidate and every policy is a run with the same metric names
    import mlflow

    # (each classifier, success-model candidate and cascade: one run per dataset; train logs val_, evaluate
    # logs test_ into the same run; the splits are its inputs; artifacts beside the store, not in ./mlruns)
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("complexitynet")
    assert experiment.artifact_location == (root.parent / "artifacts").as_uri() and not (root / "mlruns").exists()
    runs = client.search_runs([experiment.experiment_id], "tags.dataset = 'mbpp'")
    by_kind = {kind: [r for r in runs if r.data.tags.get("kind") == kind]
               for kind in ("classifier", "router", "policy", "evaluate")}
    assert sorted(r.data.tags["classifier"] for r in by_kind["classifier"]) == [
        "knn_minilm", "lora", "majority", "prior", "tfidf_lr"]
    assert all({"val_accuracy", "val_macro_f1", "val_within_one", "test_accuracy", "test_macro_f1", "test_within_one",
                "test_pass_rate"} <= set(r.data.metrics) for r in by_kind["classifier"])
    for r in by_kind["classifier"]:
        assert {a.path for a in client.list_artifacts(r.info.run_id, "test")} == {
            "test/confusion_matrix.png", "test/classification_report.txt"}, r.info.run_name
    assert sorted(r.data.params["candidate"] for r in by_kind["router"]) == ["ensemble", "knn", "minilm", "tfidf"]
    assert all({"val_margin_over_hull", "val_aiq", "val_auc_gpt-4-1106-preview", "test_margin_over_hull",
                "test_pass_rate"} <= set(r.data.metrics) for r in by_kind["router"])
    assert sorted(r.data.params["policy"] for r in by_kind["policy"]) == ["cascade", "cascade:every_rung"]
    assert all({"test_margin_over_hull", "test_margin_over_hull_lo", "test_pass_rate"} <= set(r.data.metrics)
               for r in by_kind["policy"])
    assert len(by_kind["evaluate"]) == 1
    for r in by_kind["classifier"] + by_kind["router"]:
        assert {i.dataset.name for i in r.inputs.dataset_inputs} == {"mbpp-train", "mbpp-validation", "mbpp-test"}
    versions = client.search_model_versions("name = 'complexitynet-classifier'")
    assert len(versions) == 1
    assert client.get_model_version_by_alias("complexitynet-classifier", "champion-mbpp-mbpp").version == versions[0].version

    # Editing a module of the package makes `dvc status` name exactly the stages whose code imports it.
    from dvc.repo import Repo

    closures = {stage: code_closure(stage) for stage in STAGES}
    shared = sorted({f for c in closures.values() for f in c if sum(f in c2 for c2 in closures.values()) > 1})
    for module in shared:
        path = root / module
        original = path.read_bytes()
        path.write_bytes(original + b"\n# edited\n")
        try:
            # in process (one `dvc status` per module, seconds less each), from the root: DVC names
            # stages by dvc.yaml's path relative to the working directory
            with contextlib.chdir(root), Repo(str(root)) as repo:
                status = repo.status()
        finally:
            path.write_bytes(original)
        changed = {stage for stage, entries in status.items() for e in entries if isinstance(e, dict)
                   for dep in e.get("changed deps", {}) if module == dep or module.startswith(dep + "/")}
        assert changed == {stage for stage, c in closures.items() if module in c}, module

    again = run([*dvc, "repro"], root, env)
    assert "Running stage" not in again
    for stage in STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in again
    assert "Data and pipelines are up to date" in run([*dvc, "status"], root, env)

    run([*dvc, "repro", "--force"], root, env)  # verdicts come from the cache: same bytes
    assert tree_digest(root / "data") | tree_digest(root / "metrics") | tree_digest(root / "reports") == first
    assert len(client.search_model_versions("name = 'complexitynet-classifier'")) == 1  # same files: no new version

    # A params change reruns only what depends on it.
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["lr"] = 0.002
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run([*dvc, "repro"], root, env)
    assert "Running stage 'train'" in out and "Running stage 'evaluate'" in out
    assert all(f"Running stage '{stage}'" not in out for stage in STAGES[:-2])
    for path in ("metrics/evaluate.json", "plots/frontier.png", "plots/confusion.png", "reports/report.md"):
        assert (root / path).exists(), path
    shown = run([*dvc, "metrics", "show"], root, env)
    assert all(f"metrics/{stage}.json" in shown for stage in ("sample", "execute", "label", "train", "evaluate"))
    assert "failed to load" not in shown
    headline = json.loads(subprocess.run([*dvc, "metrics", "show", "--json"], cwd=root, env=env, capture_output=True,
                                         text=True, check=True).stdout)

    def leaves(tree) -> int:
        return sum(leaves(v) for v in tree.values()) if isinstance(tree, dict) else 1

    assert leaves(headline) < 80  # a few headline numbers per stage (the ~370 columns of detail are in reports/)
    run([*dvc, "plots", "show", "-o", str(root / "plots-html")], root, env)
    assert (root / "plots-html" / "index.html").exists()

    # A commit carries its numbers (metrics/, reports/, plots/ are committed with the code); every
    # output goes to a DVC remote, from which an older dvc.lock's outputs come back.
    env = {**env, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}  # our commit and `dvc exp run`'s, on a machine with no git identity
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "mbpp"], root, env)
    assert run(["git", "status", "--porcelain"], root, env).strip() == ""
    run([*dvc, "remote", "add", "--local", "--default", "local", str(root.parent / "dvc-remote")], root, env)
    run([*dvc, "push"], root, env)
    mbpp = tree_digest(root / "data") | tree_digest(root / "models")
    run([*dvc, "metrics", "diff", "HEAD"], root, env)  # `dvc metrics diff` against a revision works

    # An experiment: the HumanEval ladder (3 models, 5 samples each, k=5 labels) beside the commit.
    run([*dvc, "exp", "run", "-S", "base.dataset=humaneval", "-n", "humaneval"], root, env)
    shown = subprocess.run([*dvc, "exp", "show", "--json"], cwd=root, env=env, capture_output=True, text=True,
                           check=True).stdout
    n_test = {}
    for commit in json.loads(shown):
        for row in [commit, *[exp for e in commit.get("experiments") or [] for exp in e.get("revs", [])]]:
            metrics = (row.get("data") or {}).get("metrics", {}).get("metrics/evaluate.json", {}).get("data", {})
            n_test[row.get("name") or row["rev"]] = metrics.get("n_test")
    assert n_test.get("humaneval") == 33 and 500 in n_test.values(), n_test  # numbers for the experiment and the commit
    diff = run([*dvc, "metrics", "diff", "HEAD"], root, env)
    assert "metrics/evaluate.json" in diff and "n_test" in diff
    assert len((root / "data/problems.jsonl").read_text().splitlines()) == 164
    evaluation = json.loads((root / "reports/evaluate.json").read_text())
    assert evaluation["n_test"] == 33 and evaluation["models"] == ["codellama-7b-instruct", "gpt-3.5-turbo", "gpt-4o"]
    assert "# ComplexityNet evaluation: humaneval" in (root / "reports/report.md").read_text()
    study = evaluation["paying"]["trials_study"]  # k = 1..5 trials, measured
    assert [row["k"] for row in study["rows"]] == [1, 2, 3, 4, 5] and study["rows"][-1]["label_agreement"] == 1.0

    # Back to the commit's dvc.lock, with an empty local cache: `dvc pull` restores its outputs from
    # the default remote, byte for byte (--force: the experiment's outputs in the workspace are no
    # longer in the deleted cache, so DVC asks before replacing them).
    run(["git", "checkout", "--", "."], root, env)
    shutil.rmtree(root / ".dvc" / "cache")
    run([*dvc, "pull", "--force"], root, env)
    assert "Data and pipelines are up to date" in run([*dvc, "status"], root, env)
    assert tree_digest(root / "data") | tree_digest(root / "models") == mbpp
