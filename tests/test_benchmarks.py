"""The results-integrity logic of the benchmark scripts: recipe guard and cached runs."""

import argparse
import dataclasses
import filecmp
import json
import re
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import classifier_bound  # noqa: E402
import phase1_variants  # noqa: E402
import phase2_spread  # noqa: E402
import phase2_variants  # noqa: E402
import report  # noqa: E402
import reproduce  # noqa: E402
import side_by_side  # noqa: E402
from classifier_bound import (  # noqa: E402
    class_codes,
    kept_rows,
    last_classifiers,
    probability_map,
)
from report import (  # noqa: E402
    PeerLead,
    classifier_source,
    describe_leads,
    overview_rows,
    overview_section,
    peer_goal_lines,
    peers_ahead,
    phase1_from_lines,
    reproduction_section,
    sibling_peer_rows,
    spread_seed_lines,
    spread_summary_lines,
)
from reproduce import (  # noqa: E402
    adopt_phase1,
    adopted_rounds,
    check_phase1_source,
    check_same_labelling,
    check_same_recipe,
    map_on,
    recipe_record,
)
from test_asymmetric_learned_codes import centres_reference, nearest_reference  # noqa: E402
from test_fitted_codes import fitted_reference  # noqa: E402
from test_graded_codes import graded_reference  # noqa: E402
from test_view_averaged import shifted  # noqa: E402

from tfhash import data, self_training  # noqa: E402
from tfhash.codebooks import (  # noqa: E402
    arrange_codebook,
    capped_codebook,
    class_codebook,
    class_similarity,
)
from tfhash.metrics import mean_average_precision, retrieval_report  # noqa: E402
from tfhash.model import TrainConfig, build_classifier, get_backbone  # noqa: E402

import common  # noqa: E402
from common import cache_files, cached_training, round_stem, stored_config  # noqa: E402


def args(self_train=0, epochs=20, rounds=1, pseudo_phase2=False, flip_pseudo_labels=False,
         fresh_student=False, keep=1.0):
    return argparse.Namespace(self_train=self_train, self_train_epochs=epochs,
                              self_train_rounds=rounds, pseudo_phase2=pseudo_phase2,
                              flip_pseudo_labels=flip_pseudo_labels,
                              fresh_student=fresh_student, self_train_keep=keep,
                              ensemble_with=None)


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
    with pytest.raises(SystemExit, match=r"\['pseudo_phase2'\]"):
        check_same_recipe(taught, recipe_record(args(100, 20, pseudo_phase2=True),
                                                TrainConfig()))
    with pytest.raises(SystemExit, match=r"\['flip_pseudo_labels'\]"):
        check_same_recipe(taught, recipe_record(args(100, 20, flip_pseudo_labels=True),
                                                TrainConfig()))
    with pytest.raises(SystemExit, match=r"\['fresh_student'\]"):
        check_same_recipe(taught, recipe_record(args(100, 20, fresh_student=True),
                                                TrainConfig()))
    with pytest.raises(SystemExit, match=r"\['self_train_keep'\]"):
        check_same_recipe(taught, recipe_record(args(100, 20, keep=0.98), TrainConfig()))


def test_a_cached_round_is_reused_only_when_made_the_same_way(tmp_path):
    plain_round = {"wall_s": 1.0, "n_pseudo": 20}  # written before the options existed
    flipped_round = {**plain_round, "flip_pseudo_labels": True}
    fresh_round = {**plain_round, "fresh_student": True}
    kept_round = {**plain_round, "self_train_keep": 0.98}
    check_same_labelling(plain_round, args(100), tmp_path / "r.json")
    check_same_labelling(flipped_round, args(100, flip_pseudo_labels=True), tmp_path / "r.json")
    check_same_labelling(fresh_round, args(100, fresh_student=True), tmp_path / "r.json")
    check_same_labelling(kept_round, args(100, keep=0.98), tmp_path / "r.json")
    refused = [
        (plain_round, args(100, flip_pseudo_labels=True), "flip_pseudo_labels = False, not True"),
        (flipped_round, args(100), "flip_pseudo_labels = True, not False"),
        (plain_round, args(100, fresh_student=True), "fresh_student = False, not True"),
        (fresh_round, args(100), "fresh_student = True, not False"),
        (plain_round, args(100, keep=0.98), "self_train_keep = 1.0, not 0.98"),
        (kept_round, args(100, keep=0.9), "self_train_keep = 0.98, not 0.9"),
    ]
    for record, made_now, message in refused:
        with pytest.raises(SystemExit, match=re.escape(f"r.json: this cached round was made "
                                                       f"with {message}")):
            check_same_labelling(record, made_now, tmp_path / "r.json")


def test_a_round_an_ensemble_labelled_is_reused_only_by_as_many_members(tmp_path):
    plain_round = {"wall_s": 1.0, "n_pseudo": 20}
    taught_round = {**plain_round, "teacher_members": 3}
    check_same_labelling(plain_round, args(100), tmp_path / "r.json", teacher_members=1)
    check_same_labelling(taught_round, args(100), tmp_path / "r.json", teacher_members=3)
    for record, members, message in ((plain_round, 3, "teacher_members = 1, not 3"),
                                     (taught_round, 1, "teacher_members = 3, not 1"),
                                     (taught_round, 2, "teacher_members = 3, not 2")):
        with pytest.raises(SystemExit, match=re.escape(f"made with {message}")):
            check_same_labelling(record, args(100), tmp_path / "r.json", members)


@pytest.mark.parametrize("source, wanted, rounds", [(1, 1, 2), (2, 2, 2), (2, 1, 0), (1, 3, 0)])
def test_self_training_rounds_are_taken_only_from_an_ensemble_of_the_same_size(
        source, wanted, rounds):
    made = results_of(TrainConfig(ensemble_size=source), labelling=args(2000, rounds=2))
    assert adopted_rounds(made, recipe_record(args(2000, rounds=2),
                                              TrainConfig(ensemble_size=wanted))) == rounds


def tiny_model(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])


def test_cache_files_name_each_rounds_weights_and_record():
    assert cache_files("seed0", round_stem(0)) == (Path("seed0/pretrained.weights.h5"),
                                                   Path("seed0/pretrained.json"))
    assert cache_files(Path("s") / "member2", round_stem(3)) == (
        Path("s/member2/self_trained_round3.weights.h5"),
        Path("s/member2/self_trained_round3.json"))


def test_cached_training_trains_once_then_loads_the_saved_weights(tmp_path):
    weights, record = tmp_path / "run" / "m.weights.h5", tmp_path / "run" / "m.json"
    calls = []

    def train():
        calls.append(1)
        return tiny_model(1), {"note": "first"}

    trained, facts = cached_training(weights, record, build=lambda: tiny_model(2), train=train)
    assert facts["note"] == "first" and facts["wall_s"] >= 0
    assert json.loads(record.read_text()) == facts
    loaded, again = cached_training(weights, record, build=lambda: tiny_model(2), train=train)
    assert calls == [1] and again == facts
    # a freshly built model (other seed) got the trained weights, not its own
    assert not np.allclose(tiny_model(2).get_weights()[0], trained.get_weights()[0])
    for a, b in zip(loaded.get_weights(), trained.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_cached_training_writes_nothing_when_training_fails(tmp_path):
    weights, record = tmp_path / "m.weights.h5", tmp_path / "m.json"

    def crash():
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        cached_training(weights, record, build=lambda: tiny_model(0), train=crash)
    assert sorted(tmp_path.iterdir()) == []


def test_cached_training_retrains_when_the_record_is_missing(tmp_path):
    weights, record = tmp_path / "m.weights.h5", tmp_path / "m.json"
    cached_training(weights, record, build=lambda: tiny_model(0),
                    train=lambda: (tiny_model(1), {}))
    record.unlink()  # weights without their record: an interrupted run
    _, facts = cached_training(weights, record, build=lambda: tiny_model(0),
                               train=lambda: (tiny_model(3), {"note": "again"}))
    assert facts["note"] == "again" and record.exists()


def test_probability_ranking_ap_by_hand():
    # query of class 0; database scores 0.9 (class 1), 0.8 (class 0), 0.1 (class 0):
    # relevant at ranks 2 and 3, AP = (1/2 + 2/3) / 2
    q = np.array([[1.0, 0.0]])
    db = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9]])
    got = probability_map(q, np.array([0]), db, np.array([1, 0, 0]))
    assert got == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_probability_ranking_of_one_hot_vectors_is_class_code_ranking_with_index_ties():
    rng = np.random.default_rng(0)
    q_probs = np.eye(4)[rng.integers(0, 4, 30)]
    db_probs = np.eye(4)[rng.integers(0, 4, 200)]
    q_labels, db_labels = rng.integers(0, 5, 30), rng.integers(0, 4, 200)  # class 4: none
    expected = mean_average_precision(class_codes(q_probs), q_labels, class_codes(db_probs),
                                      db_labels, ties="index")
    assert probability_map(q_probs, q_labels, db_probs, db_labels) == pytest.approx(expected)


def test_class_codes_are_plus_one_at_the_predicted_class_only():
    probs = np.array([[0.2, 0.7, 0.1], [0.5, 0.3, 0.2]])
    np.testing.assert_array_equal(class_codes(probs), [[-1, 1, -1], [1, -1, -1]])


def test_map_on_scores_only_the_selected_queries():
    # database: two class-0 items at (+1, +1), two class-1 items at (-1, -1)
    db = np.array([[1, 1], [1, 1], [-1, -1], [-1, -1]])
    queries = np.array([[1, 1], [1, 1], [-1, -1]])  # the second one is coded as class 0
    report = retrieval_report(queries, np.array([0, 1, 1]), db, np.array([0, 0, 1, 1]))
    # the miscoded query finds its class at ranks 3 and 4: AP = (1/3 + 2/4) / 2 = 5/12
    assert map_on(np.array([True, True, True]), report) == pytest.approx(
        (1 + 5 / 12 + 1) / 3, abs=1e-6)
    assert map_on(np.array([True, False, True]), report) == 1.0
    assert map_on(np.array([False, True, False]), report) == pytest.approx(5 / 12, abs=1e-6)
    assert map_on(np.zeros(3, bool), report) is None


def test_round_stems_name_the_cached_classifier_files():
    assert [round_stem(r) for r in range(4)] == [
        "pretrained", "self_trained", "self_trained_round2", "self_trained_round3"]


