"""Safe by default: no pickle in the data path, safetensors weights only."""

import re
from pathlib import Path

import pytest
import torch

from decision_distill.errors import UserError
from decision_distill.params import parse_params
from decision_distill.students import WEIGHTS_FILE, load_student
from decision_distill.train import train_student

REPO = Path(__file__).resolve().parents[1]


def test_a_pickle_bearing_checkpoint_is_refused(tmp_path, synthetic_splits):
    params = parse_params({"train": {"epochs": 1}})
    train_student("logreg", params, synthetic_splits, tmp_path / "student", tmp_path / "live")
    load_student(tmp_path / "student")  # the genuine one loads
    torch.save({"linear.weight": torch.zeros(2, 2)}, tmp_path / "student" / WEIGHTS_FILE)  # a pickle
    with pytest.raises(UserError, match="not a safetensors file.*only safetensors"):
        load_student(tmp_path / "student")


def test_no_pickle_and_no_unsafe_torch_load_in_the_code():
    sources = list((REPO / "decision_distill").glob("*.py")) + list((REPO / "stages").glob("*.py"))
    for path in sources:
        text = path.read_text()
        assert not re.search(r"^\s*(import|from)\s+(c?pickle|dill|joblib)\b", text, re.M), path
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, f"{path}: {call}"
        assert "trust_remote_code=True" not in text, path
