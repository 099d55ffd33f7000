"""The answer cache never answers for a different model or setting: its key holds
everything that changes the numbers, local models are fingerprinted by their full
content, and a local model changed in place is noticed before any answer is served."""

from __future__ import annotations

import builtins
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from decision_distill.core.errors import UserError
from decision_distill.core.params import parse_params
from decision_distill.data.scenario_file import load_scenario
from decision_distill.lm import load as load_module
from decision_distill.lm import runtime as runtime_module
from decision_distill.lm import scorer as scorer_module
from decision_distill.lm.answer_cache import AnswerCache
from decision_distill.lm.source import download, fingerprint_dir, is_model_dir, is_model_marker, read_model_json
from decision_distill.personas.cache_keys import persona_key
from decision_distill.slm.answers import slm_answers
from decision_distill.teacher.ask import teacher_answers
from decision_distill.teacher.generate import generate

SCENARIO = load_scenario("scenarios/ice_cream.yaml")
STATES = SCENARIO.sample_states(6, seed=0)


@pytest.fixture
def asked(monkeypatch) -> list[int]:
    """States the token scorer actually ran (not served from the cache)."""
    counts: list[int] = []
    real = scorer_module.TokenScorer._score_batch
    monkeypatch.setattr(scorer_module.TokenScorer, "_score_batch",
                        lambda self, rows, *rest: counts.append(len(rows)) or real(self, rows, *rest))
    return counts


def params(tmp_path, **sections):
    raw = {"teacher": {"batch_size": 4, "device": "cpu", "dtype": "float32"},
           "slm": {"batch_size": 4, "device": "cpu", "dtype": "float32"},
           "generate": {"cache": str(tmp_path / "cache.sqlite")}}
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return parse_params(raw)


def ask(teacher_dir, p) -> list[dict]:
    cache = AnswerCache(p.generate.cache)
    try:
        return teacher_answers(teacher_dir, SCENARIO, STATES, p, cache)
    finally:
        cache.close()


def test_answers_cached_in_float32_are_not_served_in_bfloat16(tmp_path, tiny_teacher, asked):
    float32 = ask(tiny_teacher, params(tmp_path))
    assert sum(asked) == len(STATES)
    bfloat16 = ask(tiny_teacher, params(tmp_path, teacher={"dtype": "bfloat16"}))
    assert sum(asked) == 2 * len(STATES)  # asked again, in bfloat16
    assert [a["probs"] for a in bfloat16] != [a["probs"] for a in float32]
    ask(tiny_teacher, params(tmp_path, teacher={"dtype": "bfloat16"}))
    assert sum(asked) == 2 * len(STATES)  # and bfloat16's own answers are reused


def test_auto_dtype_is_float32_whatever_the_processor(tmp_path, tiny_teacher, asked, monkeypatch):
    # bfloat16 answers depend on the batch a state was scored in, so `auto` never picks it,
    # not even on a processor or card with native bf16.
    bfloat16 = ask(tiny_teacher, params(tmp_path, teacher={"dtype": "bfloat16"}))
    for fast in (True, False):
        monkeypatch.setattr(runtime_module, "cpu_has_fast_bf16", lambda fast=fast: fast)
        assert runtime_module.resolve_dtype("auto", "cpu") == "float32"
        auto = ask(tiny_teacher, params(tmp_path, teacher={"dtype": "auto"}))
        assert auto != bfloat16
    assert sum(asked) == 2 * len(STATES)  # bfloat16's answers are never served to auto
    assert ask(tiny_teacher, params(tmp_path, teacher={"dtype": "float32"})) == auto
    assert sum(asked) == 2 * len(STATES)  # auto's answers are float32's
    monkeypatch.setattr(runtime_module, "pick_device", lambda device: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert runtime_module.resolve_dtype("auto", "cuda") == "float32"
    assert runtime_module.resolve_dtype("bfloat16", "cuda") == "bfloat16"  # an explicit dtype is kept
    monkeypatch.undo()
    generate(params(tmp_path, teacher={"dtype": "auto"}, generate={"states": 4}), SCENARIO, tiny_teacher,
             tmp_path / "d.parquet", tmp_path / "f.json", tmp_path / "m.json")
    written = yaml.safe_load((tmp_path / "m.json").read_text())
    assert (written["dtype"], written["device"]) == ("float32", "cpu")  # metrics/teacher.json names the runtime


def test_auto_loads_float32(tiny_teacher):
    loaded = load_module.load_causal_lm(tiny_teacher, "auto", "cpu")
    assert loaded.dtype == "float32"
    assert {p.dtype for p in loaded.model.parameters()} == {torch.float32}


def test_cpu_bf16_needs_both_onednn_and_native_instructions(monkeypatch):
    # Reported beside the dtype benchmarks; it no longer picks a precision.
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    monkeypatch.setattr(runtime_module, "cpu_flags", lambda: {"avx512f", "avx512bw", "avx512_bf16"})
    onednn = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert runtime_module.cpu_has_fast_bf16() is onednn
    # AVX-512 without BF16 (oneDNN would emulate it, slowly)
    monkeypatch.setattr(runtime_module, "cpu_flags", lambda: {"avx512f", "avx512bw", "avx512_vnni"})
    assert runtime_module.cpu_has_fast_bf16() is False
    monkeypatch.setattr(runtime_module, "cpu_flags", lambda: {"amx_bf16"})
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)  # a torch without oneDNN
    assert runtime_module.cpu_has_fast_bf16() is False


def test_cuda_asked_without_a_card_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="teacher.device: cuda requested"):
        runtime_module.resolve_dtype("auto", "cuda")


