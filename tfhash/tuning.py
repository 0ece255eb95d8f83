"""KerasTuner search of the exponentiated loss: margin, temperature, learning rate, quantization.

The objective is validation mAP (``val_map``, maximized), computed with `tfhash.metrics` on
a validation split carved from the training images, never the queries. Phase 1 is trained
once and every trial starts phase 2 from the same pre-trained weights.

Search spaces are JSON objects, one entry per hyperparameter:

    {"margin": {"min": 0.2, "max": 1.0},
     "temperature": {"min": 0.1, "max": 2.0, "sampling": "log"},
     "hash_lr": {"min": 1e-4, "max": 3e-3, "sampling": "log"}}

Example:

>>> hypermodel = HashingHyperModel(split, bits=12, pretrained_weights="p.weights.h5",
...                                config=TrainConfig(bits=12))
>>> tuner = keras_tuner.RandomSearch(hypermodel, objective=OBJECTIVE, max_trials=10)
>>> tuner.search()
"""

import dataclasses
import json
from pathlib import Path

import keras
import keras_tuner

from tfhash.callbacks import WeightAveraging
from tfhash.data import class_count
from tfhash.errors import check, check_int, is_number
from tfhash.metrics import mean_average_precision
from tfhash.model import (
    PRETRAINED_WEIGHTS,
    build_classifier,
    build_hash_trainer,
    compile_hash_trainer,
    encode,
    hash_training_batches,
    pretrain,
    training_similarity,
)

OBJECTIVE = keras_tuner.Objective("val_map", direction="max")
TUNABLE = {
    "margin": (1e-3, 1.0),
    "negative_margin": (0.0, 1.0),
    "temperature": (0.02, 100.0),
    "hash_lr": (1e-6, 1.0),
    "quantization": (0.0, 10.0),
}
DEFAULT_SPACE = {
    "margin": {"min": 0.2, "max": 1.0},
    "temperature": {"min": 0.1, "max": 8.0, "sampling": "log"},
}
TUNERS = ("random", "bayesian", "hyperband")


def load_space(path):
    """Reads and validates a search-space JSON file."""
    path = Path(path)
    check(path.is_file(), f"search space file {path} does not exist")
    try:
        space = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"search space file {path} is not valid JSON: {error}") from None
    return validate_space(space, str(path))


def validate_space(space, where="search space"):
    """Checks names, bounds and sampling of every entry; returns the space."""
    check(isinstance(space, dict) and space, f"{where}: expected a non-empty JSON object")
    for name, entry in space.items():
        check(name in TUNABLE, f"{where}: unknown hyperparameter {name!r}; "
                               f"expected some of {sorted(TUNABLE)}")
        check(isinstance(entry, dict) and {"min", "max"} <= set(entry),
              f"{where}: {name!r} needs an object with 'min' and 'max'")
        extra = set(entry) - {"min", "max", "sampling", "default"}
        check(not extra, f"{where}: {name!r} has unknown keys {sorted(extra)}")
        low, high = entry["min"], entry["max"]
        lo_ok, hi_ok = TUNABLE[name]
        check(
            all(is_number(v) for v in (low, high)) and lo_ok <= low < high <= hi_ok,
            f"{where}: {name!r} needs {lo_ok} <= min < max <= {hi_ok}, got {low}..{high}",
        )
        sampling = entry.get("sampling", "linear")
        check(sampling in ("linear", "log"),
              f"{where}: {name!r} sampling must be 'linear' or 'log', got {sampling!r}")
        check(sampling != "log" or low > 0, f"{where}: {name!r} with log sampling needs min > 0")
    return space


