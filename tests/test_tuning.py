import json

import numpy as np
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
        ({"margin": {"min": False, "max": True}}, r"needs 0.* <= min < max .*got False..True"),
        ({"margin": {"min": "0.1", "max": 1}}, "min < max"),
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


def test_trials_train_the_phase_2_train_does(tmp_path):
    import keras_tuner

    from tfhash import data, tuning
    from tfhash.codebooks import arrange_codebook, class_codebook
    from tfhash.model import TrainConfig, build_classifier, hash_training_batches

    split = data.make_split(data.load_dataset("mnist-5k"), "cnnh", seed=0, val_fraction=0.1)
    config = TrainConfig(bits=8, backbone_width=4, pretrain_epochs=1, hash_epochs=1,
                         batch_size=256, classification_weight=0.5,
                         classification_head="arranged-codebook", hash_mix="mixup")
    weights = tuning.ensure_pretrained(split, config, tmp_path, verbose=0)
    hypermodel = tuning.HashingHyperModel(split, 8, weights, config)
    # the classes' confusions, brute force, from the saved phase-1 classifier's probabilities
    classifier = build_classifier(config.make_backbone(split.train.images.shape[1:]), 10)
    classifier.load_weights(weights)
    probabilities = classifier.predict(split.train.images, verbose=0).astype(np.float64)
    labels = split.train.labels
    given = np.array([[probabilities[labels == a, b].mean() for b in range(10)]
                      for a in range(10)])
    expected = given + given.T
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(hypermodel.similarity, expected, rtol=1e-5, atol=1e-7)
    hp = keras_tuner.HyperParameters()
    trial = hypermodel.build(hp)
    # the classification term on the codewords arranged by those confusions, beside the
    # codes, as in `train`; the pair loss reads mixed labels as class probabilities
    assert set(trial.output) == {"codes_8", "classes_8"}
    arranged = arrange_codebook(class_codebook(10, 8, seed=0), expected, seed=0)
    np.testing.assert_array_equal(trial.loss["classes_8"].codebook, arranged)
    assert trial.loss["codes_8"].label_mode == "soft"
    _, targets = next(iter(hash_training_batches(trial, split.train, config, 10)))
    assert targets["codes_8"].shape == (256, 10)  # mixed one-hot rows, not class ids
    result = hypermodel.fit(hp, trial, verbose=0)
    assert 0 < result["val_map"] <= 1


@pytest.mark.parametrize("change, weights, match", [
    ({"ensemble_size": 2}, "p.weights.h5", "`ensemble_size` and `soup_size` must be 1"),
    ({"soup_size": 2}, "p.weights.h5", "`ensemble_size` and `soup_size` must be 1"),
    ({"classification_head": "arranged-codebook", "classification_weight": 1.0}, None,
     "pass its `pretrained_weights`"),
])
def test_a_trial_it_cannot_train_as_train_would_is_refused(change, weights, match):
    from tfhash import data, tuning
    from tfhash.model import TrainConfig

    split = data.make_split(data.load_dataset("mnist-5k"), "cnnh", seed=0, val_fraction=0.1)
    with pytest.raises(ValueError, match=match):
        tuning.HashingHyperModel(split, 8, weights, TrainConfig(bits=8, **change))


def test_tune_from_a_recipe_with_flags_over_it(tmp_path, capsys):
    code = cli.main(["tune", "--dataset", "mnist-5k", "--bits", "8", "--max-trials", "1",
                     "--recipe", "cifar10-cnnh", "--backbone-width", "4", "--precision",
                     "float32", "--pretrain-epochs", "1", "--hash-epochs", "1",
                     "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    doc = json.loads((tmp_path / "trials.json").read_text())
    config = doc["config"]
    assert (config["classification_head"], config["mix"], config["temperature"]) == (
        "arranged-codebook", "mixup", 4.0)  # the recipe's
    assert (config["backbone_width"], config["precision"], config["hash_epochs"]) == (
        4, "float32", 1)  # the flags'
    assert len(doc["rows"]) == 1 and 0 < doc["rows"][0]["val_map"] <= 1


@pytest.mark.parametrize("space, expected", [
    (None, {"margin": 0.6, "temperature": 4.0}),  # the config's own values
    ({"margin": {"min": 0.2, "max": 1.0, "default": 0.9},
      "temperature": {"min": 0.1, "max": 2.0}}, {"margin": 0.9, "temperature": 0.1}),
])
def test_the_defaults_scored_are_the_spaces_else_the_configs_when_in_range(space, expected):
    import keras_tuner

    from tfhash import data, tuning
    from tfhash.model import TrainConfig

    split = data.make_split(data.load_dataset("mnist-5k"), "cnnh", seed=0, val_fraction=0.1)
    config = TrainConfig(bits=8, margin=0.6, temperature=4.0)
    hypermodel = tuning.HashingHyperModel(split, 8, None, config, space)
    chosen = hypermodel.values(keras_tuner.HyperParameters())
    assert {name: getattr(chosen, name) for name in expected} == pytest.approx(expected)
