"""Shared fixtures. Test modules import no other test module nor any helper: what they share
comes from here. The code behind the builders lives in tests/support/, imported only here.

Long tests (a whole dvc pipeline, the packaged Gemma, tens of seconds) are marked `slow`:
`pytest -m "not slow"` (`make test-quick`) runs the rest."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

# Tests never read or write the user's real cache directory (the default answer cache,
# the memo of model-file hashes): it is a fresh one per test session.
# Set once per process: this file executed a second time (imported under another module
# name) must not move the session to a fresh, empty cache halfway through.
SESSION = "DECISION_DISTILL_TEST_SESSION"
if os.environ.get(SESSION) != str(os.getpid()):
    os.environ[SESSION] = str(os.getpid())
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="decision-distill-test-cache-")
    atexit.register(shutil.rmtree, os.environ["XDG_CACHE_HOME"], ignore_errors=True)

    # Every stage DVC runs in a test records the params keys it reads (tests/params_reads/: a
    # sitecustomize that is inert outside DVC stages), so the params_declared checks can hold
    # them against the stage's `params:` in dvc.yaml.
    os.environ["DECISION_DISTILL_PARAMS_READS"] = tempfile.mkdtemp(prefix="decision-distill-params-reads-")
    atexit.register(shutil.rmtree, os.environ["DECISION_DISTILL_PARAMS_READS"], ignore_errors=True)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent / "params_reads"),
                                                *filter(None, [os.environ.get("PYTHONPATH")])])

sys.path.insert(0, str(Path(__file__).parent))  # tests/support, for this file only
from support import generate_runs as killable_generate  # noqa: E402
from support import params_declared as params_declared_module  # noqa: E402
from support import persona_tiny, projects, sim_students, stage_cli, synthetic  # noqa: E402
from support import tiny_teacher as tiny_models  # noqa: E402


@pytest.fixture(scope="session")
def params_declared():
    """support/params_declared: the params keys a stage read (recorded by tests/params_reads)
    against the keys its dvc.yaml entry declares."""
    return params_declared_module


@pytest.fixture(scope="session")
def assert_params_declared():
    """(project root) -> reads: fails naming every stage that read a params key it does not declare."""
    return params_declared_module.assert_params_declared


# --- synthetic decisions with a known policy --------------------------------------------

@pytest.fixture(scope="session")
def synthetic_policy_frame():
    """(n, options=("yes", "no"), seed=0) -> (schema, frame): states with two set features, a
    choice and a number; P(option|state) is a known softmax of per-item weights."""
    return synthetic.synthetic_policy_frame


@pytest.fixture(scope="session")
def write_synthetic_splits():
    """(directory, n=800, options=("yes", "no"), seed=0) -> schema: features.json and
    train/val/test Parquet files of synthetic_policy_frame, as the split stage writes them."""
    return synthetic.write_synthetic_splits


@pytest.fixture
def synthetic_splits(tmp_path, write_synthetic_splits) -> Path:
    directory = tmp_path / "splits"
    write_synthetic_splits(directory)
    return directory


@pytest.fixture(scope="session")
def write_splits():
    """(scenario_path, directory, n=600, seed=0) -> directory: splits of synthetic decisions
    (a known logistic policy) over a real scenario's states."""
    return sim_students.write_splits


@pytest.fixture(scope="session")
def train_students():
    """(splits, out, archs=("logreg", "mlp"), epochs=15) -> out: out/<arch> trained through
    the real train_student."""
    return sim_students.train_students


# --- stage scripts called in-process ----------------------------------------------------

@pytest.fixture(scope="session")
def call_stage():
    """(script, *args) -> StageResult(code, stdout, stderr): `python <script> <args>` run in
    this process (an exception other than SystemExit propagates)."""
    return stage_cli.call_stage


@pytest.fixture(scope="session")
def load_stage():
    """(name) -> module: a fresh import of stages/<name>.py."""
    return stage_cli.load_stage


@pytest.fixture(scope="session")
def generate_runs():
    """stages/generate.py as a subprocess: run_stage(params_raw, out_dir, teacher_dir) -> Popen,
    kill_when(proc, cache, answers, delay) -> killed?, cached(cache) -> answers."""
    return killable_generate


# --- tiny models, saved and loaded like real ones ----------------------------------------

@pytest.fixture(scope="session")
def build_tiny_teacher():
    """(directory, scenario_path="scenarios/ice_cream.yaml", seed=0, chat=False,
    sliding_window=512, architecture="gemma3") -> directory: a tiny causal LM's weights."""
    return tiny_models.build_tiny_teacher


@pytest.fixture(scope="session")
def build_tokenizer():
    """(scenario, chat=False) -> the tiny teacher's tokenizer for `scenario`."""
    return tiny_models.build_tokenizer


