"""Safe by default: no pickle in the data path, safetensors weights only."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from decision_distill.core.errors import UserError
from decision_distill.lm.source import download, read_model_json
from decision_distill.lm.load import load_causal_lm
from decision_distill.core.params import parse_params
from decision_distill.students.models import WEIGHTS_FILE, load_student
from decision_distill.students.train import train_student

REPO = Path(__file__).resolve().parents[1]


def test_a_pickle_bearing_checkpoint_is_refused(tmp_path, synthetic_splits):
    params = parse_params({"train": {"epochs": 1}})
    train_student("logreg", params, synthetic_splits, tmp_path / "student", tmp_path / "live")
    load_student(tmp_path / "student")  # the genuine one loads
    torch.save({"linear.weight": torch.zeros(2, 2)}, tmp_path / "student" / WEIGHTS_FILE)  # a pickle
    with pytest.raises(UserError, match="not a safetensors file.*only safetensors"):
        load_student(tmp_path / "student")


def test_no_pickle_and_no_unsafe_torch_load_in_the_code():
    sources = list((REPO / "decision_distill").rglob("*.py")) + list((REPO / "stages").glob("*.py"))
    for path in sources:
        text = path.read_text()
        assert not re.search(r"^\s*(import|from)\s+(c?pickle|dill|joblib)\b", text, re.M), path
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, f"{path}: {call}"
        assert "trust_remote_code=True" not in text, path


def _pickled_copy(weights: Path, where: Path) -> Path:
    """The tiny model's directory with its weights as a pickle checkpoint (torch.save), the
    way older models ship them. (transformers 5 writes safetensors even when asked not to.)"""
    shutil.copytree(weights, where)
    (where / "model.safetensors").unlink()
    torch.save(load_file(weights / "model.safetensors"), where / "pytorch_model.bin")
    return where


def test_a_pickle_checkpoint_model_directory_is_refused(tmp_path, tiny_teacher, call_stage):
    weights = Path(read_model_json(tiny_teacher)["path"])
    pickled = _pickled_copy(weights, tmp_path / "pickled")
    with pytest.raises(UserError, match=r"pickle weights \(pytorch_model\.bin\).*only safetensors load"):
        download(str(pickled), "main", tmp_path / "teacher")
    # A model that was safe when downloaded but whose weights were swapped later
    swapped = tmp_path / "swapped"
    shutil.copytree(tiny_teacher, swapped)
    (swapped / "model.json").write_text(json.dumps({**read_model_json(tiny_teacher), "path": str(pickled)}))
    with pytest.raises(UserError, match=r"pickle weights \(pytorch_model\.bin\)"):
        load_causal_lm(swapped, device="cpu")
    # the download stage says so in one line, exit 2
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"teacher": {"model": str(pickled)}}))
    result = call_stage("stages/download.py", "--role", "teacher", "--out", str(tmp_path / "stage_out"),
                        "--params", str(tmp_path / "params.yaml"))
    assert result.code == 2 and result.stderr.count("\n") == 1 and "pytorch_model.bin" in result.stderr
    assert not (tmp_path / "stage_out").exists()


def test_models_load_without_remote_code_unless_params_say_so(tiny_teacher, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    seen = []
    for cls in (AutoModelForCausalLM, AutoTokenizer):
        real = cls.from_pretrained.__func__
        monkeypatch.setattr(cls, "from_pretrained",
                            classmethod(lambda c, *a, _real=real, **kw: seen.append(kw) or _real(c, *a, **kw)))
    defaults = parse_params({})
    assert defaults.teacher.trust_remote_code is False and defaults.slm.trust_remote_code is False
    t = defaults.teacher
    load_causal_lm(tiny_teacher, t.dtype, "cpu", t.trust_remote_code)
    assert [kw["trust_remote_code"] for kw in seen] == [False, False]
    assert seen[1]["use_safetensors"] is True
    seen.clear()
    load_causal_lm(tiny_teacher, t.dtype, "cpu", parse_params({"teacher": {"trust_remote_code": True}}).teacher.trust_remote_code)
    assert [kw["trust_remote_code"] for kw in seen] == [True, True]