def test_append_keeps_the_bound_rows_of_the_runs_not_named(tmp_path):
    path = tmp_path / "classifier_bound.json"
    assert kept_rows(path, ["a"]) == []  # no file yet
    rows = [{"run": "a", "seed": 0}, {"run": "b", "seed": 0}, {"run": "a", "seed": 1},
            {"run": "c", "seed": 2}]
    path.write_text(json.dumps({"rows": rows}))
    assert kept_rows(path, ["a"]) == [rows[1], rows[3]]
    assert kept_rows(path, ["a", "c"]) == [rows[1]]


def test_append_with_a_method_keeps_the_named_runs_rows_of_other_methods(tmp_path):
    path = tmp_path / "phase2_spread.json"
    rows = [{"run": "a", "seed": 0}, {"run": "a", "method": "exponentiated", "seed": 1},
            {"run": "a", "method": "dsh", "seed": 0}, {"run": "b", "method": "dsh", "seed": 0}]
    path.write_text(json.dumps({"rows": rows}))
    # rows from before the method field are the exponentiated loss's
    assert kept_rows(path, ["a"], "dsh") == [rows[0], rows[1], rows[3]]
    assert kept_rows(path, ["a"], "exponentiated") == [rows[2], rows[3]]


def test_an_ensemble_runs_members_are_loaded_from_their_folders(tmp_path):
    seed_dir = tmp_path / "run" / "seed0"
    saved = []
    for folder in (seed_dir, seed_dir / "member1"):  # where reproduce.py caches them
        folder.mkdir(parents=True)
        classifier = build_classifier(get_backbone("mnist_cnn", (28, 28, 1), width=4), 10)
        classifier.save_weights(folder / "pretrained.weights.h5")
        (folder / "pretrained.json").write_text('{"wall_s": 1.0}')
        saved.append(classifier.get_weights())
    doc = {"config": {"backbone_width": 4, "ensemble_size": 2},
           "rows": [{"dataset": "mnist-5k", "protocol": "cnnh", "seed": 0}]}
    ((seed, _, members, stem),) = last_classifiers("run", doc, tmp_path)
    assert (seed, stem, len(members)) == (0, "pretrained", 2)
    for member, weights in zip(members, saved):
        for a, b in zip(member.get_weights(), weights):
            np.testing.assert_array_equal(a, b)
    (seed_dir / "member1" / "pretrained.weights.h5").unlink()
    with pytest.raises(SystemExit, match="member1/pretrained.weights.h5"):
        list(last_classifiers("run", doc, tmp_path))


def test_classifier_bound_refuses_runs_it_cannot_score_in_one_line(tmp_path, monkeypatch,
                                                                    capsys):
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    monkeypatch.setattr(classifier_bound, "RESULTS", tmp_path)
    (tmp_path / "exp.json").write_text(json.dumps({"config": {}, "rows": [
        {"method": "exponentiated", "pretrain": True}, {"method": "dsh", "pretrain": False}]}))
    for argv, message in ((["--runs", "exp", "missing"], "--runs: no "),
                          (["--runs", "exp", "--method", "dsh"],
                           "--method: exp has no pre-trained rows of dsh")):
        monkeypatch.setattr(sys, "argv", ["classifier_bound.py", *argv])
        with pytest.raises(SystemExit) as stopped:
            classifier_bound.main()
        said = capsys.readouterr().err + str(stopped.value.code)
        assert message in said and "Traceback" not in said
    assert not (tmp_path / "classifier_bound.json").exists()


def test_the_bound_table_names_the_method_and_encoding_of_rows_from_before_those_fields():
    doc = {"benchmark": "classifier_bound", "created": "now", "machine": {}, "versions": {},
           "rows": [{"run": "old", "seed": 0, "map_probabilities": 0.5},
                    {"run": "new", "seed": 0, "map_probabilities": 0.6,
                     "encoding": "flip-averaged", "method": "graded-asymmetric"}]}
    table = report.classifier_bound_section(doc)
    assert "| old | 0 | 0.5 | plain | exponentiated |" in table
    assert "| new | 0 | 0.6 | flip-averaged | graded-asymmetric |" in table


def test_phase2_spread_refuses_runs_it_cannot_redo_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(phase2_spread, "RESULTS", tmp_path)
    (tmp_path / "p2.json").write_text(json.dumps({"config": {"pseudo_phase2": True},
                                                  "rows": []}))
    (tmp_path / "exp.json").write_text(json.dumps({"config": {}, "rows": [
        {"method": "exponentiated", "pretrain": True}, {"method": "dsh", "pretrain": False}]}))
    for argv, message in ((["--runs", "p2"], "p2 trains phase 2 on pseudo-labelled images"),
                          (["--runs", "missing"], "--runs: no results file"),
                          (["--runs", "p2", "--repeats", "0"], "--repeats must be"),
                          (["--runs", "exp", "--method", "dsh"],
                           "--method: exp has no pre-trained rows of dsh"),
                          (["--runs", "exp", "--method", "graded"], "--method: invalid choice")):
        monkeypatch.setattr(sys, "argv", ["phase2_spread.py", *argv])
        with pytest.raises(SystemExit):
            phase2_spread.main()
        assert message in capsys.readouterr().err
    assert not (tmp_path / "phase2_spread.json").exists()


def test_phase2_spread_quotes_the_plain_pretrained_rows_of_the_method_on_each_seed(
        tmp_path, monkeypatch):
    def row(seed, bits, value, method="exponentiated", pretrain=True, **extra):
        return {"seed": seed, "bits": bits, "map": value, "method": method,
                "pretrain": pretrain, **extra}

    rows = [row(0, 12, 0.91), row(0, 24, 0.92), row(1, 12, 0.81), row(1, 24, 0.82),
            row(0, 12, 0.5, method="dpsh"), row(0, 12, 0.6, pretrain=False),
            row(0, 12, 0.7, encoding="flip-averaged"), row(1, 24, 0.4, method="dsh")]
    (tmp_path / "r.json").write_text(json.dumps({"config": {}, "rows": rows}))
    monkeypatch.setattr(phase2_spread, "RESULTS", tmp_path)
    monkeypatch.setattr(phase2_spread, "recipe_config",
                        lambda path, seed: TrainConfig(bits=(12, 24), seed=seed))
    monkeypatch.setattr(phase2_spread, "last_classifiers",
                        lambda run, doc, work_dir: iter([(1, None, [None], "pretrained"),
                                                         (0, None, [None], "self_trained")]))
    assert phase2_spread.spread_rows("r", "unused", repeats=0) == [
        {"run": "r", "method": "exponentiated", "seed": 1, "classifier": "pretrained",
         "phase2": "results file", "map_12": 0.81, "map_24": 0.82},
        {"run": "r", "method": "exponentiated", "seed": 0, "classifier": "self_trained",
         "phase2": "results file", "map_12": 0.91, "map_24": 0.92},
    ]
    assert phase2_spread.spread_rows("r", "unused", repeats=0, method="dsh") == [
        {"run": "r", "method": "dsh", "seed": 1, "classifier": "pretrained",
         "phase2": "results file", "map_24": 0.4},
        {"run": "r", "method": "dsh", "seed": 0, "classifier": "self_trained",
         "phase2": "results file"},
    ]


def test_phase2_spread_more_numbers_new_reruns_on_from_those_held(tmp_path, monkeypatch):
    held = [{"run": "r", "method": "dsh", "seed": 0, "phase2": "results file", "map_12": 0.5},
            {"run": "r", "method": "dsh", "seed": 0, "phase2": "rerun 1", "map_12": 0.6},
            {"run": "r", "seed": 0, "phase2": "rerun 3", "map_12": 0.7},  # exponentiated
            {"run": "other", "method": "dsh", "seed": 1, "phase2": "rerun 4", "map_12": 0.8}]
    (tmp_path / "phase2_spread.json").write_text(json.dumps({"rows": held}))
    (tmp_path / "r.json").write_text(json.dumps({"config": {}, "rows": [
        {"seed": s, "bits": 12, "map": 0.4, "method": "dsh", "pretrain": True}
        for s in (0, 1)]}))
    monkeypatch.setattr(phase2_spread, "RESULTS", tmp_path)
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    monkeypatch.setattr(phase2_spread, "recipe_config",
                        lambda path, seed: TrainConfig(bits=(12,), seed=seed))
    monkeypatch.setattr(phase2_spread, "last_classifiers",
                        lambda run, doc, work_dir: iter([(0, None, [None], "pretrained"),
                                                         (1, None, [None], "pretrained")]))
    trained = []
    monkeypatch.setattr(phase2_spread, "rerun_maps", lambda members, split, config:
                        trained.append(config.seed) or {"map_12": 0.9})
    assert phase2_spread.reruns_held(held, "r", "dsh") == {0: 1}
    assert phase2_spread.reruns_held(held, "r", "exponentiated") == {0: 3}
    monkeypatch.setattr(sys, "argv", ["phase2_spread.py", "--runs", "r", "--method", "dsh",
                                      "--repeats", "2", "--more"])
    phase2_spread.main()
    rows = json.loads((tmp_path / "phase2_spread.json").read_text())["rows"]
    assert rows[:4] == held  # every row kept, the held dsh reruns of r included
    assert [(r["seed"], r["phase2"], r["map_12"]) for r in rows[4:]] == [
        (0, "rerun 2", 0.9), (0, "rerun 3", 0.9),  # on from rerun 1, not quoted again
        (1, "results file", 0.4), (1, "rerun 1", 0.9), (1, "rerun 2", 0.9)]
    assert trained == [0, 0, 1, 1]


def test_phase2_spread_takes_append_or_more_not_both(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["phase2_spread.py", "--runs", "r", "--append",
                                      "--more"])
    with pytest.raises(SystemExit):
        phase2_spread.main()
    assert "not allowed with argument" in capsys.readouterr().err


def results_of(config, dataset="cifar10", protocol="cnnh", labelling=None):
    """A results file holding one row of ``config`` (self-trained as ``labelling``, an
    `args`), as --phase1-from reads it back."""
    return {"rows": [{"dataset": dataset, "protocol": protocol}],
            **saved(recipe_record(labelling or args(), config))}


def test_phase1_is_taken_from_a_run_that_differs_in_phase_2_only():
    source = results_of(TrainConfig(pretrain_epochs=300, hash_epochs=40, margin=0.5, seed=0))
    check_phase1_source(source, "cifar10", "cnnh", recipe_record(
        args(), TrainConfig(pretrain_epochs=300, hash_epochs=160, margin=1.0, seed=2)))


