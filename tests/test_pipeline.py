"""The whole DVC pipeline, end to end, on a tiny profile in a temporary copy."""

import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd

import pytest
import yaml

from params_declared import assert_params_declared

REPO = Path(__file__).resolve().parents[1]
PROJECT_FILES = ["dvc.yaml", "params.yaml", "stages", "decision_distill", "scenarios", "simulations", "examples", ".dvcignore"]
STAGES = ["check", "runtime", "download@teacher", "download@slm", "generate", "split", "train@logreg", "train@mlp", "train@encoder", "train@decoder",
          "lora-train", "merge", "perplexity", "stability", "evaluate", "effects", "games", "plot", "simulate"]


def project_env(root: Path, **extra: str) -> dict[str, str]:
    """The environment a command runs in inside a project copy: the copy's own decision_distill
    first on the import path (the stages import the package, and the copy is what DVC hashes),
    ahead of whichever checkout the installed package points at."""
    path = os.pathsep.join(p for p in (str(Path(root).resolve()), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def run(*cmd, cwd) -> subprocess.CompletedProcess:
    env = project_env(cwd, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                      GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
                      GIT_COMMITTER_EMAIL="t@t", DVC_NO_ANALYTICS="1")
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)


def sh(*cmd, cwd) -> str:
    result = run(*cmd, cwd=cwd)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


def plots_json(root: Path, images: Path) -> dict:
    """`dvc plots show --json` (images written under `images`); its stdout only: DVC adds a
    warning line to the output when a plot fails to load."""
    result = run("dvc", "plots", "show", "--json", "-o", str(images), cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def assert_clean(root: Path) -> None:
    """Nothing for `dvc repro` to do and nothing for git to commit."""
    status = run("dvc", "status", "--json", cwd=root)
    # the runtime stage is always changed: it re-resolves the machine's runtime on every repro
    assert status.returncode == 0 and json.loads(status.stdout) == {"runtime": ["always changed"]}, \
        status.stdout + status.stderr
    assert sh("git", "status", "--porcelain", cwd=root) == ""


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
    params["student"]["hidden"] = 16  # the MLP's hidden size and the transformers' d_model
    for arch in ("encoder", "decoder"):
        params["student"][arch].update(heads=2, layers=1)
    params["stability"].update(states=8, repeats=2, batch_sizes=[3])
    params["teacher"]["max_new_tokens"] = 8  # the sampled answers of the stability stage
    params["simulate"].update(population=100, replicates=3)  # tests/test_simulate*.py check the numbers
    for key, value in overrides.items():  # e.g. scenario="...", split={"holdouts": {...}}
        if isinstance(value, dict):
            params[key].update(value)
        else:
            params[key] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git", "init", "-q", cwd=root)
    sh("dvc", "init", "-q", cwd=root)
    sh("dvc", "config", "core.autostage", "true", cwd=root)
    (root / ".dvc/plots").mkdir()
    for template in (REPO / ".dvc/plots").glob("*.json"):  # the plot templates dvc.yaml names
        shutil.copy(template, root / ".dvc/plots" / template.name)
    sh("git", "add", "-A", cwd=root)
    sh("git", "commit", "-qm", "project", cwd=root)  # DVCLive refuses a git repo with no commit
    log = sh("dvc", "repro", cwd=root)
    sh("git", "add", "-A", cwd=root)
    sh("git", "commit", "-qm", "baseline", cwd=root)
    return log




@pytest.fixture(scope="module")
def weights(tiny_teacher) -> str:
    return yaml.safe_load((tiny_teacher / "model.json").read_text())["path"]


@pytest.fixture(scope="module")
def project(tiny_pipeline):
    return tiny_pipeline


@pytest.mark.slow
def test_tiny_profile_runs_end_to_end(project):
    root, log = project
    assert ran(log) == set(STAGES)
    assert_clean(root)  # dvc.lock records every stage as run; every declared output is there
    metrics = yaml.safe_load((root / "metrics/students.json").read_text())
    assert set(metrics) == {"logreg", "mlp", "encoder", "decoder", "slm_base", "slm_tuned"}
    # six LoRA steps on the teacher's answers move the small LM towards the teacher
    # Six LoRA steps on a random tiny model move its KL either way (test and validation alike);
    # that LoRA learns is asserted in tests/test_lora.py with enough steps. Here: it trained.
    lora = json.loads((root / "models/lora/adapter/lora_train.json").read_text())
    assert lora["steps"] == 6 and lora["val_kl"] != lora["base_val_kl"]
    # the same prompts in another batch size give the same probabilities, up to float noise
    # (float32 ~1e-6; with dtype auto on a bf16 processor the run is in bfloat16, whose paths
    # round apart by up to a few hundredths: bench/dtype_fidelity.py, stability.NUMERICS_TOLERANCE)
    stability = yaml.safe_load((root / "metrics/stability.json").read_text())
    dtype = yaml.safe_load((root / "metrics/teacher.json").read_text())["dtype"]
    assert stability["numerics"]["dtype"] == dtype
    assert stability["numerics"]["max_abs_diff"] <= (1e-4 if dtype == "float32" else 0.03)
    # one prediction per student for every state of every held-out split
    predictions = pd.read_parquet(root / "data/predictions.parquet")
    rows = predictions.groupby(["split", "student"]).size().to_dict()
    splits = {"test": len(pd.read_parquet(root / "data/splits/test.parquet"))}
    assert rows == {(split, student): n for split, n in splits.items() for student in metrics}
    perplexity = yaml.safe_load((root / "metrics/perplexity.json").read_text())
    assert perplexity["states"] > 0 and perplexity["tuned"]["perplexity"] > 1
    teacher = yaml.safe_load((root / "metrics/teacher.json").read_text())
    assert teacher["states"] == 160 and teacher["parse_failures"] == 0
    for png in ("scatter.png", "calibration.png", "comparison.png", "error_heatmap.png", "loss_curves.png",
                "stability_spread.png", "stability_icc.png"):
        assert (root / "plots" / png).stat().st_size > 1000


@pytest.mark.slow
def test_rejected_param_leaves_every_output_in_place(project):
    root, _ = project
    assert_clean(root)  # runs before test_exp_run_..., which leaves the workspace changed
    result = run("dvc", "exp", "run", "-S", "student.mlp.hidden=-5", cwd=root)
    assert result.returncode != 0
    log = result.stdout + result.stderr
    assert ran(log) == {"check"}  # no stage (and none of its outputs) was touched
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "student.mlp.hidden" in errors[0]
    # DVC writes the -S value into params.yaml and leaves it there when the run fails; that
    # edit is the only change, and undoing it leaves the project exactly as it was.
    assert sh("git", "status", "--porcelain", cwd=root).splitlines() == [" M params.yaml"]
    sh("git", "checkout", "params.yaml", cwd=root)
    assert_clean(root)
    # --temp runs the experiment in a copy: a rejected value never reaches the workspace.
    assert run("dvc", "exp", "run", "--temp", "-S", "student.mlp.hidden=-5", cwd=root).returncode != 0
    assert_clean(root)


@pytest.mark.slow
def test_plots_draw_one_series_per_student(project, tmp_path):
    """Render the CSV plots' Vega-Lite specs headless (tests/vega_marks.js, with the Vega builds
    of the offline template) and count what a reader sees: one colour per student."""
    root, _ = project
    template = REPO / ".dvc/plots/offline.html"
    if shutil.which("node") is None or not template.exists():
        pytest.skip("needs node and the offline template (tools/offline_plot_template.py) to render Vega")
    shown = plots_json(root, tmp_path / "shown")
    assert shown.get("errors") is None, shown["errors"]
    csvs = ("scatter", "calibration", "comparison")
    specs = {name: shown["data"][f"plots/data/{name}.csv"][0]["content"] for name in csvs}
    result = subprocess.run(["node", str(REPO / "tests/vega_marks.js"), str(template)], input=json.dumps(specs),
                            capture_output=True, text=True, check=True)
    drawn = json.loads(result.stdout)
    students = sorted(pd.read_csv(root / "plots/data/scatter.csv")["student"].unique())
    assert len(students) == 6

    def colours(marks):
        return {c for m in marks for c in m["colors"]}

    assert len(colours(m for m in drawn["scatter"] if m["type"] == "symbol")) == len(students)
    lines = [m for m in drawn["calibration"] if m["type"] == "line" and m["colors"][0] != "grey"]
    assert len(lines) == len(students) and all(len(set(m["colors"])) == 1 for m in lines)  # a line each
    assert len(colours(lines)) == len(students)
    panels = [m for m in drawn["comparison"] if m["type"] == "rect"]
    metrics = pd.read_csv(root / "plots/data/comparison.csv")["metric"].unique()
    assert len(panels) == len(metrics)  # one panel per metric, one bar per student in each
    assert all(len(m["colors"]) == len(set(m["colors"])) == len(students) for m in panels)


class _Links(HTMLParser):
    """Every src and href attribute of every tag."""

    def __init__(self):
        super().__init__()
        self.links: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.links += [value or "" for name, value in attrs if name in ("src", "href")]


@pytest.mark.slow
def test_plots_render_offline(project, tmp_path):
    root, _ = project
    template = REPO / ".dvc/plots/offline.html"
    if not template.exists():
        if shutil.which("npm") is None:
            pytest.skip("npm not found, so tools/offline_plot_template.py could not build the offline template")
        pytest.fail(f"{template} missing though npm is installed: run `make setup` (tools/offline_plot_template.py)")
    sh("dvc", "config", "--local", "plots.html_template", str(template), cwd=root)
    sh("dvc", "plots", "show", "-o", str(tmp_path / "html"), cwd=root)
    html = (tmp_path / "html/index.html").read_text()
    parser = _Links()
    parser.feed(html)
    assert "vegaEmbed" in html and "img" in parser.tags
    remote = [link for link in parser.links if link.strip().lower().startswith(("http:", "https:", "//"))]
    assert not remote, f"fetched from the network: {remote}"


@pytest.mark.slow
def test_exp_run_reruns_only_what_the_changed_param_feeds(project):
    root, _ = project
    checked = (root / "data/params_checked.json").read_bytes()
    log = sh("dvc", "exp", "run", "-S", "student.mlp.hidden=24", cwd=root)
    # the check reruns on any params change; its output is the same bytes, so nothing follows from it
    assert ran(log) == {"check", "train@mlp", "evaluate", "effects", "games", "plot", "simulate"}
    assert (root / "data/params_checked.json").read_bytes() == checked
    diff = sh("dvc", "metrics", "diff", cwd=root)
    assert "mlp" in diff


@pytest.mark.slow
def test_import_mode_declares_no_plot_it_does_not_draw(tmp_path, weights):
    """With imported decisions there is no teacher, so the stability stage measures nothing;
    every plot dvc.yaml declares must still load."""
    root = tmp_path / "project"
    root.mkdir()
    log = tiny_project(root, weights, generate={"source": "import"})
    assert ran(log) == set(STAGES)
    assert_params_declared(root)  # the stages' import-mode branches read only declared params too
    shown = plots_json(root, tmp_path / "shown")
    assert shown.get("errors") is None, shown["errors"]
    assert_clean(root)
