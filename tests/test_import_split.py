import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from decision_distill.core.errors import UserError
from decision_distill.core.params import Import, Split
from decision_distill.data.importer import import_decisions
from decision_distill.data.schema import Schema
from decision_distill.data.split import split_decisions


def decisions_table(n=60, seed=0):
    rng = np.random.default_rng(seed)
    traits = [sorted(rng.choice(["a", "b", "c", "d"], size=rng.integers(1, 3), replace=False).tolist())
              for _ in range(n)]
    return pd.DataFrame({
        "traits": traits,
        "city": rng.choice(["Rome", "Oslo"], size=n),
        "temperature": rng.uniform(-5, 30, size=n).round(1),
        "p_buy": rng.uniform(0, 1, size=n),
    })


def write_table(frame, path):
    if path.suffix == ".csv":
        frame.assign(traits=frame.traits.map(json.dumps)).to_csv(path, index=False)
    elif path.suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path)


def run_import(tmp_path, **spec):
    spec = {"features": ["traits", "city", "temperature"], "probability": "p_buy", **spec}
    out = tmp_path / "out"
    metrics = import_decisions(Import(**spec), out / "d.parquet", out / "f.json", out / "m.json")
    return metrics, pd.read_parquet(out / "d.parquet"), Schema.load(out / "f.json")


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_import_reads_every_format_into_the_same_dataset(tmp_path, suffix):
    table = decisions_table()
    write_table(table, tmp_path / f"in{suffix}")
    metrics, frame, schema = run_import(tmp_path, path=str(tmp_path / f"in{suffix}"))
    kinds = {f.name: f.kind for f in schema.features}
    assert kinds == {"traits": "set", "city": "choice", "temperature": "number"}
    assert [list(t) for t in frame.traits] == table.traits.tolist()
    np.testing.assert_allclose(frame.p_yes, table.p_buy)
    np.testing.assert_allclose(frame.p_yes + frame.p_no, 1.0)
    assert metrics["states"] == 60 and schema.options == ("yes", "no")


def test_import_with_one_column_per_option(tmp_path):
    table = decisions_table().assign(p_a=0.2, p_b=0.3, p_c=0.5)
    write_table(table, tmp_path / "in.parquet")
    _, frame, schema = run_import(tmp_path, path=str(tmp_path / "in.parquet"),
                                  probability=["p_a", "p_b", "p_c"], options=["a", "b", "c"])
    assert schema.options == ("a", "b", "c") and frame.p_c.eq(0.5).all()


@pytest.mark.parametrize("mutate, message", [
    (lambda t: t.drop(columns=["city"]), r"import\.features: column\(s\) \['city'\] not in"),
    (lambda t: t.assign(p_buy=t.p_buy + 1.0), r"import\.probability: column 'p_buy' row 0 is .*\[0, 1\]"),
    (lambda t: t.assign(p_buy="high"), r"import\.probability: .*non-numbers"),
    (lambda t: t.iloc[0:0], "holds no rows"),
])
def test_bad_import_files_are_one_line_errors_and_write_nothing(tmp_path, mutate, message):
    write_table(mutate(decisions_table()), tmp_path / "in.parquet")
    with pytest.raises(UserError, match=message) as err:
        run_import(tmp_path, path=str(tmp_path / "in.parquet"))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_non_utf8_import_file(tmp_path):
    (tmp_path / "in.csv").write_bytes("traits,city,temperature,p_buy\n\"[]\",M\xfcnchen,1,0.5\n".encode("latin-1"))
    with pytest.raises(UserError, match="not UTF-8"):
        run_import(tmp_path, path=str(tmp_path / "in.csv"))