class HashingHyperModel(keras_tuner.HyperModel):
    """Builds and fits phase 2 for one set of hyperparameters: the model `train_hashers`
    trains for one code length (`tfhash.model.build_hash_trainer`: the phase-2 loss, and
    the classification term, its head and mixed batches where ``config`` asks for them).

    Args:
        split: a `tfhash.data.Split` with a non-empty ``val`` part.
        bits: code length.
        pretrained_weights: phase-1 classifier weights (``.weights.h5``) every trial starts
            from, or ``None`` to start from a random backbone.
        config: a `TrainConfig` for everything not tuned (one backbone, one run a trial:
            ``ensemble_size`` and ``soup_size`` 1).
        space: the search space (see `validate_space`); default margin and temperature.
        num_classes: classes of the labels (default: counted from the training labels).
    """

    def __init__(self, split, bits, pretrained_weights, config, space=None, num_classes=None):
        super().__init__(name=f"hasher_{bits}", tunable=True)
        check(len(split.val) > 0, "tuning needs a validation split: set val_fraction > 0")
        check(config.ensemble_size == 1 and config.soup_size == 1,
              "tuning trains one backbone once a trial: `ensemble_size` and `soup_size` "
              f"must be 1, got {config.ensemble_size} and {config.soup_size}")
        check(pretrained_weights is not None or config.classification_head != "arranged-codebook",
              "classification_head 'arranged-codebook' arranges the codewords by the phase-1 "
              "classifier: pass its `pretrained_weights`")
        self.split = split
        self.bits = bits
        self.pretrained_weights = pretrained_weights
        self.config = config
        self.space = validate_space(space or DEFAULT_SPACE)
        self.num_classes = class_count(split.train.labels, num_classes)
        self.similarity = None
        if config.classification_head == "arranged-codebook":
            classifier = self._pretrained_classifier(self._backbone(config))
            self.similarity = training_similarity(classifier, split.train)

    def _backbone(self, config):
        return config.make_backbone(self.split.train.images.shape[1:])

    def _pretrained_classifier(self, backbone):
        """The phase-1 classifier every trial starts from, its weights loaded into
        ``backbone``."""
        classifier = build_classifier(backbone, self.num_classes)
        classifier.load_weights(self.pretrained_weights)
        return classifier

    def values(self, hp):
        """The trial's config: tuned entries from ``hp``, the rest from ``self.config``.

        An entry's default (the value `default_objective` scores) is its ``"default"``,
        else ``self.config``'s value where the range holds it, else the range's minimum.
        """
        chosen = {}
        for name, entry in self.space.items():
            own = getattr(self.config, name)
            default = entry.get("default", own if own is not None
                                and entry["min"] <= own <= entry["max"] else None)
            chosen[name] = hp.Float(name, entry["min"], entry["max"],
                                    sampling=entry.get("sampling", "linear"), default=default)
        return dataclasses.replace(self.config, bits=(self.bits,), **chosen)

    def build(self, hp):
        config = self.values(hp)
        backbone = self._backbone(config)
        if self.pretrained_weights is not None:
            self._pretrained_classifier(backbone)
        trainer, _, compile_args = build_hash_trainer(backbone, (self.bits,), config,
                                                      self.num_classes, self.similarity)
        compile_hash_trainer(trainer, compile_args, config, len(self.split.train))
        return trainer

    def fit(self, hp, model, *args, callbacks=None, verbose="auto", **kwargs):
        config = self.values(hp)
        train = hash_training_batches(model, self.split.train, config, self.num_classes)
        kept = [c for c in callbacks or [] if not isinstance(c, keras.callbacks.TensorBoard)]
        if config.ema_momentum is not None:
            kept.append(WeightAveraging(config.ema_momentum))
        epochs = kwargs.get("epochs", config.hash_epochs)  # Hyperband sets its own budget
        model.fit(train.repeat(), steps_per_epoch=config.steps(len(self.split.train), 1),
                  shuffle=False,  # the batches shuffle each epoch
                  epochs=epochs, initial_epoch=kwargs.get("initial_epoch", 0),
                  callbacks=kept, verbose=verbose)
        hasher = keras.Model(model.input, model.output[f"codes_{self.bits}"])
        return {"val_map": validation_map(hasher, self.split)}


def validation_map(hasher, split):
    """mAP of validation queries against the training images as database."""
    q = encode(hasher, split.val.images, verbose=0)
    db = encode(hasher, split.train.images, verbose=0)
    return mean_average_precision(q, split.val.labels, db, split.train.labels)


def make_tuner(kind, hypermodel, max_trials, directory, project_name, seed=0):
    """A KerasTuner tuner that resumes ``directory/project_name`` when it exists."""
    check(kind in TUNERS, f"`tuner` must be one of {TUNERS}, got {kind!r}")
    max_trials = check_int(max_trials, "max_trials", 1)
    common = {"objective": OBJECTIVE, "directory": str(directory),
              "project_name": project_name, "overwrite": False, "seed": seed}
    if kind == "random":
        return keras_tuner.RandomSearch(hypermodel, max_trials=max_trials, **common)
    if kind == "bayesian":
        return keras_tuner.BayesianOptimization(hypermodel, max_trials=max_trials, **common)
    return keras_tuner.Hyperband(hypermodel, max_epochs=hypermodel.config.hash_epochs,
                                 hyperband_iterations=1, **common)


def ensure_pretrained(split, config, out_dir, num_classes=None, verbose="auto"):
    """Runs phase 1 once per tuning folder; later calls reuse the saved weights."""
    from tfhash.io import atomic_path

    path = Path(out_dir) / PRETRAINED_WEIGHTS
    if not path.exists():
        num_classes = class_count(split.train.labels, num_classes)
        backbone = config.make_backbone(split.train.images.shape[1:])
        classifier, _ = pretrain(backbone, split, num_classes, config, verbose=verbose)
        with atomic_path(path) as tmp:
            classifier.save_weights(tmp)
    return path


def default_objective(hypermodel, out_dir):
    """``val_map`` of the space's default values (cached in ``out_dir/defaults.json``)."""
    from tfhash.io import write_json

    path = Path(out_dir) / "defaults.json"
    if path.exists():
        return json.loads(path.read_text())
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    result = {"val_map": hypermodel.fit(hp, model, verbose=0)["val_map"], **hp.values}
    write_json(path, result)
    return result


def best_hparams(rows, defaults, names):
    """The values to train with: the top trial's, unless the defaults scored higher.

    ``rows`` are `trial_table` rows (any order), ``defaults`` the `default_objective` result
    and ``names`` the hyperparameters to return. Returns ``(values, source)``, ``source``
    being ``"trial"`` or ``"defaults"``; a tie goes to the defaults, the simpler choice.

    >>> best_hparams([{"val_map": 0.3, "margin": 0.6}], {"val_map": 0.31, "margin": 1.0},
    ...              ["margin"])
    ({'margin': 1.0}, 'defaults')
    """
    check(rows, "`rows` must hold at least one scored trial")
    check(set(names) <= set(rows[0]) and set(names) <= set(defaults),
          f"`names` {list(names)} must be keys of the trial rows and of `defaults`")
    top = max(rows, key=lambda r: r["val_map"])
    winner, source = (top, "trial") if top["val_map"] > defaults["val_map"] else (defaults,
                                                                                  "defaults")
    return {name: winner[name] for name in names}, source


def trial_table(tuner):
    """Rows of every finished trial: id, score and hyperparameter values."""
    rows = []
    for trial in tuner.oracle.trials.values():
        if trial.score is None:
            continue
        rows.append({"trial": trial.trial_id, "val_map": float(trial.score),
                     **trial.hyperparameters.values})
    return sorted(rows, key=lambda r: -r["val_map"])
