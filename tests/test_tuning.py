import json

import pytest

from tfhash import cli
from tfhash.errors import TfhashError
from tfhash.tuning import best_hparams, load_space, validate_space


def run_tune(out, trials, capsys):
    code = cli.main(["tune", "--dataset", "mnist-5k", "--bits", "8", "--max-trials", str(trials),
                     "--backbone-width", "4", "--pretrain-epochs", "1", "--hash-epochs", "1",
                     "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads((out / "trials.json").read_text())["rows"]


def test_two_trials_then_resume(tmp_path, capsys):
    rows = run_tune(tmp_path, 2, capsys)
    assert len(rows) == 2
    assert all(isinstance(r["val_map"], float) and 0 < r["val_map"] <= 1 for r in rows)
    best = json.loads((tmp_path / "best_hparams.json").read_text())
    assert set(best) == {"margin", "temperature"}
    assert (tmp_path / "tuning.png").stat().st_size > 1000
    doc = json.loads((tmp_path / "trials.json").read_text())
    assert 0 < doc["defaults"]["val_map"] <= 1 and doc["wall_s"] > 0
    stamps = {name: (tmp_path / name).stat().st_mtime_ns
              for name in ("pretrained.weights.h5", "defaults.json")}
    first = {r["trial"]: r["val_map"] for r in rows}
    # resuming runs one new trial, and neither phase 1 nor the defaults' score again
    rows = run_tune(tmp_path, 3, capsys)
    assert len(rows) == 3
    assert {name: (tmp_path / name).stat().st_mtime_ns for name in stamps} == stamps
    again = {r["trial"]: r["val_map"] for r in rows}
    assert all(again[t] == s for t, s in first.items())
    # the best file holds the top scorer among the trials and the defaults, and feeds
    # `tfhash train --hparams`
    from tfhash.cli import read_hparams

    defaults = json.loads((tmp_path / "defaults.json").read_text())
    top = max([*rows, defaults], key=lambda r: r["val_map"])
    best = read_hparams(tmp_path / "best_hparams.json")
    assert best == {name: top[name] for name in ("margin", "temperature")}


@pytest.mark.parametrize(
    "space, match",
    [
        ({"margn": {"min": 0.1, "max": 1}}, "unknown hyperparameter 'margn'"),
        ({"margin": {"min": 0.9, "max": 0.1}}, "min < max"),
        ({"temperature": {"min": 0.1, "max": 1, "sampling": "exp"}}, "sampling"),
        ({"margin": [0.1, 1]}, "needs an object"),
        ({}, "non-empty"),
    ],
)
def test_bad_search_spaces(space, match):
    with pytest.raises(TfhashError, match=match):
        validate_space(space)


def test_space_files(tmp_path):
    (tmp_path / "bad.json").write_text("{margin: 1")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_space(tmp_path / "bad.json")
    from pathlib import Path

    for shipped in (Path(__file__).parents[1] / "tuning").glob("*.json"):
        assert load_space(shipped)


TRIALS = [{"trial": "01", "val_map": 0.40, "margin": 0.6, "temperature": 1.4},
          {"trial": "00", "val_map": 0.35, "margin": 0.8, "temperature": 0.3}]


@pytest.mark.parametrize("default_score, expected, source", [
    (0.30, {"margin": 0.6, "temperature": 1.4}, "trial"),  # a trial beat the defaults
    (0.45, {"margin": 1.0, "temperature": 0.5}, "defaults"),  # no trial did
    (0.40, {"margin": 1.0, "temperature": 0.5}, "defaults"),  # a tie keeps the defaults
])
def test_best_hparams_picks_the_top_scorer(default_score, expected, source):
    defaults = {"val_map": default_score, "margin": 1.0, "temperature": 0.5}
    for rows in (TRIALS, TRIALS[::-1]):  # whatever order the rows come in
        assert best_hparams(rows, defaults, ["margin", "temperature"]) == (expected, source)


def test_best_hparams_refuses_what_it_cannot_choose_from():
    defaults = {"val_map": 0.1, "margin": 1.0}
    with pytest.raises(TfhashError, match="`rows`"):
        best_hparams([], defaults, ["margin"])
    with pytest.raises(TfhashError, match="`names`"):
        best_hparams(TRIALS, defaults, ["temperature"])


def test_trials_average_weights_when_the_config_asks(averaging_momenta, keras_warnings):
    import keras_tuner

    from tfhash import data, tuning
    from tfhash.model import TrainConfig

    seen = averaging_momenta(tuning)
    split = data.make_split(data.load_dataset("mnist-5k"), "cnnh", seed=0, val_fraction=0.1)
    config = TrainConfig(hash_epochs=1, batch_size=256, ema_momentum=0.9)
    hypermodel = tuning.HashingHyperModel(split, 8, None, config)
    hp = keras_tuner.HyperParameters()
    result = hypermodel.fit(hp, hypermodel.build(hp), verbose=0)
    assert seen == [0.9] and 0 < result["val_map"] <= 1
    assert keras_warnings() == []  # the trial's fit leaves its self-shuffling data alone