@pytest.mark.parametrize("change, names", [
    ({"pretrain_epochs": 100}, "['pretrain_epochs']"),
    ({"augment": "crop_flip", "precision": "mixed_bfloat16"}, "['augment', 'precision']"),
    ({"augment": "randaugment", "augment_strength": 0.1}, "['augment', 'augment_strength']"),
])
def test_phase1_is_refused_from_a_run_that_trained_it_otherwise(change, names):
    source = results_of(TrainConfig(pretrain_epochs=300))
    new = recipe_record(args(), TrainConfig(**{"pretrain_epochs": 300, **change}))
    with pytest.raises(SystemExit, match=re.escape(f"differs from this recipe in {names}")):
        check_phase1_source(source, "cifar10", "cnnh", new)


def test_phase1_is_refused_from_another_dataset_or_protocol():
    for dataset, protocol in (("mnist", "cnnh"), ("cifar10", "full")):
        with pytest.raises(SystemExit, match=f"not {dataset} {protocol}"):
            check_phase1_source(results_of(TrainConfig()), dataset, protocol,
                                recipe_record(args(), TrainConfig()))


def test_adopted_phase1_is_a_byte_copy_and_another_one_is_refused(tmp_path):
    source, seed_dir = tmp_path / "a" / "seed0", tmp_path / "b" / "seed0"
    source.mkdir(parents=True)
    (source / "pretrained.weights.h5").write_bytes(bytes(range(256)))
    (source / "pretrained.json").write_text('{"wall_s": 12.5}')
    adopt_phase1(source, seed_dir)
    for stem in ("pretrained.weights.h5", "pretrained.json"):
        assert (seed_dir / stem).read_bytes() == (source / stem).read_bytes()
    inodes = {p.name: p.stat().st_ino for p in seed_dir.iterdir()}
    adopt_phase1(source, seed_dir)  # a rerun finds the same files: nothing is rewritten
    assert {p.name: p.stat().st_ino for p in seed_dir.iterdir()} == inodes
    (source / "pretrained.weights.h5").write_bytes(bytes(range(255, -1, -1)))
    with pytest.raises(SystemExit, match="is another classifier"):
        adopt_phase1(source, seed_dir)
    assert (seed_dir / "pretrained.weights.h5").read_bytes() == bytes(range(256))


@pytest.mark.parametrize("source, wanted, rounds", [
    (args(), args(2000, rounds=3), 0),  # nothing to take but the classifier
    (args(2000, rounds=4), args(), 0),  # this run does not self-train
    (args(2000, rounds=4), args(2000, rounds=5), 4),  # four taken, the fifth trained here
    (args(2000, rounds=4), args(2000, rounds=2), 2),
    (args(2000), args(2000), 1),
    (args(2000, rounds=2), args(1000, rounds=2), 0),  # each way of labelling differs
    (args(2000, rounds=2), args(2000, epochs=5, rounds=2), 0),
    (args(2000, rounds=2), args(2000, rounds=2, keep=0.98), 0),
    (args(2000, rounds=2), args(2000, rounds=2, flip_pseudo_labels=True), 0),
    (args(2000, rounds=2), args(2000, rounds=2, fresh_student=True), 0),
    (args(2000, rounds=2), args(2000, rounds=2, pseudo_phase2=True), 2),  # phase 2 only
])
def test_self_training_rounds_are_taken_only_when_made_the_same_way(source, wanted, rounds):
    config = TrainConfig(pretrain_epochs=100)
    assert adopted_rounds(results_of(config, labelling=source),
                          recipe_record(wanted, config)) == rounds


def test_adopted_rounds_are_copied_with_the_classifier(tmp_path):
    source = tmp_path / "a"
    source.mkdir()
    for i, stem in enumerate(["pretrained", "self_trained", "self_trained_round2",
                              "self_trained_round3"]):
        (source / f"{stem}.weights.h5").write_bytes(bytes([i]) * 8)
        (source / f"{stem}.json").write_text(f'{{"wall_s": {i}}}')
    adopt_phase1(source, tmp_path / "b", rounds=2)
    taken = sorted(p.name for p in (tmp_path / "b").iterdir())
    assert taken == ["pretrained.json", "pretrained.weights.h5", "self_trained.json",
                     "self_trained.weights.h5", "self_trained_round2.json",
                     "self_trained_round2.weights.h5"]
    for name in taken:
        assert (tmp_path / "b" / name).read_bytes() == (source / name).read_bytes()


def test_adopted_ensemble_members_are_copied_up_to_the_smaller_ensemble(tmp_path):
    source = tmp_path / "a"
    for k, stem in enumerate(["pretrained", "member1/pretrained", "member2/pretrained"]):
        (source / stem).parent.mkdir(parents=True, exist_ok=True)
        (source / f"{stem}.weights.h5").write_bytes(bytes([k]) * 8)
        (source / f"{stem}.json").write_text(f'{{"wall_s": {k}}}')
    adopt_phase1(source, tmp_path / "b", members=2)
    taken = sorted(str(p.relative_to(tmp_path / "b")) for p in (tmp_path / "b").rglob("*.*"))
    assert taken == ["member1/pretrained.json", "member1/pretrained.weights.h5",
                     "pretrained.json", "pretrained.weights.h5"]
    for name in taken:
        assert (tmp_path / "b" / name).read_bytes() == (source / name).read_bytes()