@pytest.fixture(scope="session")
def tiny_model_dir():
    """(root, **build_tiny_teacher options) -> a model directory as the download stage makes it."""
    return tiny_models.tiny_model_dir


@pytest.fixture(scope="session")
def tiny_variant(tmp_path_factory):
    """(name, **build_tiny_teacher options) -> the loaded model (load_causal_lm on the CPU)."""
    return lambda name, **kwargs: tiny_models.tiny_variant(tmp_path_factory.mktemp(name), **kwargs)


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory) -> Path:
    """A teacher directory made by the real download code from a tiny in-process model."""
    return tiny_models.tiny_model_dir(tmp_path_factory.mktemp("tiny_teacher"))


@pytest.fixture(scope="session")
def build_tiny_persona_model():
    """(directory, texts, seed=0, vocab=900) -> directory: a tiny Gemma-3 whose tokenizer is
    trained on `texts`."""
    return persona_tiny.build_tiny_persona_model


@pytest.fixture(scope="session")
def always_prefer():
    """(source, directory, token_text) -> directory: a copy of a tiny model whose highest logit
    after any prompt is `token_text`."""
    return persona_tiny.always_prefer


@pytest.fixture(scope="session")
def persona_weights(tmp_path_factory) -> Path:
    """The one tiny persona model every persona test loads, built once: its tokenizer knows
    the whole example board and the extraction prompts."""
    return persona_tiny.build_tiny_persona_model(tmp_path_factory.mktemp("persona_weights") / "weights",
                                                 persona_tiny.board_texts())


@pytest.fixture(scope="session")
def persona_chat_model(tmp_path_factory) -> Path:
    """persona_weights' twin whose tokenizer has Gemma's chat template and turn markers, as a
    model directory made by the real download code (the persona stages' chat settings)."""
    from decision_distill.lm.source import download

    root = tmp_path_factory.mktemp("persona_chat")
    weights = persona_tiny.build_tiny_persona_model(root / "weights", persona_tiny.board_texts(), chat=True)
    download(str(weights), "main", root / "model")
    return root / "model"


# --- temporary git+dvc projects -----------------------------------------------------------

@pytest.fixture(scope="session")
def run_cmd():
    """(*cmd, cwd) -> CompletedProcess, with git's identity set and this venv's dvc first on PATH."""
    return projects.run


@pytest.fixture(scope="session")
def sh():
    """(*cmd, cwd) -> stdout + stderr of a command that must succeed."""
    return projects.sh


@pytest.fixture(scope="session")
def ran():
    """(log) -> the default pipeline's stages that a dvc log ran."""
    return projects.ran


@pytest.fixture(scope="session")
def pipeline_stages() -> frozenset[str]:
    """Every stage of the default pipeline (dvc.yaml)."""
    return frozenset(projects.STAGES)


@pytest.fixture(scope="session")
def copy_project():
    """(root, *extra paths) -> root: the project's pipeline files copied into `root`."""
    return projects.copy_project


@pytest.fixture(scope="session")
def tiny_project():
    """(root, weights, **params overrides) -> log: the project copied into `root` with tiny
    settings, `dvc repro` run and committed."""
    return projects.tiny_project


@pytest.fixture(scope="session")
def assert_clean():
    """(root): nothing for `dvc repro` to do and nothing for git to commit."""
    return projects.assert_clean


@pytest.fixture(scope="session")
def plots_json():
    """(root, images) -> `dvc plots show --json`, images written under `images`."""
    return projects.plots_json


# --- the long builds, run in the background ---------------------------------------------
#
# The costliest fixtures are whole dvc pipelines and the packaged Gemma's conversion, all run
# as commands. Those the collected tests need start at the session's first test on a thread
# of their own, one at a time in BACKGROUND order, and the tests that use them run last: the
# builds keep the second core busy while the other tests run in this process. A build runs
# only commands (no torch in this process: tests seed its global random generator) with the
# environment as it was at the start (tests change HOME, XDG_CACHE_HOME, AWS_* for a while).

BACKGROUND = ("tiny_pipeline", "packaged_gemma", "games_pipeline", "import_pipeline", "persona_pipeline")
GAMES = "scenarios/games.yaml"


def pytest_collection_modifyitems(config, items):
    """Tests that use a background build run after the others, in BACKGROUND order."""
    items.sort(key=lambda item: max((BACKGROUND.index(n) for n in item.fixturenames if n in BACKGROUND), default=-1))


class Background:
    def __init__(self):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="background-build")
        self._futures: dict[str, Future] = {}

    def queue(self, name: str, build) -> None:
        self._futures[name] = self._pool.submit(build)

    def result(self, name: str, build):
        """The queued build's result (waiting for it), or `build()` here if none was queued."""
        future = self._futures.get(name)
        return future.result() if future is not None else build()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="session", autouse=True)