def test_persona_keys_hold_the_resolved_runtime(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # auto is the CPU
    key = persona_key("k", "fp", "auto", "auto", "prompt", chat_template=False)
    assert key == persona_key("k", "fp", "float32", "cpu", "prompt", chat_template=False)
    assert key != persona_key("k", "fp", "bfloat16", "cpu", "prompt", chat_template=False)
    assert key != persona_key("k", "fp", "float32", "cpu", "another prompt", chat_template=False)


def test_cpu_flags_are_read_from_this_machine():
    flags = runtime_module.cpu_flags()
    if Path("/proc/cpuinfo").exists():
        assert flags and all(" " not in f for f in flags)


def test_answers_cached_under_other_library_versions_are_not_served(tmp_path, tiny_teacher, asked, monkeypatch):
    ask(tiny_teacher, params(tmp_path))
    real = runtime_module.version
    monkeypatch.setattr(runtime_module, "version",
                        lambda name: "999.0" if name == "transformers" else real(name))
    runtime_module.software_versions.cache_clear()
    try:
        ask(tiny_teacher, params(tmp_path))
    finally:
        monkeypatch.undo()
        runtime_module.software_versions.cache_clear()
    assert sum(asked) == 2 * len(STATES)


def test_slm_answers_are_keyed_by_the_slm_precision_not_the_teacher_one(tmp_path, tiny_teacher, asked):
    def read(p):
        cache = AnswerCache(p.generate.cache)
        try:
            return slm_answers(tiny_teacher, SCENARIO, STATES, p, cache)
        finally:
            cache.close()

    read(params(tmp_path))
    read(params(tmp_path, teacher={"dtype": "bfloat16"}))  # the teacher's dtype is not the SLM's
    assert sum(asked) == len(STATES)
    read(params(tmp_path, slm={"dtype": "bfloat16"}))
    assert sum(asked) == 2 * len(STATES)


def test_generate_refuses_unseeded_sampled_verbalized_answers(tmp_path, tiny_teacher):
    p = params(tmp_path, teacher={"readout": "verbalized", "temperature": 0.7}, generate={"states": 4})
    with pytest.raises(UserError, match=r"^teacher\.temperature: 0\.7 .*set it to 0") as err:
        generate(p, SCENARIO, tiny_teacher, tmp_path / "d.parquet", tmp_path / "f.json", tmp_path / "m.json")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "d.parquet").exists()


# ---- local model directories -------------------------------------------------------

MIB = 1 << 20


def test_dirs_differing_only_in_a_middle_byte_have_different_fingerprints(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, 5 * MIB, dtype=np.uint8).tobytes()
    for name in ("base", "merged"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
        (tmp_path / name / "model.safetensors").write_bytes(data)
    middle = tmp_path / "merged/model.safetensors"
    with middle.open("r+b") as fh:
        fh.seek(5 * MIB // 2)
        fh.write(bytes([data[5 * MIB // 2] ^ 1]))
    assert fingerprint_dir(tmp_path / "base") != fingerprint_dir(tmp_path / "merged")


def test_an_unchanged_dir_is_fingerprinted_again_without_reading_its_files(tmp_path, monkeypatch):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(os.urandom(3 * MIB))
    first = fingerprint_dir(model)
    opened: list[str] = []
    real_open = io.open

    def spy(file, *args, **kwargs):
        opened.append(os.fspath(file) if isinstance(file, (str, os.PathLike)) else repr(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy)
    monkeypatch.setattr(io, "open", spy)
    assert fingerprint_dir(model) == first
    monkeypatch.undo()
    assert not [f for f in opened if Path(f).is_relative_to(model)]
    # A rewrite that keeps the size and restores the mtime is still noticed (ctime moves).
    stat = (model / "model.safetensors").stat()
    (model / "model.safetensors").write_bytes(os.urandom(3 * MIB))
    os.utime(model / "model.safetensors", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert fingerprint_dir(model) != first


def test_model_json_keeps_the_fingerprint_it_had_as_teacher_json(tmp_path):
    # A local model pointing at a directory the pipeline made (a merged SLM as teacher) holds
    # its metadata file, same bytes, under the new name: its fingerprint, and so its cached
    # answers, must not change with the rename.
    for name, meta in (("old", "teacher.json"), ("new", "model.json")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"weights")
        (tmp_path / name / meta).write_text('{"source": "merged", "fingerprint": "merged:sha256:x"}')
    assert fingerprint_dir(tmp_path / "old") == fingerprint_dir(tmp_path / "new")


def test_a_model_directory_written_before_model_json_asks_for_its_download_stage(tmp_path):
    (tmp_path / "teacher.json").write_text('{"source": "hub", "path": ".", "fingerprint": "hub:x@0"}')
    for check in (read_model_json, is_model_dir, is_model_marker):
        with pytest.raises(UserError, match=r"teacher\.json.*model\.json; rerun its download stage"):
            check(tmp_path)
    assert not is_model_dir(tmp_path / "nothing-here")


def test_a_local_model_changed_in_place_is_refused_not_answered_from_the_cache(tmp_path, tiny_teacher, asked):
    weights = tmp_path / "weights"
    shutil.copytree(yaml.safe_load((tiny_teacher / "model.json").read_text())["path"], weights)
    download(str(weights), "main", tmp_path / "teacher")
    ask(tmp_path / "teacher", params(tmp_path))
    file = weights / "model.safetensors"
    with file.open("r+b") as fh:  # retrained in place: same size, other weights
        fh.seek(file.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0x40]))
    with pytest.raises(UserError, match=r"changed since the download stage.*`dvc repro -f download@teacher`"):
        ask(tmp_path / "teacher", params(tmp_path))
    assert sum(asked) == len(STATES)
