import subprocess
import sys

import pytest
import yaml

from decision_distill.core.errors import UserError
from decision_distill.core.params import load_params, parse_params


def test_defaults_match_the_committed_params_file():
    assert load_params("params.yaml") == parse_params({})


@pytest.mark.parametrize("raw, message", [
    ({"student": {"mlp": {"hiden": 3}}}, "unknown key 'student.mlp.hiden'; did you mean 'hidden'"),
    ({"improt": {}}, "unknown key 'improt'; did you mean 'import'"),
    ({"student": {"hiden": 3}}, "unknown key 'student.hiden'; did you mean 'hidden'"),
    # no close match: the keys valid at that level, not a bare "remove it"
    ({"student": {"mlp": {"width": 3}}}, "unknown key 'student.mlp.width'; valid keys here: lr, hidden, layers, dropout, seeds$"),
    ({"zzz": 1}, "unknown key 'zzz'; valid keys here: scenario, teacher, generate, import, split, "),
    ({"student": {"hidden": 30}}, r"student\.encoder: d_model 30 \(from student\.hidden\) is not a multiple of "
                                  r"student\.encoder\.heads 4; set student\.hidden to a multiple of 4, or "
                                  r"student\.encoder\.d_model for encoder alone$"),
    ({"student": {"decoder": {"d_model": 30}}}, r"student\.decoder: d_model 30 \(from student\.decoder\.d_model\) .*"
                                                r"set student\.decoder\.d_model to a multiple of 4$"),
    ({"train": {"epochs": -1}}, r"train\.epochs: .*greater than or equal to 1"),
    ({"train": {"epochs": "many"}}, r"train\.epochs: .*integer"),
    ({"teacher": {"readout": "vibes"}}, r"teacher\.readout: .*'tokens' or 'verbalized'"),
    ({"split": {"test": float("nan")}}, r"split\.test: must be a finite number"),
    ({"import": {"options": []}}, r"import\.options"),
    ([1, 2], "must be a mapping"),
])
def test_bad_params_are_one_line_errors_naming_the_key(raw, message):
    with pytest.raises(UserError, match=message) as err:
        parse_params(raw)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("key, bad", [("rank", 0), ("alpha", 0), ("dropout", 1.0), ("target_modules", []), ("lr", 0),
                                      ("epochs", 0), ("batch_size", 0), ("max_steps", 0), ("checkpoint_every", 0)])
def test_both_lora_sections_refuse_a_bad_shared_setting_alike(key, bad):
    """lora-train's `lora` and persona-train's (personas/params.yaml) share their training settings'
    schema: a value one refuses, the other refuses with the same message."""
    from decision_distill.personas.params import parse_persona_params

    messages = []
    for parse, raw in ((parse_params, {"lora": {key: bad}}),
                       (parse_persona_params, {"corpus": {"personas": ["a"]}, "lora": {key: bad}})):
        with pytest.raises(UserError, match=rf": lora\.{key}: ") as err:
            parse(raw, "FILE")
        messages.append(str(err.value))
    assert messages[0] == messages[1] and "\n" not in messages[0]


def test_stage_with_bad_params_exits_2_with_one_line_and_writes_nothing(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"split": {"tset": 0.2}}))
    out = tmp_path / "splits"
    result = subprocess.run(
        [sys.executable, "stages/split.py", "--params", str(tmp_path / "params.yaml"), "--out", str(out)],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "split.tset" in result.stderr and "did you mean 'test'" in result.stderr
    assert not out.exists()


def test_params_rewritten_by_dvc_keep_yes_and_no_as_strings(tmp_path):
    # `dvc exp run -S` rewrites params.yaml in YAML 1.2 and drops the quotes
    (tmp_path / "params.yaml").write_text("import:\n  options: [yes, no]\n")
    assert load_params(tmp_path / "params.yaml").import_.options == ["yes", "no"]


def test_student_hidden_is_every_width_unless_an_architecture_sets_its_own():
    default = parse_params({}).student
    assert [default.hparams(a).get("hidden", default.hparams(a).get("d_model")) for a in ("mlp", "encoder", "decoder")] \
        == [64, 64, 64]
    assert default.hparams("logreg") == {"lr": 0.05}
    student = parse_params({"student": {"hidden": 24, "encoder": {"d_model": 32}}}).student
    assert student.hparams("mlp") == {"lr": 0.003, "hidden": 24, "layers": 2, "dropout": 0.1}
    assert student.hparams("encoder")["d_model"] == 32 and student.hparams("decoder")["d_model"] == 24
    assert (student.width_key("encoder"), student.width_key("decoder"), student.width_key("logreg")) \
        == ("student.encoder.d_model", "student.hidden", None)
    # the committed file leaves the per-architecture keys null, so its students are 64 wide as before
    committed = yaml.safe_load(open("params.yaml"))["student"]
    assert committed["hidden"] == 64 and committed["mlp"]["hidden"] is None
    assert committed["encoder"]["d_model"] is None and committed["decoder"]["d_model"] is None