def test_adopting_from_a_seed_that_has_no_phase1_names_the_missing_file(tmp_path):
    with pytest.raises(SystemExit, match=re.escape(str(tmp_path / "pretrained.weights.h5"))):
        adopt_phase1(tmp_path, tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_the_report_names_the_run_each_seeds_phase1_came_from():
    rows = [{"seed": 1, "phase1_from": "cifar10-cnnh-p300"}, {"seed": 0},
            {"seed": 1, "phase1_from": "cifar10-cnnh-p300"}, {"seed": 2, "phase1_from": "b"}]
    (line,) = phase1_from_lines(rows)
    assert line.endswith("that run's): b (seed 2); cifar10-cnnh-p300 (seed 1). "
                         "Seed 0: phase 1 trained in this run.")
    rows = [{"seed": s, "phase1_from": "p300"} for s in (2, 0, 1, 0)]
    assert phase1_from_lines(rows)[0].endswith(": p300 (seeds 0, 1, 2).")
    assert phase1_from_lines([{"seed": 0}]) == []
    (line,) = phase1_from_lines(rows, members=2)
    assert line.endswith(": p300 (seeds 0, 1, 2; 1 of the 2 ensemble members, the rest "
                         "trained in this run).")
    (line,) = phase1_from_lines(rows, members=3, source_members={"p300": 2})
    assert "p300 (seeds 0, 1, 2; 2 of the 3 ensemble members" in line
    (line,) = phase1_from_lines(rows, members=3, source_members={"p300": 3})
    assert line.endswith(": p300 (seeds 0, 1, 2; all 3 ensemble members).")
    # seeds appended later train their own classifier; the no-pre-training rows do not count
    later = rows + [{"seed": s, "pretrain": True} for s in (4, 3)] + [{"seed": 5,
                                                                       "pretrain": False}]
    (line,) = phase1_from_lines(later)
    assert line.endswith(": p300 (seeds 0, 1, 2). Seeds 3, 4: phase 1 trained in this run.")
    (line,) = phase1_from_lines(rows + [{"seed": 0, "pretrain": False}])
    assert line.endswith(": p300 (seeds 0, 1, 2).")


def reproduction_doc(name, maps, method="exponentiated", pretrain=True, encoding="plain",
                     dataset="mnist", pseudo=False):
    """A results file whose rows have mAP ``maps[seed][bits]``."""
    rows = [{"dataset": dataset, "protocol": "cnnh", "method": method, "pretrain": pretrain,
             "encoding": encoding, "seed": seed, "bits": bits, "map": value,
             **({"n_pseudo": 100} if pseudo else {})}
            for seed, by_bits in maps.items() for bits, value in by_bits.items()]
    return {"benchmark": name, "rows": rows}


def test_the_overview_lists_three_seed_pretrained_exponentiated_rows_labelled_ones_first():
    three = {0: {12: 0.97, 48: 0.98}, 1: {12: 0.98, 48: 0.99}, 2: {12: 0.99, 48: 1.0}}
    strict = reproduction_doc("strict", three)
    for kind in (dict(method="dsh"), dict(pretrain=False)):  # peers and ablation: left out
        strict["rows"] += reproduction_doc("strict", three, **kind)["rows"]
    strict["rows"] += reproduction_doc("strict", {0: {12: 1.0}, 1: {12: 1.0}},
                                       encoding="flip-averaged")["rows"]  # two seeds only
    selfish = reproduction_doc("self", {s: {12: 0.995, 48: 0.995} for s in range(3)},
                               pseudo=True)
    better = reproduction_doc("better", {s: {12: 0.985 + s / 1000} for s in range(3)})
    found = overview_rows([selfish, strict, better])
    assert [(f.run, f.unlabelled, f.encoding, f.seeds) for f in found] == [
        ("better", False, "plain", [0, 1, 2]), ("strict", False, "plain", [0, 1, 2]),
        ("self", True, "plain", [0, 1, 2])]
    assert found[0].means == pytest.approx({12: 0.986})
    assert found[1].means == pytest.approx({12: 0.98, 48: 0.99})


def test_the_overview_counts_peers_trained_on_the_same_classifiers_in_another_run():
    def run(name, maps, method="exponentiated", source=None, accuracy=0.8, epochs=80):
        doc = reproduction_doc(name, maps, method=method)
        for r in doc["rows"]:
            r.update(query_accuracy=accuracy + r["seed"] / 100, hash_epochs=epochs,
                     **({"phase1_from": source} if source else {}))
        return doc

    three = {s: {12: 0.70, 48: 0.70} for s in range(3)}
    trained = run("trained", three)  # phase 1 here; its peers ran in "peers", from it
    peers = run("peers", {s: {12: 0.69, 48: 0.71} for s in range(3)}, "orthohash", "trained")
    peers["rows"] += run("peers", three, "exponentiated", "trained")["rows"]  # not a peer
    # from "peers", so from "trained" in the end: a chain is followed to its source
    mine = run("mine", {s: {12: 0.72, 48: 0.705} for s in range(3)}, source="peers")
    other = run("other", {s: {48: 0.99} for s in range(3)}, "dsh", "elsewhere")
    longer = run("longer", {s: {48: 0.99} for s in range(3)}, "dsh", "trained", epochs=160)
    redrawn = run("redrawn", {s: {48: 0.99} for s in range(3)}, "dsh", "trained",
                  accuracy=0.7)  # a classifier trained again: not the same one
    runs = {d["benchmark"]: d for d in (trained, peers, mine, other, longer, redrawn)}
    assert classifier_source("mine", runs) == "trained"
    assert {r["method"] for r in sibling_peer_rows(mine, runs)} == {"orthohash (peers)"}
    ahead = {f.run: describe_leads(f.peers_ahead, brief=True)
             for f in overview_rows(list(runs.values()))}
    assert ahead == {"trained": "orthohash (peers) at 48 bits (seeds 0, 1, 2)",
                     "peers": "orthohash at 48 bits (seeds 0, 1, 2)",
                     "mine": "orthohash (peers) at 48 bits (seeds 0, 1, 2)"}


def test_the_overview_says_a_target_is_missed_when_only_rounding_reaches_it():
    just_under = reproduction_doc("under", {s: {12: 0.98996} for s in range(3)})
    table = overview_section([just_under])
    (row,) = [line for line in table.splitlines() if line.startswith("| mnist | cnnh | under")]
    assert row.endswith("| 0.9900 | no |  |")
    assert "| Mu & Liu 2017 (paper, abstract) | labelled | | | | 0.99 |" in table
    at = reproduction_doc("at", {s: {12: 0.99} for s in range(3)})
    assert "| 0.9900 | yes |" in overview_section([at])


def test_graded_rows_are_listed_as_ours_and_never_counted_as_a_peer():
    doc = reproduction_doc("run", {s: {12: 0.98} for s in range(3)})
    doc["rows"] += reproduction_doc("run", {s: {12: 0.99} for s in range(3)},
                                    method="graded")["rows"]
    assert peers_ahead(doc["rows"], "plain") is None  # graded is ahead, but not a peer
    doc["rows"] += reproduction_doc("run", {0: {12: 0.985}}, method="dsh")["rows"]
    assert [a.peer for a in peers_ahead(doc["rows"], "plain")] == ["dsh"]
    found = overview_rows([doc])
    assert [(f.method, round(f.means[12], 6)) for f in found] == [("graded", 0.99),
                                                                   ("exponentiated", 0.98)]
    table = overview_section([doc])
    assert "| run | labelled | graded class codes | plain | 3 | 0.9900 | yes |" in table
    assert "| run | labelled | exponentiated loss | plain | 3 | 0.9800 | no |" in table


def run_tiny(tmp_path, monkeypatch, *options):
    """reproduce.py end to end on the bundled digits with a tiny recipe and ``options``:
    results files in ``tmp_path``, cached classifiers under the returned folder."""
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    work = tmp_path / "runs"
    monkeypatch.setattr(sys, "argv", [
        "reproduce.py", "--dataset", "mnist-5k", "--bits", "12", "--pretrain-epochs", "1",
        "--backbone-width", "4", "--work-dir", str(work), "--verbose", "0", *options])
    reproduce.main()
    return work


def test_a_run_killed_in_phase1_resumes_from_its_last_epoch(tmp_path, monkeypatch):
    """reproduce.py stopped by an error at the end of phase 1's second of three epochs,
    then run again: the second run trains the last two epochs only (the first came back
    from the backup), removes the backup, and its cached record says it resumed."""
    import keras

    class Stop(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("killed")

    pretrain, histories = reproduce.model.pretrain, []

    def pretrain_and_record(*args, callbacks=(), **kwargs):
        classifier, history = pretrain(*args, callbacks=(*callbacks, *extra), **kwargs)
        histories.append(history)
        return classifier, history

    monkeypatch.setattr(reproduce.model, "pretrain", pretrain_and_record)
    options = ("--methods", "graded", "--no-ablation", "--pretrain-epochs", "3")
    extra = [Stop()]
    with pytest.raises(RuntimeError, match="killed"):
        run_tiny(tmp_path, monkeypatch, *options)
    seed_dir = tmp_path / "runs" / "mnist-5k-cnnh" / "seed0"
    assert (seed_dir / "backup" / "phase1").is_dir()
    assert not (seed_dir / "pretrained.json").exists()
    extra = []
    run_tiny(tmp_path, monkeypatch, *options)
    assert histories[-1].epoch == [1, 2]
    assert not (seed_dir / "backup" / "phase1").exists()
    assert json.loads((seed_dir / "pretrained.json").read_text())["resumed_from_backup"] is True
    rows = json.loads((tmp_path / "mnist-5k-cnnh.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["graded"]
    assert rows[0]["phase1_resumed"] is True  # its wall_s_pretrain is the resumed part only
    monkeypatch.setattr(report, "HERE", tmp_path)  # its plots go here, not into benchmarks/
    doc = json.loads((tmp_path / "mnist-5k-cnnh.json").read_text())
    assert re.search(r"^Wall time of phase 1 per seed \(s; \*: resumed from its per-epoch "
                     r"backup, the resumed part only\): \d+\*;",
                     reproduction_section(doc), re.MULTILINE)


def test_phase1_only_trains_the_named_members_where_the_full_run_finds_them(
        tmp_path, monkeypatch):
    """reproduce.py --phase1-only --members 1 trains member 1 alone (its own seed, one
    thread as asked) and writes no results; the full run then trains member 0 only."""
    pretrain, seeds, threads = reproduce.model.pretrain, [], []

    def pretrain_and_record(backbone, split, num_classes, config, **kwargs):
        seeds.append(config.seed)
        return pretrain(backbone, split, num_classes, config, **kwargs)

    monkeypatch.setattr(reproduce.model, "pretrain", pretrain_and_record)
    monkeypatch.setattr(reproduce, "use_threads", threads.append)
    options = ("--methods", "graded", "--no-ablation", "--ensemble-size", "2")
    work = run_tiny(tmp_path, monkeypatch, *options, "--phase1-only", "--members", "1",
                    "--threads", "1")
    seed_dir = work / "mnist-5k-cnnh" / "seed0"
    assert seeds == [reproduce.model.MEMBER_SEED_STRIDE] and threads == [1]
    assert (seed_dir / "member1" / "pretrained.weights.h5").exists()
    assert not (seed_dir / "pretrained.json").exists()
    assert not (tmp_path / "mnist-5k-cnnh.json").exists()
    run_tiny(tmp_path, monkeypatch, *options)
    assert seeds == [reproduce.model.MEMBER_SEED_STRIDE, 0] and threads == [1]
    rows = json.loads((tmp_path / "mnist-5k-cnnh.json").read_text())["rows"]
    assert {r["method"] for r in rows} == {"graded"}


@pytest.mark.parametrize("options, message", [
    (("--members", "1"), "--members needs --phase1-only"),
    (("--phase1-only", "--members", "2"), "numbered 0 to 1; got [2]"),
    (("--phase1-only", "--self-train", "1"), "drop --self-train"),
    (("--phase1-only", "--threads", "0"), "--threads"),
])
def test_phase1_only_options_are_checked(tmp_path, monkeypatch, capsys, options, message):
    with pytest.raises(SystemExit):
        run_tiny(tmp_path, monkeypatch, "--methods", "graded", "--no-ablation",
                 "--ensemble-size", "2", *options)
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_side_by_side_compares_the_epochs_an_hour_of_both_ways(tmp_path, monkeypatch):
    """side_by_side.py end to end on the bundled digits: one training, then two at once in
    their own processes; each way's epochs an hour recomputed from its median epochs."""
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    recipe = tmp_path / "tiny.json"
    recipe.write_text(json.dumps({"config": {"backbone_width": 4, "augment": "none"}}))
    monkeypatch.setattr(sys, "argv", ["side_by_side.py", "--recipe-from", str(recipe),
                                      "--dataset", "mnist-5k", "--epochs", "2"])
    side_by_side.main()
    doc = json.loads((tmp_path / "side_by_side.json").read_text())
    alone, both = doc["rows"]
    assert (alone["processes"], alone["threads_each"], both["processes"],
            both["threads_each"]) == (1, "default", 2, 1)
    assert len(alone["median_epoch_s"]) == 1 and len(both["median_epoch_s"]) == 2
    for row in (alone, both):
        assert row["epochs_per_hour"] == pytest.approx(
            sum(3600 / m for m in row["median_epoch_s"]), rel=0.01)
    assert doc["throughput_ratio"] == pytest.approx(
        both["epochs_per_hour"] / alone["epochs_per_hour"], abs=0.001)


@pytest.mark.parametrize("argv, message", [
    (["--recipe-from", "no-such-run"], "--recipe-from: no results file 'no-such-run'"),
    (["--recipe-from", "tiny", "--processes", "1"], "must be at least 2, got 4 and 1"),
])
def test_side_by_side_options_are_checked(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.setattr(side_by_side, "RESULTS", tmp_path)
    (tmp_path / "tiny.json").write_text(json.dumps({"config": {}}))
    monkeypatch.setattr(sys, "argv", ["side_by_side.py", *argv])
    with pytest.raises(SystemExit):
        side_by_side.main()
    assert message in capsys.readouterr().err


def test_a_run_on_another_runs_phase1_marks_only_the_rows_that_start_from_it(
        tmp_path, monkeypatch):
    """reproduce.py end to end, twice, on the bundled digits: a run, then one that takes
    its classifier (--phase1-from) and also trains the no-pre-training row."""
    tiny = ["--hash-epochs", "1", "--methods", "exponentiated"]
    run_tiny(tmp_path, monkeypatch, *tiny, "--no-ablation")
    work = run_tiny(tmp_path, monkeypatch, *tiny, "--phase1-from", "mnist-5k-cnnh", "--tag=-on")

    source = json.loads((tmp_path / "mnist-5k-cnnh.json").read_text())["rows"]
    rows = json.loads((tmp_path / "mnist-5k-cnnh-on.json").read_text())["rows"]
    pre = [r for r in rows if r["pretrain"]]
    scratch = [r for r in rows if not r["pretrain"]]
    assert len(pre) == len(scratch) == 1
    assert pre[0]["phase1_from"] == "mnist-5k-cnnh"
    # trained in one go: no backup left, and the record does not say it resumed
    record = json.loads((work / "mnist-5k-cnnh" / "seed0" / "pretrained.json").read_text())
    assert set(record) == {"wall_s"}
    assert not (work / "mnist-5k-cnnh" / "seed0" / "backup" / "phase1").exists()
    assert "phase1_resumed" not in pre[0]
    monkeypatch.setattr(report, "HERE", tmp_path)
    doc = json.loads((tmp_path / "mnist-5k-cnnh.json").read_text())
    assert re.search(r"^Wall time of phase 1 per seed \(s\): \d+;", reproduction_section(doc),
                     re.MULTILINE)
    assert pre[0]["wall_s_pretrain"] == source[0]["wall_s_pretrain"]  # not trained again
    assert "phase1_from" not in scratch[0] and scratch[0]["wall_s_pretrain"] == 0.0
    weights = "seed0/pretrained.weights.h5"
    assert filecmp.cmp(work / "mnist-5k-cnnh" / weights, work / "mnist-5k-cnnh-on" / weights,
                       shallow=False)


def count_passes(monkeypatch):
    """Records the number of images of every pass of any Keras model over an image set
    (every ``Model.predict`` call) while reproduce.py runs."""
    import keras

    coded = []
    predict = keras.Model.predict
    monkeypatch.setattr(keras.Model, "predict", lambda model, images, *args, **kwargs: (
        coded.append(len(images)) or predict(model, images, *args, **kwargs)))
    return coded


def test_graded_rows_code_the_classifier_with_no_phase_2(tmp_path, monkeypatch):
    """reproduce.py --methods graded end to end on the bundled digits: one row per encoding,
    no phase 2 recorded, mAP equal to the codes the rule gives the cached classifier."""
    coded = count_passes(monkeypatch)
    work = run_tiny(tmp_path, monkeypatch, "--methods", "graded", "graded-arranged",
                    "graded-asymmetric", "--no-ablation", "--shift-average")
    # the query accuracy's pass, then per encoding one pass over the training images (the
    # arrangement), one over the queries and one over the database, for every method
    split = data.make_split(data.load_dataset("mnist-5k"), "cnnh", seed=0, val_fraction=0.0)
    assert sorted(coded) == sorted([len(split.query)] + [len(split.train), len(split.query),
                                                         len(split.database)] * 2)
    doc = json.loads((tmp_path / "mnist-5k-cnnh.json").read_text())
    rows = {(r["method"], r["encoding"]): r for r in doc["rows"]}
    assert set(rows) == {(m, e) for m in ("graded", "graded-arranged", "graded-asymmetric")
                         for e in ("plain", "shift-averaged")}
    assert doc["pr_curves"]["method"] == "graded"
    assert all(r["hash_epochs"] == 0 and r["wall_s_hash"] == 0 and r["n_train_phase2"] == 0
               for r in rows.values())
    monkeypatch.setattr(report, "HERE", tmp_path)  # its plots go here, not into benchmarks/
    section = reproduction_section(doc)
    assert ("per method, first seed (s): graded none (codes from the classifier), "
            "graded-arranged none (codes from the classifier), graded-asymmetric none "
            "(codes from the classifier).") in section

    config = TrainConfig(bits=12, pretrain_epochs=1, backbone_width=4)
    classifier = build_classifier(config.make_backbone((28, 28, 1)), 10)
    classifier.load_weights(work / "mnist-5k-cnnh" / "seed0" / "pretrained.weights.h5")
    similarity = class_similarity(classifier.predict(split.train.images, verbose=0),
                                  split.train.labels)
    arranged = arrange_codebook(class_codebook(10, 12), similarity)
    q_probs, db_probs = (classifier.predict(part.images, verbose=0)
                         for part in (split.query, split.database))
    for method, book in (("graded", class_codebook(10, 12)), ("graded-arranged", arranged)):
        q, db = graded_reference(q_probs, book), graded_reference(db_probs, book)
        expected = mean_average_precision(q, split.query.labels, db, split.database.labels)
        assert rows[(method, "plain")]["map"] == pytest.approx(expected, abs=1e-6)
    # asymmetric: the same database codes, each query on its likeliest class's codeword
    expected = mean_average_precision(arranged[q_probs.argmax(1)], split.query.labels,
                                      graded_reference(db_probs, arranged),
                                      split.database.labels)
    assert rows[("graded-asymmetric", "plain")]["map"] == pytest.approx(expected, abs=1e-6)
    assert len({rows[(m, "plain")]["map"]
                for m in ("graded", "graded-arranged", "graded-asymmetric")}) == 3


def test_flip_shift_averaged_graded_rows_average_the_probabilities_over_ten_views(
        tmp_path, monkeypatch):
    """reproduce.py --flip-shift-average end to end on the bundled digits: the extra rows'
    codes are placed from the class probabilities averaged over the image, its four
    one-pixel shifts and the mirror images of all five (numpy views, not the model's)."""
    work = run_tiny(tmp_path, monkeypatch, "--methods", "graded-asymmetric", "--no-ablation",
                    "--flip-shift-average")
    rows = {r["encoding"]: r for r in
            json.loads((tmp_path / "mnist-5k-cnnh.json").read_text())["rows"]}
    assert set(rows) == {"plain", "flip+shift-averaged"}

    split = data.make_split(data.load_dataset("mnist-5k"), "cnnh", seed=0, val_fraction=0.0)
    classifier = build_classifier(
        TrainConfig(bits=12, backbone_width=4).make_backbone((28, 28, 1)), 10)
    classifier.load_weights(work / "mnist-5k-cnnh" / "seed0" / "pretrained.weights.h5")

    def averaged(images):
        moved = [images] + [shifted(images, r, c) for r, c in ((-1, 0), (1, 0), (0, -1), (0, 1))]
        return np.mean([classifier.predict(v, verbose=0)
                        for v in moved + [m[:, :, ::-1] for m in moved]], axis=0)

    train, query, database = (averaged(part.images)
                              for part in (split.train, split.query, split.database))
    book = arrange_codebook(class_codebook(10, 12), class_similarity(train, split.train.labels))
    expected = mean_average_precision(book[query.argmax(1)], split.query.labels,
                                      graded_reference(database, book), split.database.labels)
    assert rows["flip+shift-averaged"]["map"] == pytest.approx(expected, abs=1e-6)
    assert rows["plain"]["map"] != pytest.approx(expected, abs=1e-6)


def test_graded_rows_after_self_training_code_the_last_rounds_student(tmp_path, monkeypatch):
    """reproduce.py --self-train with a graded method end to end on the bundled digits: the
    row's codes come from the last self-training round's classifier, not from phase 1's."""
    work = run_tiny(tmp_path, monkeypatch, "--methods", "graded-asymmetric", "--no-ablation",
                    "--self-train", "20", "--self-train-epochs", "1", "--self-train-rounds", "2",
                    "--tag=-self")
    doc = json.loads((tmp_path / "mnist-5k-cnnh-self.json").read_text())
    (row,) = doc["rows"]
    assert row["self_train_rounds"] == 2 and row["hash_epochs"] == 0
    monkeypatch.setattr(report, "HERE", tmp_path)
    assert "Self-training per seed (query accuracy before -> after;" in reproduction_section(doc)

    seed_dir = work / "mnist-5k-cnnh-self" / "seed0"
    last, first = (tiny_classifier(seed_dir, round_stem(r)) for r in (2, 0))
    assert row["map"] == pytest.approx(tiny_asymmetric_map(last), abs=1e-6)
    assert row["map"] != pytest.approx(tiny_asymmetric_map(first), abs=1e-6)


def tiny_classifier(folder, stem="pretrained", width=4):
    """The classifier `run_tiny` cached as ``folder/<stem>.weights.h5``, at backbone
    ``width``."""
    classifier = build_classifier(
        TrainConfig(bits=12, backbone_width=width).make_backbone((28, 28, 1)), 10)
    classifier.load_weights(Path(folder) / f"{stem}.weights.h5")
    return classifier


def tiny_asymmetric_map(*classifiers, database_codes=graded_reference,
                        codebook=class_codebook):
    """Reference for a `run_tiny` graded-asymmetric row at 12 bits from ``classifiers``'
    class probabilities averaged (numpy): the database coded graded (or by
    ``database_codes(probabilities, codebook)``) on the codebook (``codebook(10, 12)``)
    arranged by the training probabilities and each query as its likeliest class's
    codeword."""
    split = data.make_split(data.load_dataset("mnist-5k"), "cnnh", seed=0, val_fraction=0.0)
    train, query, database = (np.mean([c.predict(part.images, verbose=0) for c in classifiers],
                                      axis=0)
                              for part in (split.train, split.query, split.database))
    book = arrange_codebook(codebook(10, 12), class_similarity(train, split.train.labels))
    return mean_average_precision(book[query.argmax(1)], split.query.labels,
                                  database_codes(database, book), split.database.labels)


def test_fitted_asymmetric_rows_code_the_database_to_explain_its_probabilities(
        tmp_path, monkeypatch):
    """reproduce.py --methods fitted-asymmetric and fitted-capped-asymmetric end to end on
    the bundled digits, beside graded-asymmetric on the same classifier: each fitted row's
    mAP is that of the least cross-entropy codes over all 12-bit codes (brute force) on
    its codebook, and it records its temperature."""
    coded = count_passes(monkeypatch)
    work = run_tiny(tmp_path, monkeypatch, "--methods", "graded-asymmetric",
                    "fitted-asymmetric", "fitted-capped-asymmetric", "--no-ablation",
                    "--fit-temperature", "0.15")
    # the graded and the fitted codes come from one pass of the classifier per image set
    # (and the query accuracy's and the arrangement's passes)
    assert len(coded) == 4
    rows = {r["method"]: r for r in json.loads(
        (tmp_path / "mnist-5k-cnnh.json").read_text())["rows"]}
    classifier = tiny_classifier(work / "mnist-5k-cnnh" / "seed0")
    for method, codebook in (("fitted-asymmetric", class_codebook),
                             ("fitted-capped-asymmetric", capped_codebook)):
        expected = tiny_asymmetric_map(classifier, codebook=codebook, database_codes=lambda
                                       probs, book: fitted_reference(probs, book, 0.15))
        assert rows[method]["map"] == pytest.approx(expected, abs=1e-6)
        assert rows[method]["fit_temperature"] == 0.15
    assert "fit_temperature" not in rows["graded-asymmetric"]
    assert rows["graded-asymmetric"]["map"] == pytest.approx(tiny_asymmetric_map(classifier),
                                                             abs=1e-6)


def test_an_ensemble_teaches_member_0_which_alone_starts_phase_2_and_the_graded_rows(
        tmp_path, monkeypatch):
    """reproduce.py --ensemble-size 2 --self-train end to end on the bundled digits: the
    two members' averaged probabilities label the first round, member 0's backbone trains
    on, and the rows (graded and phase 2) start from that one student."""
    labelled = []
    real_labels = self_training.with_pseudo_labels
    monkeypatch.setattr(self_training, "with_pseudo_labels", lambda split, classifier, *a,
                        **k: labelled.append(len(classifier.layers)) or real_labels(
                            split, classifier, *a, **k))
    work = run_tiny(tmp_path, monkeypatch, "--methods", "graded-asymmetric", "exponentiated",
                    "--hash-epochs", "1", "--no-ablation", "--ensemble-size", "2",
                    "--self-train", "20", "--self-train-epochs", "1", "--self-train-rounds",
                    "2", "--tag=-ens-self")
    assert labelled == [4, 3]  # the ensemble (input, 2 members, mean), then the student
    seed_dir = work / "mnist-5k-cnnh-ens-self" / "seed0"
    first, second = (json.loads((seed_dir / f"{round_stem(r)}.json").read_text())
                     for r in (1, 2))
    assert first["teacher_members"] == 2 and "teacher_members" not in second
    doc = json.loads((tmp_path / "mnist-5k-cnnh-ens-self.json").read_text())
    rows = {r["method"]: r for r in doc["rows"]}
    assert rows["exponentiated"]["hash_epochs"] == 1
    assert "member_query_accuracy" not in rows["exponentiated"]  # the student's rows
    monkeypatch.setattr(report, "HERE", tmp_path)  # its plots go here, not into benchmarks/
    assert ("Self-training per seed (the 2 members' averaged classifier labels the first "
            "round and member 0 trains on alone, the rows start from it; query accuracy "
            "before -> after;") in reproduction_section(doc)
    assert not (seed_dir / "exponentiated-pre" / "member1").exists()  # one backbone hashed

    assert rows["graded-asymmetric"]["map"] == pytest.approx(
        tiny_asymmetric_map(tiny_classifier(seed_dir, round_stem(2))), abs=1e-6)
    with pytest.raises(SystemExit, match="teacher_members = 2, not 1"):
        check_same_labelling(first, args(20), seed_dir / "r.json")


def test_a_mixed_ensemble_averages_other_runs_cached_classifiers_of_another_width(
        tmp_path, monkeypatch):
    """reproduce.py --ensemble-with end to end on the bundled digits: a width-4 run, a
    two-member width-6 run, then a run on the first's classifier that also averages the
    second's two members, loaded, not trained: three classifiers of two widths."""
    graded = ["--methods", "graded-asymmetric", "--no-ablation"]
    work = run_tiny(tmp_path, monkeypatch, *graded)
    run_tiny(tmp_path, monkeypatch, *graded, "--backbone-width", "6", "--ensemble-size", "2",
             "--tag=-w6")
    trained = []
    pretrain = reproduce.model.pretrain
    monkeypatch.setattr(reproduce.model, "pretrain", lambda *a, **k: trained.append(a[0])
                        or pretrain(*a, **k))
    run_tiny(tmp_path, monkeypatch, *graded, "--phase1-from", "mnist-5k-cnnh",
             "--ensemble-with", "mnist-5k-cnnh-w6", "--tag=-mixed")
    assert trained == []

    doc = json.loads((tmp_path / "mnist-5k-cnnh-mixed.json").read_text())
    (row,) = doc["rows"]
    own = work / "mnist-5k-cnnh" / "seed0"
    other = work / "mnist-5k-cnnh-w6" / "seed0"
    members = [tiny_classifier(own), tiny_classifier(other, width=6),
               tiny_classifier(other / "member1", width=6)]
    split = data.make_split(data.load_dataset("mnist-5k"), "cnnh", seed=0, val_fraction=0.0)
    each = [m.predict(split.query.images, verbose=0) for m in members]
    probs = np.mean(each, axis=0)
    assert row["query_accuracy"] == pytest.approx((probs.argmax(1) == split.query.labels).mean())
    alone = [(p.argmax(1) == split.query.labels).mean() for p in each]
    assert row["member_query_accuracy"] == pytest.approx(alone)
    assert row["map"] == pytest.approx(tiny_asymmetric_map(*members), abs=1e-6)
    assert row["map"] != pytest.approx(tiny_asymmetric_map(members[0]), abs=1e-6)
    walls = [json.loads(p.read_text())["wall_s"] for p in (
        own / "pretrained.json", other / "pretrained.json", other / "member1/pretrained.json")]
    assert row["wall_s_pretrain"] == pytest.approx(sum(walls), abs=0.06)
    assert doc["config"]["ensemble_with"] == ["mnist-5k-cnnh-w6"]
    monkeypatch.setattr(report, "HERE", tmp_path)
    assert ("Mixed ensemble: each seed's classifier averages this run's 1 member with the "
            "cached phase-1 classifiers of mnist-5k-cnnh-w6 (2 members), all weighted "
            "alike") in reproduction_section(
                doc, {"mnist-5k-cnnh-w6": 2})
    assert (f"seed 0: {row['query_accuracy']:.4f} (its members alone: "
            + " / ".join(f"{a:.4f}" for a in alone) + ")") in reproduction_section(
                doc, {"mnist-5k-cnnh-w6": 2})
    one_member = json.loads((tmp_path / "mnist-5k-cnnh.json").read_text())["rows"]
    assert "member_query_accuracy" not in one_member[0]

    # classifier_bound's rows of the mixed run average all three classifiers too
    for encoding in ("plain", "flip-averaged"):
        (bound,) = classifier_bound.bound_rows("mnist-5k-cnnh-mixed", doc, work,
                                               "graded-asymmetric", encoding)
        views = [split.query.images, split.database.images]
        if encoding == "flip-averaged":  # each image and its mirror image, averaged
            views = [[v, v[:, :, ::-1]] for v in views]
        else:
            views = [[v] for v in views]
        q_probs, db_probs = (np.mean([m.predict(x, verbose=0) for m in members for x in view],
                                     axis=0) for view in views)
        expected = query_class_map_reference(q_probs, split.query.labels, db_probs,
                                             split.database.labels)
        assert bound["map_query_class"] == pytest.approx(expected, abs=1e-5)
        assert bound["query_accuracy"] == pytest.approx(
            (q_probs.argmax(1) == split.query.labels).mean())
        assert (bound["encoding"], bound["method"]) == (encoding, "graded-asymmetric")
    assert bound.get("map_hash_12") is None  # the run coded no flip-averaged rows
    (bound,) = classifier_bound.bound_rows("mnist-5k-cnnh-mixed", doc, work, "graded-asymmetric")
    assert bound["map_hash_12"] == row["map"]


def query_class_map_reference(q_probs, q_labels, db_probs, db_labels):
    """mAP@all, query by query, of the database sorted by each database image's
    probability of the query's predicted class (ties: lower index first)."""
    aps = []
    for probs, label in zip(q_probs, q_labels):
        relevant = db_labels[np.argsort(-db_probs[:, probs.argmax()], kind="stable")] == label
        ranks = np.flatnonzero(relevant) + 1  # where the relevant images are listed
        if len(ranks):
            aps.append(np.mean(np.arange(1, len(ranks) + 1) / ranks))
    return np.mean(aps)


@pytest.mark.parametrize("options, message", [
    (["--methods", "graded", "exponentiated", "--no-ablation"], "got methods ['graded', 'expo"),
    (["--methods", "graded"], "and the ablation"),
    (["--methods", "graded", "--no-ablation", "--self-train", "5"], "and --self-train"),
])
def test_a_mixed_ensemble_is_refused_for_what_trains(monkeypatch, capsys, options, message):
    monkeypatch.setattr(sys, "argv", ["reproduce.py", "--dataset", "mnist-5k",
                                      "--ensemble-with", "other", *options])
    with pytest.raises(SystemExit):
        reproduce.main()
    err = capsys.readouterr().err
    assert "--ensemble-with: a mixed ensemble codes graded methods only" in err
    assert message in err


@pytest.mark.parametrize("runs, phase1_from, message", [
    (["a", "a"], None, "a run is named twice"),
    (["mine"], None, "mine is this run"),
    (["a"], "a", "a is this run or its --phase1-from"),
    (["nothing"], None, "--ensemble-with: no "),
    (["mnist"], None, "--ensemble-with: mnist holds [('mnist', 'cnnh')], not cifar10 cnnh"),
    (["self"], None, "self is a self-trained or mixed ensemble"),
    (["mixed"], None, "mixed is a self-trained or mixed ensemble"),
    (["a", "uncached"], None, "no cached classifier file"),
    (["a", "unrecorded"], None, "unrecorded/seed0/pretrained.json"),  # the record
])
def test_a_mixed_ensemble_is_refused_from_runs_it_cannot_average(
        tmp_path, monkeypatch, runs, phase1_from, message):
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    files = {"a": results_of(TrainConfig(backbone_width=24)),
             "uncached": results_of(TrainConfig(ensemble_size=2)),
             "unrecorded": results_of(TrainConfig()),
             "mnist": results_of(TrainConfig(), dataset="mnist"),
             "self": results_of(TrainConfig(), labelling=args(20)),
             "mixed": {**results_of(TrainConfig()), "config": {"ensemble_with": ["a"]}}}
    for name, doc in files.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(doc))
    for run in ("a", "uncached", "unrecorded"):  # member 1 of the second is missing
        folder = tmp_path / "runs" / run / "seed0"
        folder.mkdir(parents=True)
        (folder / "pretrained.weights.h5").write_bytes(b"")
        if run != "unrecorded":  # its weights without the record written after them
            (folder / "pretrained.json").write_text('{"wall_s": 1.0}')
    options = argparse.Namespace(ensemble_with=runs, phase1_from=phase1_from,
                                 dataset="cifar10", protocol="cnnh", seeds=[0])
    with pytest.raises(SystemExit, match=re.escape(message)):
        reproduce.mixed_recipes(options, "mine", tmp_path / "runs" / "mine")


def test_asymmetric_rows_snap_each_query_to_the_nearest_training_centre(tmp_path, monkeypatch):
    """reproduce.py --asymmetric end to end on the bundled digits: beside each trained row,
    one with the same database codes and the queries on their nearest class centre."""
    trained = []
    training_centres = reproduce.model.training_centres
    monkeypatch.setattr(reproduce.model, "training_centres", lambda hashers, images: (
        trained.append(hashers) or training_centres(hashers, images)))
    run_tiny(tmp_path, monkeypatch, "--hash-epochs", "1", "--methods", "exponentiated",
             "--no-ablation", "--asymmetric")
    rows = {r["encoding"]: r for r in
            json.loads((tmp_path / "mnist-5k-cnnh.json").read_text())["rows"]}
    assert set(rows) == {"plain", "asymmetric"}
    (hasher,) = trained[0].values()  # the plain encoding's 12-bit hasher
    split = data.make_split(data.load_dataset("mnist-5k"), "cnnh", seed=0, val_fraction=0.0)
    train, query, database = (hasher.predict(part.images, verbose=0)
                              for part in (split.train, split.query, split.database))
    database = np.where(database >= 0, 1, -1)
    centres = centres_reference(train, split.train.labels, 10)
    symmetric = mean_average_precision(np.where(query >= 0, 1, -1), split.query.labels,
                                       database, split.database.labels)
    asymmetric = mean_average_precision(nearest_reference(query, centres), split.query.labels,
                                        database, split.database.labels)
    assert rows["plain"]["map"] == pytest.approx(symmetric, abs=1e-6)
    assert rows["asymmetric"]["map"] == pytest.approx(asymmetric, abs=1e-6)
    assert symmetric != pytest.approx(asymmetric, abs=1e-6)


def test_asymmetric_rows_need_a_trained_method(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["reproduce.py", "--dataset", "mnist-5k", "--methods",
                                      "graded", "--no-ablation", "--asymmetric"])
    with pytest.raises(SystemExit):
        reproduce.main()
    assert "--methods graded-asymmetric" in capsys.readouterr().err


def test_a_peer_is_ahead_only_on_the_seeds_both_ran_and_a_tie_is_no_lead():
    ours = reproduction_doc("r", {0: {12: 0.60, 24: 0.70}, 1: {12: 0.70, 24: 0.70},
                                  2: {12: 0.80, 24: 0.70}})["rows"]
    dpsh = reproduction_doc("r", {0: {12: 0.62, 24: 0.69}}, method="dpsh")["rows"]
    dsh = reproduction_doc("r", {0: {12: 0.50, 24: 0.70}, 1: {12: 0.80, 24: 0.71}},
                           method="dsh")["rows"]
    scratch = reproduction_doc("r", {0: {12: 0.99}}, method="dsh", pretrain=False)["rows"]
    flip = reproduction_doc("r", {0: {12: 0.99}}, method="dpsh", encoding="flip-averaged")
    rows = ours + dpsh + dsh + scratch + flip["rows"]
    # dpsh on seed 0 alone: 0.62 - 0.60 at 12 bits; dsh on seeds 0 and 1: at 12 bits
    # (0.50 + 0.80) / 2 = 0.65 ties (0.60 + 0.70) / 2, at 24 bits 0.705 - 0.70
    assert [(a.peer, a.bits, a.seeds) for a in peers_ahead(rows, "plain")] == [
        ("dpsh", 12, [0]), ("dsh", 24, [0, 1])]
    assert [a.lead for a in peers_ahead(rows, "plain")] == pytest.approx([0.02, 0.005])
    assert peers_ahead(rows, "flip-averaged") is None  # no exponentiated flip rows
    assert peers_ahead(ours, "plain") is None
    elsewhere = reproduction_doc("r", {5: {12: 0.99}}, method="dsh")["rows"]
    assert peers_ahead(ours + elsewhere, "plain") is None  # no seed to compare on
    assert peer_goal_lines(rows) == [
        "", "Peer goal, plain codes (each peer against the exponentiated loss, both "
        "pre-trained, on the seeds both ran): peers ahead: dpsh at 12 bits by 0.0200 (seed 0); "
        "dsh at 24 bits by 0.0050 (seeds 0, 1)."]
    hair = reproduction_doc("r", {0: {12: 0.60002}, 1: {12: 0.70002}}, method="orthohash")
    assert peer_goal_lines(ours + hair["rows"])[1].endswith(
        "orthohash at 12 bits by under 0.0001 (seeds 0, 1).")
    behind = reproduction_doc("r", {0: {12: 0.5, 24: 0.5}}, method="dpsh")["rows"]
    assert peer_goal_lines(ours + behind)[1].endswith("met at every length.")
    assert peer_goal_lines(ours) == []


def test_the_overview_names_the_peers_ahead_of_each_run():
    three = {s: {12: 0.9} for s in range(3)}
    alone = reproduction_doc("alone", three)
    beaten = reproduction_doc("beaten", three)
    beaten["rows"] += reproduction_doc("beaten", {1: {12: 0.91}}, method="dsh")["rows"]
    leading = reproduction_doc("leading", three)
    leading["rows"] += reproduction_doc("leading", {1: {12: 0.89}}, method="dsh")["rows"]
    table = overview_section([alone, beaten, leading]).splitlines()
    ends = {run: next(line for line in table if line.startswith(f"| mnist | cnnh | {run} |"))
            for run in ("alone", "beaten", "leading")}
    assert ends["alone"].endswith("| 0.9000 | no |  |")  # no peer ran
    assert ends["beaten"].endswith("| no | dsh at 12 bits (seed 1) |")
    assert ends["leading"].endswith("| no | none |")
    two = [PeerLead("dsh", 24, 0.01, [0]), PeerLead("dsh", 32, 0.02, [0]),
           PeerLead("dpsh", 12, 0.01, [0, 1])]
    assert describe_leads(two, brief=True) == ("dsh at 24, 32 bits (seed 0); "
                                               "dpsh at 12 bits (seeds 0, 1)")


def test_the_spread_section_lists_later_reruns_beside_their_seed():
    rows = [{"run": "a", "seed": 0, "phase2": "results file", "map_12": 0.5},
            {"run": "a", "seed": 1, "phase2": "results file", "map_12": 0.6},
            {"run": "a", "method": "dsh", "seed": 0, "phase2": "results file", "map_12": 0.7},
            {"run": "a", "method": "exponentiated", "seed": 0, "phase2": "rerun 1",
             "map_12": 0.8}]
    doc = {"benchmark": "phase2_spread", "created": "now", "machine": {}, "versions": {},
           "rows": rows}
    listed = [line for line in report.phase2_spread_section(doc).splitlines()
              if line.startswith("| a |")][:4]
    assert [line.split(" | ")[1:4] for line in listed] == [
        ["exponentiated", "0", "results file"], ["exponentiated", "0", "rerun 1"],
        ["exponentiated", "1", "results file"], ["dsh", "0", "results file"]]


def test_the_spread_summary_averages_file_reruns_and_all_per_run_and_method():
    def row(run, seed, phase2, m12, method=None):
        return {"run": run, "seed": seed, "phase2": phase2, "map_12": m12,
                **({"method": method} if method else {})}

    rows = [row("a", 0, "results file", 0.5), row("a", 0, "rerun 1", 0.7),
            row("a", 1, "results file", 0.6), row("a", 1, "rerun 1", 0.4),
            row("a", 1, "rerun 2", 0.1),
            row("a", 0, "results file", 0.9, "dsh"), row("a", 0, "rerun 1", 0.8, "dsh"),
            row("b", 0, "results file", 0.3)]  # no rerun: not summarised
    table = spread_summary_lines(rows)[3:]
    # a, exponentiated (rows without a method): file (0.5+0.6)/2, reruns (0.7+0.4+0.1)/3,
    # all five (2.3/5)
    assert table == ["| a | exponentiated | 2 | 3 | 0.5500 / 0.4000 / 0.4600 |",
                     "| a | dsh | 1 | 1 | 0.9000 / 0.8000 / 0.8500 |"]
    # per seed: a/exp seed 0 (0.5+0.7)/2, seed 1 (0.6+0.4+0.1)/3; a/dsh seed 0
    # (0.9+0.8)/2, 0.85 - 0.6 ahead of exp's seed 0; b has one phase 2: not listed
    assert spread_seed_lines(rows)[3:] == [
        "| a | exponentiated | 0 | 2 | 0.6000 |",
        "| a | exponentiated | 1 | 3 | 0.3667 |",
        "| a | dsh | 0 | 2 | 0.8500 (+0.2500) |"]
    # a peer on a seed the exponentiated loss has no rows for: no difference to give
    alone = [row("c", 3, "results file", 0.2, "dsh"), row("c", 3, "rerun 1", 0.4, "dsh")]
    assert spread_seed_lines(alone)[3:] == ["| c | dsh | 3 | 2 | 0.3000 |"]


def test_the_variants_split_keeps_queries_unseen_database_and_training_images_apart():
    # 600 images a class, each image's pixels its own index, so parts can be told apart
    n = 6000
    ids = np.arange(n)
    images = (ids[:, None] // np.array([1, 256, 65536]) % 256).astype("uint8")
    dataset = data.Dataset("cifar10", data.Images(images.reshape(n, 1, 1, 3), ids % 10), None,
                           tuple("abcdefghij"))

    def index(part):
        return {int(i) for i in part.images.reshape(len(part), 3).astype(int) @ [1, 256, 65536]}

    split, unseen = phase2_variants.validation_split(dataset, seed=3, unseen_fraction=0.1)
    protocol = data.make_split(dataset, "cnnh", seed=3, val_fraction=0.0)
    queries, training = index(split.query), index(split.train)
    assert (len(queries), len(index(unseen)), len(training)) == (500, 500, 4000)
    assert not (queries & training or queries & index(unseen) or index(unseen) & training)
    assert queries | index(unseen) | training == index(protocol.train)
    assert index(split.database) == training
    no_unseen, none = phase2_variants.validation_split(dataset, seed=3)
    assert (len(no_unseen.query), len(none), len(no_unseen.train)) == (500, 0, 4500)


def test_variant_rows_of_another_split_are_not_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(phase2_variants, "RESULTS", tmp_path)
    rows = [{"variant": "recipe"}, {"variant": "peer_dsh"}]
    (tmp_path / "study.json").write_text(json.dumps(
        {"seed": 2, "n_unseen_database": 500, "rows": rows}))
    assert phase2_variants.earlier_rows("study", 2, 500, ["recipe"]) == rows[1:]
    assert phase2_variants.earlier_rows("study", 2, 0, []) == []
    assert phase2_variants.earlier_rows("study", 1, 500, []) == []
    assert phase2_variants.unseen_share("0.1") == 0.1
    for share in ("0.95", "-0.1"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"\[0, 0.8\]"):
            phase2_variants.unseen_share(share)


def test_the_shipped_cifar10_recipe_is_the_run_the_results_name(monkeypatch):
    from tfhash import hardware
    from tfhash.model import RECIPES

    # its precision "auto" is the run's bfloat16 on that run's CPU (AVX512-BF16)
    monkeypatch.setattr(hardware, "native_bfloat16", lambda: True)
    stored = json.loads((common.RESULTS / (
        "cifar10-cnnh-w16-bf16-p300-h80-mixup-on-t4nm0cw025-arranged-t4nm0cw025.json"))
        .read_text())["config"]
    shipped = TrainConfig(bits=(12, 24, 32, 48), seed=stored["seed"],
                          **RECIPES["cifar10-cnnh"])
    # fields added since the run, at the defaults it had
    assert json.loads(json.dumps(dataclasses.asdict(shipped))) == stored_config(
        {"config": stored})


def test_phase1_variants_train_each_variant_on_the_90_percent_and_score_the_10(
        tmp_path, monkeypatch):
    recipe = {"bits": [12], "backbone_width": 4, "pretrain_epochs": 300, "augment": "shift",
              "mix": "mixup", "label_smoothing": 0.1, "precision": "mixed_bfloat16"}
    (tmp_path / "run.json").write_text(json.dumps({"config": recipe, "rows": []}))
    trained = []

    class OneClass:  # a classifier that answers one class for every image
        def __init__(self, label):
            self.label = label

        def predict(self, images, **kwargs):
            return np.eye(10)[np.full(len(images), self.label)]

    def pretrain(backbone, split, num_classes, config, verbose):
        trained.append((config, split))
        return OneClass(3 if config.augment == "shift" else 5), None

    monkeypatch.setattr(common, "RESULTS", tmp_path)
    monkeypatch.setattr(phase2_variants, "RESULTS", tmp_path)
    monkeypatch.setattr(phase1_variants.model, "pretrain", pretrain)
    monkeypatch.setattr(sys, "argv", [
        "phase1_variants.py", "--recipe-from", str(tmp_path / "run.json"), "--dataset",
        "mnist-5k", "--seed", "1", "--pretrain-epochs", "2", "--precision", "float32",
        "--variants", "recipe", "randaugment_no_mix"])
    phase1_variants.main()
    doc = json.loads((tmp_path / "phase1_variants-run.json").read_text())
    (recipe_config, split), (variant_config, same_split) = trained
    assert split is same_split and (len(split.train), len(split.query)) == (2250, 250)
    assert not {img.tobytes() for img in split.train.images} & {
        img.tobytes() for img in split.query.images}
    assert (recipe_config.pretrain_epochs, recipe_config.precision, recipe_config.seed) == (
        2, "float32", 1)
    assert (recipe_config.augment, recipe_config.mix, recipe_config.label_smoothing) == (
        "shift", "mixup", 0.1)
    assert (variant_config.augment, variant_config.mix) == ("randaugment", "none")
    shares = [np.mean(split.query.labels == label) for label in (3, 5)]
    assert [r["val_accuracy"] for r in doc["rows"]] == [round(s, 4) for s in shares]
    assert doc["best_by_val_accuracy"] == ["recipe", "randaugment_no_mix"][int(
        np.argmax(shares))]
    assert (doc["n_train"], doc["n_val"], doc["seed"]) == (2250, 250, 1)
    # a later run of one variant replaces that variant's row and keeps the other's; rows of
    # another schedule are not compared with it
    monkeypatch.setattr(sys, "argv", [*sys.argv[:-2], "randaugment_no_mix"])
    phase1_variants.main()
    again = json.loads((tmp_path / "phase1_variants-run.json").read_text())["rows"]
    assert [r["variant"] for r in again] == ["recipe", "randaugment_no_mix"]
    assert again[0] == doc["rows"][0] and len(trained) == 3
    sys.argv[sys.argv.index("--pretrain-epochs") + 1] = "3"
    phase1_variants.main()
    later = json.loads((tmp_path / "phase1_variants-run.json").read_text())["rows"]
    assert [(r["variant"], r["pretrain_epochs"]) for r in later] == [("randaugment_no_mix", 3)]


def test_every_phase1_variant_is_a_valid_change_of_the_recipe():
    base = phase2_variants.recipe_config(
        phase2_variants.RESULTS / "cifar10-cnnh-w16-bf16-p300-h40-mixup.json", seed=0)
    assert base.backbone_width == 16
    for name, overrides in phase1_variants.VARIANTS.items():
        changed = dataclasses.replace(base, **overrides)
        assert {k: getattr(changed, k) for k in overrides} == overrides, name


def test_every_phase2_variant_is_a_valid_change_of_the_recipe():
    # a misspelt setting or a refused combination (a codebook head without a
    # classification term, say) raises here rather than in a study's run
    base = phase2_variants.recipe_config(
        phase2_variants.RESULTS / "cifar10-cnnh-w16-bf16-p300-h80-mixup.json", seed=4)
    assert (base.seed, base.shared_heads, base.bits) == (4, True, (12, 24, 32, 48))
    for overrides in phase2_variants.VARIANTS.values():
        dataclasses.replace(base, **overrides)


def test_a_recipe_written_before_some_fields_reads_back_with_their_defaults():
    """An old results file's recipe lacks the fields added since: `stored_config` gives them
    the defaults they had, keeps every stored value, and `last_classifier_files` then finds
    the one phase-1 classifier such a run cached."""
    old = {"config": {"backbone_width": 24, "weight_decay": 1.0, "pretrain_epochs": 300}}
    recipe = common.stored_config(old)
    assert {k: recipe[k] for k in old["config"]} == old["config"]
    defaults = TrainConfig()
    assert (recipe["ensemble_size"], recipe["mix"], recipe["backbone_stem"]) == (
        defaults.ensemble_size, defaults.mix, defaults.backbone_stem)
    assert set(recipe) == {f.name for f in dataclasses.fields(TrainConfig)}
    assert classifier_bound.last_classifier_files("s", recipe) == [
        Path("s") / "pretrained.weights.h5"]


def test_fit_temperature_scores_held_out_codes_both_ways(tmp_path, monkeypatch):
    """fit_temperature.py end to end on the bundled digits, on a tiny run's recipe: each
    row's val_map is the mean of the held-out queries against the unseen images and back,
    with graded or brute-force fitted database codes on the arranged codebook; a second
    seed adds its rows, with --codebooks capped also fitted codes on the arranged capped
    codebook."""
    import fit_temperature

    run_tiny(tmp_path, monkeypatch, "--methods", "graded-asymmetric", "--no-ablation")
    work = tmp_path / "fit"

    def run(seed, *options):
        monkeypatch.setattr(sys, "argv", [
            "fit_temperature.py", "--recipe-from", str(tmp_path / "mnist-5k-cnnh.json"),
            "--dataset", "mnist-5k", "--bits", "12", "--temperatures", "0.1", "0.2",
            "--seed", str(seed), "--work-dir", str(work), "--verbose", "0", *options])
        fit_temperature.main()
        return json.loads((tmp_path / "fit_temperature-mnist-5k-cnnh.json").read_text())

    def references(seed, codebook):
        """The rows' val_map by method and temperature, from seed's cached classifier."""
        classifier = tiny_classifier(work / f"mnist-5k-cnnh-seed{seed}")
        split, unseen = phase2_variants.validation_split(data.load_dataset("mnist-5k"), seed,
                                                         0.2)
        train, queries, held_out = ((classifier.predict(part.images, verbose=0), part.labels)
                                    for part in (split.train, split.query, unseen))
        book = arrange_codebook(codebook(10, 12), class_similarity(*train))

        def both_ways(codes_of):
            return np.mean([mean_average_precision(book[q[0].argmax(1)], q[1],
                                                   codes_of(d[0]), d[1])
                            for q, d in ((queries, held_out), (held_out, queries))])

        return ({None: both_ways(lambda p: graded_reference(p, book)),
                 **{t: both_ways(lambda p, t=t: fitted_reference(p, book, t))
                    for t in (0.1, 0.2)}}, split, queries, held_out, unseen)

    doc = run(0)
    expected, split, queries, held_out, unseen = references(0, class_codebook)
    assert [(r["method"], r["temperature"]) for r in doc["rows"]] == [
        ("graded-asymmetric", None), ("fitted-asymmetric", 0.1), ("fitted-asymmetric", 0.2)]
    for r in doc["rows"]:
        assert r["val_map"] == pytest.approx(expected[r["temperature"]], abs=1e-5)
    assert doc["best_temperature"] == max((0.1, 0.2), key=lambda t: expected[t])
    assert doc["seeds"]["0"]["map_query_class"] == pytest.approx(np.mean([
        query_class_map_reference(*q, *d) for q, d in ((queries, held_out),
                                                       (held_out, queries))]), abs=1e-5)
    assert (doc["n_queries"], doc["n_unseen"]) == (len(split.query), len(unseen))
    again = run(1, "--codebooks", "max-min", "capped")
    assert sorted({r["seed"] for r in again["rows"]}) == [0, 1] and len(again["rows"]) == 8
    assert set(again["seeds"]) == {"0", "1"}
    capped = [r for r in again["rows"] if r["method"] == "fitted-capped-asymmetric"]
    expected = references(1, capped_codebook)[0]
    assert [r["temperature"] for r in capped] == [0.1, 0.2] and {r["seed"] for r in capped} == {1}
    for r in capped:
        assert r["val_map"] == pytest.approx(expected[r["temperature"]], abs=1e-5)
    monkeypatch.setattr(sys, "argv", [*sys.argv, "--flip-average"])
    with pytest.raises(SystemExit, match="--flip-average: .* flip_averaged=False; give this"):
        fit_temperature.main()  # rows of plain probabilities are not mixed with flipped ones


def test_the_fit_temperature_section_puts_the_codebooks_side_by_side():
    rows = [{"seed": seed, "bits": bits, "method": method, "temperature": t, "val_map": v}
            for seed, bits, method, t, v in [
                (0, 12, "fitted-asymmetric", 0.15, 0.70), (2, 12, "fitted-asymmetric", 0.15, 0.72),
                (0, 12, "fitted-capped-asymmetric", 0.15, 0.71),
                (2, 12, "fitted-capped-asymmetric", 0.15, 0.74),
                (0, 12, "fitted-capped-asymmetric", 0.2, 0.99),  # not the best temperature
                (0, 12, "graded-asymmetric", None, 0.5)]]
    doc = {"best_temperature": 0.15, "rows": rows}
    assert report.codebook_summary(doc)[2:5] == [
        "| bits | max-min codebook | capped codebook | capped - max-min |", "|---|---|---|---|",
        "| 12 | 0.7100 | 0.7250 | +0.0150 |"]
    assert report.codebook_summary({**doc, "rows": rows[:2]}) == []


def test_the_fit_temperature_section_names_each_seeds_held_out_classifier():
    doc = {"benchmark": "fit_temperature-r", "created": "2026-12-07T00:00:00+00:00",
           "machine": {"cpus": 2}, "versions": {}, "best_temperature": 0.15,
           "seeds": {"0": {"wall_s_pretrain": 3060.0, "query_accuracy": 0.804,
                           "unseen_accuracy": 0.814, "map_query_class": 0.744145}},
           "rows": [{"seed": 0, "bits": 12, "method": "fitted-asymmetric",
                     "temperature": 0.15, "val_map": 0.7248}]}
    text = report.fit_temperature_section(doc)
    assert "best_temperature=0.15" in text and "| 0 | 12 | fitted-asymmetric | 0.15 |" in text
    assert ("Seed 0: the held-out classifier labels 0.804 of the validation queries and 0.814 "
            "of the unseen images right; its own query-class order scores 0.7441 (phase 1 "
            "3060 s).") in text
