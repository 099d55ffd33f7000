"""FeatureEncoder: vocabulary, token rows, dense rows, targets, errors, round trip."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from decision_distill.core.errors import UserError
from decision_distill.data.schema import Feature, Schema
from decision_distill.students.encoding import FeatureEncoder, PAD



@pytest.fixture
def schema_and_frame(synthetic_policy_frame):
    return synthetic_policy_frame(50)


def test_vocabulary_has_one_id_per_feature_value_and_pad_is_never_a_feature():
    # Both features have a value called "x": they must get different ids.
    schema = Schema(
        features=(
            Feature("a", "set", ("x", "y")),
            Feature("b", "choice", ("x", "z")),
            Feature("n", "number", low=0.0, high=1.0),
        ),
        options=("yes", "no"),
    )
    encoder = FeatureEncoder(schema)
    assert encoder.token_names == ["<pad>", "a=x", "a=y", "b=x", "b=z", "n"]
    assert encoder.width == 2 + 1 + 1
    frame = pd.DataFrame({"a": [["x", "y"], []], "b": ["x", "z"], "n": [0.5, 1.0]})
    ids, values = encoder.encode(frame)
    assert ids.tolist() == [[1, 2, 3, 5], [4, 5, PAD, PAD]]
    assert values.tolist() == [[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]]


def test_numbers_scale_from_schema_range_to_minus_one_one():
    schema = Schema(features=(Feature("t", "number", low=-5.0, high=35.0),), options=("yes", "no"))
    _, values = FeatureEncoder(schema).encode(pd.DataFrame({"t": [-5.0, 15.0, 35.0]}))
    assert values[:, 0].tolist() == [-1.0, 0.0, 1.0]


def test_rows_are_sorted_by_id_with_padding_last(schema_and_frame):
    schema, frame = schema_and_frame
    encoder = FeatureEncoder(schema)
    ids, values = encoder.encode(frame)
    assert ids.shape == values.shape == (len(frame), 6 + 5 + 1 + 1)
    for row in ids.tolist():
        real = [i for i in row if i != PAD]
        assert real == sorted(real) and len(set(real)) == len(real)
        assert row == real + [PAD] * (len(row) - len(real))
    assert (values[ids == PAD] == 0).all()


def test_set_member_order_and_duplicates_do_not_change_the_encoding(schema_and_frame):
    schema, frame = schema_and_frame
    encoder = FeatureEncoder(schema)
    shuffled = frame.copy()
    shuffled["traits"] = [list(reversed(t)) + [t[0]] for t in frame["traits"]]
    for a, b in zip(encoder.encode(frame), encoder.encode(shuffled)):
        assert torch.equal(a, b)


def test_width_is_the_same_for_every_split(schema_and_frame):
    schema, frame = schema_and_frame
    encoder = FeatureEncoder(schema)
    smallest = frame.iloc[:1].assign(traits=[["t0"]], contexts=[[]])
    assert encoder.encode(smallest)[0].shape[1] == encoder.encode(frame)[0].shape[1] == encoder.width


def test_dense_is_multi_hot_plus_numbers_from_the_same_tokens(schema_and_frame):
    schema, frame = schema_and_frame
    encoder = FeatureEncoder(schema)
    dense = encoder.dense(frame)
    assert dense.shape == (len(frame), encoder.vocab_size)
    assert (dense[:, PAD] == 0).all()
    row = frame.iloc[0]
    expected = {f"traits={v}" for v in row["traits"]} | {f"contexts={v}" for v in row["contexts"]}
    expected |= {f"game={row['game']}"}
    hot = {encoder.token_names[i] for i in torch.nonzero(dense[0] == 1).flatten().tolist()}
    assert hot - {"temperature"} == expected
    temperature = dense[0, encoder.token_names.index("temperature")].item()
    assert temperature == pytest.approx((row["temperature"] - 15.0) / 20.0, abs=1e-6)


def test_targets_follow_the_schema_option_order(synthetic_policy_frame):
    schema, frame = synthetic_policy_frame(20, options=("a", "b", "c"))
    targets = FeatureEncoder(schema).targets(frame)
    assert targets.shape == (20, 3)
    np.testing.assert_allclose(targets.numpy(), frame[["p_a", "p_b", "p_c"]].to_numpy(), rtol=1e-6)


def test_missing_teacher_probability_is_a_user_error(schema_and_frame):
    schema, frame = schema_and_frame
    frame.loc[3, "p_yes"] = np.nan
    with pytest.raises(UserError, match="state 3 .*p_yes"):
        FeatureEncoder(schema).targets(frame)


@pytest.mark.parametrize(
    "column, bad, shown",
    [("traits", ["t0", "wizard"], "'wizard'"), ("game", "chess", "'chess'"), ("game", None, "None")],
)
def test_unknown_values_name_the_feature_and_value(schema_and_frame, column, bad, shown):
    schema, frame = schema_and_frame
    frame[column] = frame[column].astype(object)
    frame.at[2, column] = bad
    with pytest.raises(UserError, match=f"feature '{column}': unknown value {shown}"):
        FeatureEncoder(schema).encode(frame)


def test_a_missing_set_is_a_user_error(schema_and_frame):
    schema, frame = schema_and_frame
    frame.at[1, "contexts"] = None
    with pytest.raises(UserError, match="feature 'contexts': expected a list of values, got None"):
        FeatureEncoder(schema).encode(frame)


def test_a_missing_number_is_a_user_error(schema_and_frame):
    schema, frame = schema_and_frame
    frame.loc[4, "temperature"] = np.nan
    with pytest.raises(UserError, match="feature 'temperature'.*not a finite number"):
        FeatureEncoder(schema).encode(frame)


def test_json_round_trip_rebuilds_the_same_encoder(schema_and_frame):
    schema, frame = schema_and_frame
    encoder = FeatureEncoder(schema)
    rebuilt = FeatureEncoder.from_json(json.loads(json.dumps(encoder.to_json())))
    assert rebuilt.token_names == encoder.token_names
    assert rebuilt.options == encoder.options
    for a, b in zip(encoder.encode(frame), rebuilt.encode(frame)):
        assert torch.equal(a, b)


def test_parquet_list_columns_encode_like_python_lists(schema_and_frame, tmp_path):
    schema, frame = schema_and_frame
    frame.to_parquet(tmp_path / "d.parquet")
    encoder = FeatureEncoder(schema)
    for a, b in zip(encoder.encode(frame), encoder.encode(pd.read_parquet(tmp_path / "d.parquet"))):
        assert torch.equal(a, b)
