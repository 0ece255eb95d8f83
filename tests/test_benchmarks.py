"""The results-integrity logic of benchmarks/reproduce.py (no training)."""

import argparse
import dataclasses
import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from reproduce import check_same_recipe, recipe_record  # noqa: E402

from tfhash.model import TrainConfig  # noqa: E402


def args(self_train=0, epochs=20, rounds=1):
    return argparse.Namespace(self_train=self_train, self_train_epochs=epochs,
                              self_train_rounds=rounds)


def saved(record):
    """A results file as --append reads it back (tuples become lists)."""
    return {"config": json.loads(json.dumps(record))}


def test_append_accepts_other_seeds_of_the_same_recipe():
    earlier = saved(recipe_record(args(), TrainConfig(bits=(12, 24), seed=0)))
    check_same_recipe(earlier, recipe_record(args(), TrainConfig(bits=(12, 24), seed=5)))


def test_append_accepts_a_file_written_before_a_field_existed():
    old = dataclasses.asdict(TrainConfig(margin=0.5))
    del old["mix"], old["precision"]  # fields added later, at their defaults now
    check_same_recipe(saved(old), recipe_record(args(), TrainConfig(margin=0.5, seed=1)))


@pytest.mark.parametrize("change, names", [
    ({"margin": 0.5}, "['margin']"),
    ({"mix": "cutmix", "pretrain_epochs": 3}, "['mix', 'pretrain_epochs']"),
])
def test_append_refuses_a_different_recipe_naming_the_fields(change, names):
    earlier = saved(recipe_record(args(), TrainConfig()))
    with pytest.raises(SystemExit, match=re.escape(f"differs from the results file in {names}")):
        check_same_recipe(earlier, recipe_record(args(), TrainConfig(**change)))


def test_self_training_is_part_of_the_recipe():
    plain = saved(recipe_record(args(), TrainConfig()))
    assert "self_train" not in plain["config"]
    with pytest.raises(SystemExit, match="self_train"):
        check_same_recipe(plain, recipe_record(args(self_train=100), TrainConfig()))
    taught = saved(recipe_record(args(100, 20), TrainConfig()))
    check_same_recipe(taught, recipe_record(args(100, 20), TrainConfig(seed=2)))
    with pytest.raises(SystemExit, match=r"\['self_train_epochs'\]"):
        check_same_recipe(taught, recipe_record(args(100, 5), TrainConfig()))
    with pytest.raises(SystemExit, match=r"\['self_train_rounds'\]"):
        check_same_recipe(taught, recipe_record(args(100, 20, rounds=2), TrainConfig()))