def background(request):
    builds = Background()
    needed = {name for item in request.session.items for name in item.fixturenames}
    for name in BACKGROUND:
        if name in needed:
            builds.queue(name, request.getfixturevalue(f"{name}_build"))
    yield builds
    builds.close()


@pytest.fixture(scope="session")
def tiny_pipeline_build(tmp_path_factory, tiny_teacher):
    root = tmp_path_factory.mktemp("tiny_pipeline")
    weights = yaml.safe_load((tiny_teacher / "model.json").read_text())["path"]
    env = dict(os.environ)
    return lambda: (root, projects.tiny_project(root, weights, env,
                                                generate={"cache": "~/.cache/decision-distill/answers.sqlite"}))


@pytest.fixture(scope="session")
def tiny_pipeline(background, tiny_pipeline_build) -> tuple[Path, str]:
    """(root, log): the whole default pipeline run once on the tiny model in a temporary
    git+dvc project, with the answer cache at its default location (under this session's
    XDG_CACHE_HOME). Building it is the costliest step of the suite, so the pipeline-level
    tests share it: they must leave it as they found it (committed and clean). A test that
    changes the project takes `tiny_pipeline_copy` instead."""
    return background.result("tiny_pipeline", tiny_pipeline_build)


@pytest.fixture
def tiny_pipeline_copy(tiny_pipeline, tmp_path) -> tuple[Path, str]:
    """(root, log): a private copy of tiny_pipeline (git history, dvc cache and outputs), for
    a test that changes the project; the shared one stays as built."""
    root = tmp_path / "project"
    shutil.copytree(tiny_pipeline[0], root, symlinks=True)
    projects.assert_clean(root)
    return root, tiny_pipeline[1]


@pytest.fixture(scope="session")
def import_pipeline_build(tmp_path_factory, tiny_teacher):
    root = tmp_path_factory.mktemp("import_pipeline")
    weights = yaml.safe_load((tiny_teacher / "model.json").read_text())["path"]
    env = dict(os.environ)
    return lambda: (root, projects.tiny_project(root, weights, env, generate={"source": "import"}))


@pytest.fixture(scope="session")
def import_pipeline(background, import_pipeline_build) -> tuple[Path, str]:
    """(root, log): the whole pipeline on the tiny profile with generate.source import (the
    decisions of examples/imported_decisions.csv, no teacher)."""
    return background.result("import_pipeline", import_pipeline_build)


@pytest.fixture(scope="session")
def games_pipeline_build(tmp_path_factory):
    root = tmp_path_factory.mktemp("games_pipeline")
    weights = tiny_models.build_tiny_teacher(root / "weights", scenario_path=GAMES)
    holdouts = {"oos_contexts": [["sports"], ["room_sharing"], ["venture_capital"]], "ood_games": [["doubled"]]}
    env = dict(os.environ)
    return lambda: (root / "project", projects.tiny_project(
        root / "project", str(weights), env, scenario=GAMES,
        generate={"states": 200}, split={"holdouts": holdouts, "test": 0.5}))  # effects needs more test states


@pytest.fixture(scope="session")
def games_pipeline(background, games_pipeline_build) -> tuple[Path, str]:
    """(root, log): the whole pipeline on the games scenario (a tiny model built from its
    texts), with three contexts (oos_contexts) and the doubled games (ood_games) held out."""
    return background.result("games_pipeline", games_pipeline_build)


@pytest.fixture(scope="session")
def persona_pipeline_build(tmp_path_factory, persona_weights):
    root = tmp_path_factory.mktemp("persona_pipeline") / "project"
    env = dict(os.environ)
    return lambda: (root, projects.persona_project(root, persona_weights, env))


@pytest.fixture(scope="session")
def persona_pipeline(background, persona_pipeline_build) -> tuple[Path, str]:
    """(root, log): the persona pipeline's project on two people of the example board
    (support.projects.PERSONAS), after `dvc repro` of persona-perplexity, -extract and
    -votes. Only tests/test_persona_pipeline.py uses it, and goes on changing it."""
    return background.result("persona_pipeline", persona_pipeline_build)


@pytest.fixture(scope="session")
def packaged_gemma_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("packaged") / "teacher"
    env = dict(os.environ)
    return lambda: (projects.convert_packaged(out, env), out)


@pytest.fixture(scope="session")
def packaged_gemma(background, packaged_gemma_build) -> tuple[dict, Path]:
    """(info, directory): the PyPI-packaged Gemma-3-270M through the download stage's GGUF
    conversion (a few minutes), in a process of its own; info: what download() returned."""
    return background.result("packaged_gemma", packaged_gemma_build)
