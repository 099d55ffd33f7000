"""The whole DVC pipeline, end to end, on a tiny profile in a temporary copy."""

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_tiny_profile_runs_end_to_end(tiny_pipeline, ran, pipeline_stages, assert_clean):
    root, log = tiny_pipeline
    assert ran(log) == pipeline_stages
    assert_clean(root)  # dvc.lock records every stage as run; every declared output is there
    metrics = yaml.safe_load((root / "metrics/students.json").read_text())
    # the tiny profile trains 2 seeds of logreg and mlp (the transformers keep their own 1): ensemble rows
    assert set(metrics) == {"logreg", "mlp", "encoder", "decoder", "slm_base", "slm_tuned",
                            "logreg_ensemble", "mlp_ensemble"}
    assert len(metrics["mlp"]["seeds"]["kl"]) == 2
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
def test_rejected_param_leaves_every_output_in_place(tiny_pipeline_copy, run_cmd, sh, ran, assert_clean):
    root, _ = tiny_pipeline_copy  # clean: the fixture checks it
    result = run_cmd("dvc", "exp", "run", "-S", "student.mlp.hidden=-5", cwd=root)
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
    assert run_cmd("dvc", "exp", "run", "--temp", "-S", "student.mlp.hidden=-5", cwd=root).returncode != 0
    assert_clean(root)


@pytest.mark.slow
def test_plots_draw_one_series_per_student(tiny_pipeline, tmp_path, plots_json):
    """Render the CSV plots' Vega-Lite specs headless (tests/vega_marks.js, with the Vega builds
    of the offline template) and count what a reader sees: one colour per student."""
    root, _ = tiny_pipeline
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
    assert len(students) == 8  # 4 architectures, the 2 seed ensembles (logreg, mlp), 2 small LMs

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
def test_plots_render_offline(tiny_pipeline_copy, tmp_path, sh):
    root, _ = tiny_pipeline_copy  # a copy: the test sets a local dvc config
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
def test_exp_run_reruns_only_what_the_changed_param_feeds(tiny_pipeline_copy, sh, ran):
    root, _ = tiny_pipeline_copy  # a copy: `dvc exp run` applies the experiment to the workspace
    checked = (root / "data/params_checked.json").read_bytes()
    log = sh("dvc", "exp", "run", "-S", "student.mlp.hidden=24", cwd=root)
    # the check reruns on any params change and the runtime stage on every run; their outputs are
    # the same bytes, so nothing follows from them
    assert ran(log) == {"check", "runtime", "train@mlp", "evaluate", "effects", "games", "plot", "simulate"}
    assert (root / "data/params_checked.json").read_bytes() == checked
    diff = sh("dvc", "metrics", "diff", cwd=root)
    assert "mlp" in diff


@pytest.mark.slow
def test_import_mode_declares_no_plot_it_does_not_draw(import_pipeline, tmp_path, assert_clean, pipeline_stages,
                                                       plots_json, ran, assert_params_declared):
    """With imported decisions there is no teacher, so the stability stage measures nothing;
    every plot dvc.yaml declares must still load."""
    root, log = import_pipeline
    assert ran(log) == pipeline_stages
    assert_params_declared(root)  # the stages' import-mode branches read only declared params too
    shown = plots_json(root, tmp_path / "shown")
    assert shown.get("errors") is None, shown["errors"]
    assert_clean(root)