def test_import_stage_loads_no_teacher_and_exits_2_on_bad_columns(tmp_path):
    write_table(decisions_table(), tmp_path / "in.csv")
    params = {"generate": {"source": "import"},
              "import": {"path": str(tmp_path / "in.csv"), "features": ["traits", "colour"]}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = subprocess.run([sys.executable, "stages/generate.py", "--params", str(tmp_path / "params.yaml"),
                             "--teacher", str(tmp_path / "no-teacher-here"), "--dataset", str(tmp_path / "d.parquet"),
                             "--schema", str(tmp_path / "f.json"), "--metrics", str(tmp_path / "m.json")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: import.features: column(s) ['colour'] not in " + str(tmp_path / "in.csv")
        + " (columns: traits, city, temperature, p_buy)")
    assert not (tmp_path / "d.parquet").exists()


def test_split_is_by_state_seeded_and_holds_out_whole_combinations(tmp_path, synthetic_splits):
    # rebuild one dataset from the synthetic splits, with a duplicated state
    frame = pd.concat([pd.read_parquet(synthetic_splits / f"{s}.parquet") for s in ("train", "val", "test")])
    frame = pd.concat([frame, frame.iloc[:5]]).reset_index(drop=True)
    frame["state_id"] = range(len(frame))
    frame.to_parquet(tmp_path / "d.parquet")
    spec = Split(seed=3, val=0.1, test=0.2, holdouts={"ood": [["t0", "c1"]]})
    counts = split_decisions(tmp_path / "d.parquet", synthetic_splits / "features.json", spec, tmp_path / "s")
    parts = {n: pd.read_parquet(tmp_path / "s" / f"{n}.parquet") for n in ("train", "val", "test", "ood")}
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [
        "features.json", "ood.parquet", "test.parquet", "train.parquet", "val.parquet"]
    assert sum(len(p) for p in parts.values()) == len(frame)

    def key(row):
        return (tuple(row.traits), tuple(row.contexts), row.game, row.temperature)

    seen = {}
    for name, part in parts.items():
        for row in part.itertuples():
            assert seen.setdefault(key(row), name) == name  # a state never spans two splits
    is_ood = lambda row: "t0" in row.traits and "c1" in row.contexts  # noqa: E731
    assert all(is_ood(r) for r in parts["ood"].itertuples()) and len(parts["ood"]) > 0
    assert not any(is_ood(r) for n in ("train", "val", "test") for r in parts[n].itertuples())
    assert counts["test"] == len(parts["test"])

    again = split_decisions(tmp_path / "d.parquet", synthetic_splits / "features.json", spec, tmp_path / "s2")
    assert again == counts
    pd.testing.assert_frame_equal(parts["test"], pd.read_parquet(tmp_path / "s2/test.parquet"))


def test_split_rejects_unknown_holdout_values(tmp_path, synthetic_splits):
    pd.read_parquet(synthetic_splits / "train.parquet").to_parquet(tmp_path / "d.parquet")
    with pytest.raises(UserError, match=r"split\.holdouts\.odd\[1\]: unknown .*'purple'"):
        split_decisions(tmp_path / "d.parquet", synthetic_splits / "features.json",
                        Split(holdouts={"fine": [["t0"]], "odd": [["t1"], ["t0", "purple"]]}), tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_overlapping_holdouts_share_states_and_an_empty_one_is_still_written(tmp_path, synthetic_splits):
    frame = pd.concat([pd.read_parquet(synthetic_splits / f"{s}.parquet") for s in ("train", "val", "test")])
    frame.to_parquet(tmp_path / "d.parquet")
    # no synthetic state has all six traits at once: "never" is a valid but empty holdout
    spec = Split(seed=1, holdouts={"by_trait": [["t0"]], "stag_games": [["stag"], ["c3", "c4"]],
                                   "never": [["t0", "t1", "t2", "t3", "t4", "t5"]]})
    counts = split_decisions(tmp_path / "d.parquet", synthetic_splits / "features.json", spec, tmp_path / "s")
    parts = {n: pd.read_parquet(tmp_path / "s" / f"{n}.parquet")
             for n in ("train", "val", "test", "by_trait", "stag_games", "never")}
    assert list(counts) == ["train", "val", "test", "by_trait", "stag_games", "never", "dropped_failures"]
    assert all(counts[n] == len(part) for n, part in parts.items())

    in_by_trait = lambda row: "t0" in row.traits  # noqa: E731
    in_stag_games = lambda row: row.game == "stag" or {"c3", "c4"} <= set(row.contexts)  # noqa: E731
    ids = {n: set(part["state_id"]) for n, part in parts.items()}
    assert ids["by_trait"] == set(frame[frame.apply(in_by_trait, axis=1)]["state_id"])
    assert ids["stag_games"] == set(frame[frame.apply(in_stag_games, axis=1)]["state_id"])
    both = ids["by_trait"] & ids["stag_games"]
    assert both  # overlapping states are in both holdouts...
    regular = ids["train"] | ids["val"] | ids["test"]
    assert not regular & (ids["by_trait"] | ids["stag_games"])  # ...and in no regular split
    assert regular | ids["by_trait"] | ids["stag_games"] == set(frame["state_id"])
    assert len(parts["never"]) == 0 and list(parts["never"].columns) == list(parts["test"].columns)


@pytest.mark.parametrize("split, message", [
    ({"holdouts": {"Sports": [["sports"]]}}, r"holdout name 'Sports' .*rename split\.holdouts\.Sports"),
    ({"holdouts": {"test": [["sports"]]}}, r"not be train/val/test; rename split\.holdouts\.test"),
    ({"holdouts": {"sports": []}}, r"split\.holdouts\.sports non-empty"),
    ({"holdouts": {"sports": [["a"], []]}}, r"split\.holdouts\.sports non-empty"),
    ({"ood_holdout": [["sports"], ["doubled"]]},
     r"split\.ood_holdout was renamed; use split\.holdouts: \{ood: \[\[sports\], \[doubled\]\]\}"),
])
def test_bad_holdouts_and_the_old_ood_holdout_key_are_one_line_errors(tmp_path, split, message):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"split": split}))
    result = subprocess.run([sys.executable, "stages/split.py", "--params", str(tmp_path / "params.yaml"),
                             "--out", str(tmp_path / "s")], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and re.search(message, result.stderr), result.stderr
    assert not (tmp_path / "s").exists()
