"""The whole DVC pipeline, end to end, on a tiny profile in a temporary copy."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PROJECT_FILES = ["dvc.yaml", "params.yaml", "stages", "decision_distill", "scenarios", "examples", ".dvcignore"]
STAGES = ["download@teacher", "download@slm", "generate", "split", "train@logreg", "train@mlp", "train@encoder", "train@decoder",
          "lora-train", "merge", "perplexity", "stability", "evaluate", "effects", "games", "plot"]


def sh(*cmd, cwd):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


def ran(log: str) -> set[str]:
    return {s for s in STAGES if f"Running stage '{s}'" in log}


def tiny_project(root: Path, weights: str, **overrides) -> str:
    """Copy the project into `root` with tiny settings (the model at `weights` as teacher and
    SLM; `overrides` replace whole params keys), run `dvc repro`, commit; return the log."""
    for name in PROJECT_FILES:
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, root / name)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["teacher"].update(model=weights, batch_size=8, device="cpu")
    params["slm"].update(model=weights, batch_size=8, device="cpu")
    params["lora"].update(max_steps=6, checkpoint_every=3, batch_size=4)
    params["generate"].update(states=160, cache=".cache/teacher.sqlite")
    params["train"].update(epochs=4, patience=2, batch_size=32)
    for arch in ("encoder", "decoder"):
        params["student"][arch].update(d_model=16, heads=2, layers=1)
    params["student"]["mlp"]["hidden"] = 16
    params["stability"].update(states=8, repeats=2, batch_sizes=[3])
    params["teacher"]["max_new_tokens"] = 8  # the sampled answers of the stability stage
    for key, value in overrides.items():  # e.g. scenario="...", split={"holdouts": {...}}
        if isinstance(value, dict):
            params[key].update(value)
        else:
            params[key] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git", "init", "-q", cwd=root)
    sh("dvc", "init", "-q", cwd=root)
    sh("dvc", "config", "core.autostage", "true", cwd=root)
    sh("git", "add", "-A", cwd=root)
    sh("git", "commit", "-qm", "project", cwd=root)  # DVCLive refuses a git repo with no commit
    log = sh("dvc", "repro", cwd=root)
    sh("git", "add", "-A", cwd=root)
    sh("git", "commit", "-qm", "baseline", cwd=root)
    return log


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_teacher):
    root = tmp_path_factory.mktemp("project")
    weights = yaml.safe_load((tiny_teacher / "teacher.json").read_text())["path"]
    return root, tiny_project(root, weights)


@pytest.mark.slow
def test_tiny_profile_runs_end_to_end(project):
    root, log = project
    assert ran(log) == set(STAGES)
    metrics = yaml.safe_load((root / "metrics/students.json").read_text())
    assert set(metrics) == {"logreg", "mlp", "encoder", "decoder", "slm_base", "slm_tuned"}
    assert "divergence" in metrics["slm_tuned"]["gap_closed"]
    perplexity = yaml.safe_load((root / "metrics/perplexity.json").read_text())
    assert perplexity["states"] > 0 and perplexity["tuned"]["perplexity"] > 1
    assert all(m["kl"] >= 0 for m in metrics.values())
    assert all(m["kl_vs_noise_floor"] > 0 for m in metrics.values())  # the tiny teacher's floor is > 0
    teacher = yaml.safe_load((root / "metrics/teacher.json").read_text())
    assert teacher["states"] == 160 and teacher["parse_failures"] == 0
    for png in ("scatter.png", "calibration.png", "comparison.png", "error_heatmap.png", "loss_curves.png",
                "stability_spread.png", "stability_icc.png"):
        assert (root / "plots" / png).stat().st_size > 1000
    assert "metrics/students.json" in sh("dvc", "metrics", "show", cwd=root)


@pytest.mark.slow
def test_exp_run_reruns_only_what_the_changed_param_feeds(project):
    root, _ = project
    log = sh("dvc", "exp", "run", "-S", "student.mlp.hidden=24", cwd=root)
    assert ran(log) == {"train@mlp", "evaluate", "effects", "games", "plot"}
    diff = sh("dvc", "metrics", "diff", cwd=root)
    assert "mlp" in diff


@pytest.mark.slow
def test_plots_render_offline(project):
    root, _ = project
    template = REPO / ".dvc/plots/offline.html"
    assert template.exists(), "run `make setup` (tools/offline_plot_template.py) first"
    sh("dvc", "config", "--local", "plots.html_template", str(template), cwd=root)
    sh("dvc", "plots", "show", "-o", "plots_html", cwd=root)
    html = (root / "plots_html/index.html").read_text()
    assert "vegaEmbed" in html and "<img" in html
    assert 'src="http' not in html  # no script or image is fetched from the network
