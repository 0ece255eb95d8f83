"""Reproduces the paper's table under the cnnh (or full) protocol: mAP at 12/24/32/48 bits.

Per seed: phase 1 (classification pre-training) runs once; every method then starts phase 2
from those weights with all code lengths as heads on one backbone, same data, same epochs.
The ablation row trains the exponentiated loss from a random backbone. With ``--self-train N``
phase 1 continues on the training images plus the N most confident database images per
predicted class, pseudo-labelled by the phase-1 classifier (`tfhash.self_training`): the
database is used without its labels, so give such a run its own ``--tag``; with
``--ensemble-size K`` the K members' averaged classifier labels the first round and member
0's backbone trains on alone (the ensemble distilled into one network: phase 2 and the
graded rows start from it). With
``--phase1-from RUN`` every seed starts from the classifier another run (same dataset,
protocol and phase-1 recipe) trained, and its self-training rounds when both runs
self-train the same way, so a new phase-2 recipe costs no phase 1; with ``--ensemble-size K``
(phase 2 hashes from K backbones pre-trained apart) it also takes the members that run has,
up to K, and trains the rest. ``--phase1-only`` trains each seed's phase-1 classifiers
and stops (``--members``: only those ensemble members), so processes given other members
(``--threads 1`` each on a small CPU) train one run's members side by side; the full run
then finds them cached. ``--methods graded`` adds rows with no phase 2 at all: codes
placed from the phase-1 classifier's class probabilities, or with ``--self-train`` the last
round's (`tfhash.model.build_graded_hasher`);
``graded-arranged`` the same with the codewords arranged by how much the classifier mixes
up the classes on the training images (`tfhash.model.training_similarity`);
``graded-asymmetric`` codes the database as ``graded-arranged`` does and each query as its
likeliest class's codeword (`tfhash.model.build_query_hasher`); ``fitted-asymmetric`` codes
each database image where its Hamming distances to all the arranged codewords best explain
its class probabilities (`tfhash.layers.FittedClassCodes`, ``--fit-temperature``) and each
query as ``graded-asymmetric`` does; ``fitted-capped-asymmetric`` the same on nearly
equidistant codewords (`tfhash.codebooks.capped_codebook`) instead of
`tfhash.codebooks.class_codebook`'s. ``--ensemble-with RUN ...``
averages into each seed's classifier the cached classifiers (every member) of other runs,
whatever their phase-1 recipe (another width, say), loaded and not trained: a mixed
ensemble, for graded methods only. ``--asymmetric`` adds
asymmetric rows for the trained methods: the same database codes, each query coded as the
class centre of the training images' codes nearest its own (`tfhash.model.training_centres`,
`tfhash.model.build_query_hasher`); their encodings are named ``asymmetric``,
``flip-averaged asymmetric``, ... Writes
``benchmarks/results/<dataset>-<protocol>.json``, a mAP-vs-bits PNG and the PR curves; run
``benchmarks/report.py`` afterwards to refresh RESULTS.md and draw the PNGs.

    TFHASH_DATA_DIR=../shared/datasets python benchmarks/reproduce.py --dataset mnist --seeds 0 1 2
"""

import argparse
import dataclasses
import filecmp
import json
import shutil
import time
from pathlib import Path

import keras
import numpy as np
from classifier_bound import cached_records, last_classifier_files, mixed_in

from tfhash import data, model
from tfhash.backbones import STEMS
from tfhash.cli import non_negative_int, positive_float, positive_int
from tfhash.codes import binarize
from tfhash.evaluation import encode_heads, evaluate_codes, summary_row
from tfhash.hardware import use_threads
from tfhash.layers import FittedClassCodes
from tfhash.pipeline import AUGMENTATIONS, MIXES
from tfhash.self_training import self_train, unlabelled_rows, with_pseudo_labels

from common import (
    adopted_members,
    atomic_path,
    cache_files,
    cached_training,
    correct_queries,
    load_results,
    query_accuracy,
    round_stem,
    run_name,
    stored_config,
    write_results,
)

GRADED = "graded"  # codes from the classifier's probabilities: a row with no phase 2
ARRANGED = "graded-arranged"  # the same, codewords arranged by the training images
ASYMMETRIC = "graded-asymmetric"  # database as ARRANGED, queries on their class's codeword
FITTED = "fitted-asymmetric"  # database fitted to all the probabilities, queries as ASYMMETRIC
CAPPED = "fitted-capped-asymmetric"  # as FITTED, on tfhash.codebooks.capped_codebook's words
GRADED_METHODS = (GRADED, ARRANGED, ASYMMETRIC, FITTED, CAPPED)
RECIPES = {
    "mnist": {"pretrain_epochs": 40, "hash_epochs": 10, "margin": 1.0, "negative_margin": 0.0},
    "cifar10": {"pretrain_epochs": 30, "hash_epochs": 8, "backbone_width": 32, "margin": 0.5,
                "augment": "crop_flip_cutout", "classification_weight": 1.0},
}


def seed_config(args, seed):
    """The dataset's recipe with the command line's overrides, for one seed."""
    recipe = dict(RECIPES.get(args.dataset, {}))
    for key in ("pretrain_epochs", "hash_epochs", "classification_weight",
                "classification_head", "margin", "negative_margin", "temperature", "precision",
                "backbone_width", "backbone_stem", "mix", "hash_mix", "augment", "weight_decay",
                "ema_momentum", "sam_radius", "soup_size", "ensemble_size"):
        if getattr(args, key) is not None:
            recipe[key] = getattr(args, key)
    return model.TrainConfig(bits=tuple(args.bits), shared_heads=True, seed=seed, **recipe)


def cached_phase1(args, split, num_classes, config, folder):
    """Phase 1 of one backbone (an ensemble member's: ``config`` carries its seed), cached in
    ``folder`` so a repeated run reuses it; backed up there every epoch
    (`tfhash.model.pretrain`'s ``work_dir``), so a run killed part way resumes from its last
    epoch, and then its record says ``resumed_from_backup`` (its ``wall_s`` counts the
    resumed part only). Returns ``(classifier, record, weights)``, ``weights`` the file
    the classifier is cached in."""
    keras.utils.set_random_seed(config.seed)
    backbone = config.make_backbone(split.train.images.shape[1:])

    def train():
        resumed = (folder / "backup" / "phase1").exists()
        classifier = model.pretrain(backbone, split, num_classes, config, work_dir=folder,
                                    verbose=args.verbose)[0]
        return classifier, {"resumed_from_backup": True} if resumed else {}

    weights, record_file = cache_files(folder, round_stem(0))
    classifier, record = cached_training(
        weights, record_file, train=train,
        build=lambda: model.build_classifier(backbone, num_classes))
    return classifier, record, weights


def cached_member(args, split, num_classes, base, seed_dir, k):
    """`cached_phase1` of ensemble member ``k`` of a seed whose recipe is ``base``: member
    k's seed, in member k's folder under ``seed_dir``."""
    return cached_phase1(args, split, num_classes, base.member(k),
                         model.member_work_dir(seed_dir, k))


def train_members(args, dataset, configs, work_root):
    """``--phase1-only``: phase 1 of each seed's ensemble members ``args.members`` (all by
    default), trained or found in the cache folders `run_seed` loads them from."""
    for seed, base in configs.items():
        split = data.make_split(dataset, args.protocol, seed=seed, val_fraction=0.0)
        for k in range(base.ensemble_size) if args.members is None else args.members:
            record = cached_member(args, split, dataset.num_classes, base,
                                   work_root / f"seed{seed}", k)[1]
            print(f"seed {seed} member {k}: phase 1 {record['wall_s']:.0f}s"
                  + (" (resumed)" if record.get("resumed_from_backup") else ""), flush=True)


def run_seed(args, dataset, base, work_root, curves, curve_method, mixed=None):
    """The rows of one seed; ``mixed`` maps the runs of ``--ensemble-with`` to their
    recipes, whose cached classifiers join this run's members in the averaged classifier."""
    seed = base.seed
    split = data.make_split(dataset, args.protocol, seed=seed, val_fraction=0.0)
    seed_dir = work_root / f"seed{seed}"
    classifiers, records, pretrained = map(list, zip(*(
        cached_member(args, split, dataset.num_classes, base, seed_dir, k)
        for k in range(base.ensemble_size))))
    more, more_records = mixed_in(work_root.parent, mixed or {}, seed,
                                  split.train.images.shape[1:], dataset.num_classes,
                                  "--ensemble-with")
    classifiers += more
    records += more_records
    classifier = model.average_classifiers(classifiers)
    pretrain_s = sum(r["wall_s"] for r in records)
    correct = correct_queries(classifier, split)
    print(f"seed {seed}: phase 1 {pretrain_s:.0f}s, query accuracy {correct.mean():.4f}",
          flush=True)
    # facts of the classifier phase 2 starts from: the rows that start from it carry them
    extra, hash_split = {}, split
    if args.self_train:  # phase 2 and the graded rows start from the last round's student
        classifier, rounds, correct, extra, hash_split = run_self_training(
            args, classifier, classifiers[0].layers[1], split, base, seed_dir,
            float(correct.mean()))
        pretrained = [cache_files(seed_dir, round_stem(args.self_train_rounds))[0]]
        base = dataclasses.replace(base, ensemble_size=1)
        pretrain_s += sum(r["wall_s"] for r in rounds)
        records += rounds
    places = {trained_on(r) for r in records} - {None}
    if places:
        extra["phase1_trained_on"] = "; ".join(sorted(places))
    if any(r.get("resumed_from_backup") for r in records):  # wall_s_pretrain: a part only
        extra["phase1_resumed"] = True
    if args.phase1_from:
        extra["phase1_from"] = args.phase1_from
    if len(classifiers) > 1 and not args.self_train:  # what averaging gains over each alone
        extra["member_query_accuracy"] = [query_accuracy(c, split) for c in classifiers]
    accuracy = float(correct.mean())
    rows = []
    runs = [(m, True) for m in args.methods] + ([("exponentiated", False)]
                                                  if not args.no_ablation else [])
    graded = graded_codes(classifier, args, [m for m in args.methods if m in GRADED_METHODS],
                          split)
    for method, use_pretrain in runs:
        if method in GRADED_METHODS:
            codes, hash_s, phase2_split = graded[method], 0.0, None
        else:
            config = dataclasses.replace(base, method=method, pretrain=use_pretrain)
            encodings, hash_s, phase2_split = train_encodings(
                args, config, seed_dir, pretrained if use_pretrain else (),
                hash_split if use_pretrain else split, dataset.num_classes)
            codes = learned_codes(args, encodings, split)
        for encoding, (q_codes, db_codes) in codes.items():
            for bits in db_codes:
                report = evaluate_codes(q_codes[bits], db_codes[bits], split)
                row = summary_row(report, dataset=args.dataset, protocol=args.protocol,
                                  method=method, bits=bits, pretrain=use_pretrain, seed=seed,
                                  encoding=encoding)
                row.update({"wall_s_pretrain": round(pretrain_s, 1) if use_pretrain else 0.0,
                            "wall_s_hash": round(hash_s, 1), "query_accuracy": accuracy,
                            "map_correct_queries": map_on(correct, report),
                            "pretrain_epochs": base.pretrain_epochs if use_pretrain else 0,
                            "hash_epochs": base.hash_epochs if phase2_split else 0,
                            "n_train_phase2": len(phase2_split.train) if phase2_split else 0,
                            **({"fit_temperature": args.fit_temperature}
                               if method in (FITTED, CAPPED) else {}),
                            **(extra if use_pretrain else {})})
                rows.append(row)
                print(row, flush=True)
                if (seed == args.seeds[0] and method == curve_method and use_pretrain
                        and encoding == "plain"):
                    curve = report["pr_curve"]
                    curves[str(bits)] = {"precision": curve["precision"].round(6).tolist(),
                                         "recall": curve["recall"].round(6).tolist()}
    return rows


def train_encodings(args, config, seed_dir, pretrained, phase2_split, num_classes):
    """Phase 2 of one method from the ``pretrained`` member weights (none: from scratch):
    ``({encoding: {bits: hasher}}, phase-2 seconds, phase2_split)``."""
    run_dir = seed_dir / f"{config.method}-{'pre' if config.pretrain else 'scratch'}"
    run_dir.mkdir(parents=True, exist_ok=True)
    for k, weights in enumerate(pretrained):
        target = model.member_weights_path(run_dir, k)
        target.parent.mkdir(exist_ok=True)
        shutil.copyfile(weights, target)
    result = model.fit_two_phase(phase2_split, config, num_classes, work_dir=run_dir,
                                 verbose=args.verbose)
    hash_s = sum(v for k, v in result.wall_s.items() if k.startswith("hash"))
    return encoding_views(args, result.hashers), hash_s, phase2_split


def graded_codes(classifier, args, methods, split):
    """The graded rows' ``{method: {encoding: (query codes, database codes)}}`` (each
    ``{bits: codes}``) for the graded ``methods``: `tfhash.model.build_graded_hasher` on the
    phase-1 classifier, no phase 2; the view-averaged encodings average the class
    probabilities over the views before the codes are placed. Except for ``graded`` each
    encoding's codewords are arranged by that encoding's probabilities on the labelled
    training images; ``graded-arranged`` and ``graded-asymmetric`` share those database
    codes, ``fitted-asymmetric`` fits its own to them (``--fit-temperature``; and
    ``fitted-capped-asymmetric`` to `tfhash.codebooks.capped_codebook`'s words), and the
    asymmetric methods code the queries with `tfhash.model.build_query_hashers`. Every
    hasher of an encoding is the same classifier under a code layer, so the queries and
    the database each take one pass of it (`class_probabilities`), which all the code
    layers then code."""
    codes = {method: {} for method in methods}
    for encoding, viewed in encoding_views(args, classifier).items():
        queries, database = {}, {}  # {(method, bits): hasher}
        if GRADED in methods:
            plain = model.build_graded_hashers(viewed, args.bits)
            queries.update({(GRADED, b): h for b, h in plain.items()})
            database.update({(GRADED, b): h for b, h in plain.items()})
        if {ARRANGED, ASYMMETRIC, FITTED, CAPPED} & set(methods):
            similarity = model.training_similarity(viewed, split.train)
        if {ARRANGED, ASYMMETRIC} & set(methods):
            arranged = model.build_graded_hashers(viewed, args.bits, similarity)
            database.update({(ARRANGED, b): h for b, h in arranged.items()})
            if ARRANGED in methods:
                queries.update({(ARRANGED, b): h for b, h in arranged.items()})
            if ASYMMETRIC in methods:
                queries.update({(ASYMMETRIC, b): h
                                for b, h in model.build_query_hashers(arranged).items()})
        for method, codebook in ((FITTED, "max-min"), (CAPPED, "capped")):
            if method in methods:
                fitted = model.build_graded_hashers(viewed, args.bits, similarity,
                                                    temperature=args.fit_temperature,
                                                    codebook=codebook)
                database.update({(method, b): h for b, h in fitted.items()})
                queries.update({(method, b): h
                                for b, h in model.build_query_hashers(fitted).items()})
        query_codes = layer_codes(queries, class_probabilities(viewed, split.query.images))
        database_codes = layer_codes(database,
                                     class_probabilities(viewed, split.database.images))
        for method in methods:
            shared = ARRANGED if method == ASYMMETRIC else method  # its database codes
            codes[method][encoding] = tuple(
                {bits: c for (m, bits), c in part.items() if m == key}
                for part, key in ((query_codes, method), (database_codes, shared)))
    return codes


def class_probabilities(classifier, images):
    """``classifier``'s class probabilities of ``images``: the one pass over an image set
    that all of `graded_codes`' code layers share."""
    return classifier.predict(images, batch_size=256, verbose=0)


def layer_codes(hashers, probabilities, batch_size=4096):
    """``{key: codes}`` of graded hashers (`tfhash.model.build_graded_hasher` or its
    `build_query_hasher`: a classifier under one code layer), their code layers applied to
    the classifier's ``probabilities``, ``batch_size`` rows at a time."""
    codes = {}
    for key, hasher in hashers.items():
        layer = hasher.layers[-1]
        codes[key] = binarize(np.concatenate([
            keras.ops.convert_to_numpy(layer(probabilities[i:i + batch_size]))
            for i in range(0, len(probabilities), batch_size)]))
    return codes


def learned_codes(args, encodings, split):
    """``{encoding: (query codes, database codes)}`` (each ``{bits: codes}``) of a trained
    method's ``{encoding: hashers}``; with ``--asymmetric`` also each encoding's asymmetric
    form (`asymmetric_encoding`): the same database codes, each query coded as the class
    centre of the training images' codes nearest its own (`tfhash.model.training_centres`,
    `tfhash.model.build_query_hashers`)."""
    codes = {}
    for encoding, hashers in encodings.items():
        database = split_codes(hashers, split, "database")
        codes[encoding] = (split_codes(hashers, split, "query"), database)
        if args.asymmetric:
            queries = model.build_query_hashers(hashers,
                                                model.training_centres(hashers, split.train))
            codes[asymmetric_encoding(encoding)] = (split_codes(queries, split, "query"),
                                                    database)
    return codes


def asymmetric_encoding(encoding):
    """The name of ``encoding``'s asymmetric form in results files: ``"asymmetric"``,
    ``"flip-averaged asymmetric"``, ..."""
    return "asymmetric" if encoding == "plain" else f"{encoding} asymmetric"


def split_codes(hashers, split, part):
    """``{bits: codes}`` of ``split``'s ``part`` ("query" or "database") by ``hashers``."""
    return encode_heads(hashers, getattr(split, part).images)


def encoding_views(args, models):
    """``{encoding: models}``: ``models`` (a model or ``{bits: model}``) as they are, plus
    their flip-, shift- and flip+shift-averaged forms when ``--flip-average``,
    ``--shift-average`` and ``--flip-shift-average`` ask."""
    views = {"plain": models}
    if args.flip_average:
        views["flip-averaged"] = model.flip_averaged(models)
    if args.shift_average:
        views["shift-averaged"] = model.shift_averaged(models)
    if args.flip_shift_average:
        views["flip+shift-averaged"] = model.flip_and_shift_averaged(models)
    return views


def trained_on(record):
    """Where a cached classifier was trained, when not by this script: the accelerator and
    Keras backend `accelerated_phase1.py` records; ``None`` for a classifier trained here.

    >>> trained_on({"wall_s": 3.0, "keras_backend": "jax", "keras": "3.15.1",
    ...             "device": "NVIDIA H200"})
    'NVIDIA H200, Keras 3.15.1 on jax'
    """
    if "keras_backend" not in record:
        return None
    return f"{record.get('device', 'unknown device')}, Keras {record.get('keras', '?')} " \
           f"on {record['keras_backend']}"


def map_on(queries, report):
    """mAP over the queries ``queries`` (a bool mask) selects, from a `retrieval_report`'s
    per-query AP: with the queries the classifier labels right, it shows how much of the mAP
    the others cost. ``None`` when the mask selects no query with a relevant item."""
    selected = report["query_ap"][queries]
    selected = selected[~np.isnan(selected)]
    return round(float(selected.mean()), 6) if selected.size else None


def run_self_training(args, teacher, backbone, split, config, seed_dir, teacher_accuracy):
    """Self-training after phase 1, one cached round at a time (round r > 1 is kept as
    ``self_trained_round<r>``), so an interrupted run, or one with more rounds, reuses the
    rounds already made. ``teacher`` labels the first round and ``backbone`` (its own, or
    with an ensemble teacher member 0's) trains on. Returns the last round's classifier,
    the rounds' records, which queries it labels right, the fields rows record, and the
    split phase 2 trains on."""
    unlabelled = split.database.take(unlabelled_rows(split))  # indexed once, not per round
    student, records = teacher, []
    for round_no in range(1, args.self_train_rounds + 1):
        files = cache_files(seed_dir, round_stem(round_no))
        members = config.ensemble_size if round_no == 1 else 1  # how many labelled it

        def train_student(teacher=student, backbone=backbone, round_no=round_no,
                          members=members):
            keras.utils.set_random_seed(config.seed + round_no - 1)
            student, _, picked, labels = self_train(
                teacher, split, unlabelled.images, config, args.self_train,
                args.self_train_epochs, keep=args.self_train_keep,
                flip_average=args.flip_pseudo_labels, fresh_student=args.fresh_student,
                student=None if args.fresh_student else backbone, verbose=args.verbose)
            truth = unlabelled.labels[picked]  # only reported, never trained on
            return student, {"n_pseudo": len(picked),
                             "pseudo_label_accuracy": float((truth == labels).mean()),
                             **labelling_record(args, members)}

        student, record = cached_training(
            *files, train=train_student,
            build=lambda backbone=backbone: model.build_classifier(
                backbone, teacher.output_shape[-1]))
        check_same_labelling(record, args, files[1], members)
        backbone = student.layers[1]
        records.append(record)
        correct = correct_queries(student, split)
        print(f"self-training round {round_no}: {record['wall_s']:.0f}s on "
              f"{record['n_pseudo']} pseudo-labels ({record['pseudo_label_accuracy']:.3f} "
              f"correct): query accuracy {correct.mean():.4f}", flush=True)
    wall = sum(r["wall_s"] for r in records)
    extra = {"teacher_query_accuracy": teacher_accuracy, "self_train_per_class": args.self_train,
             "self_train_epochs": args.self_train_epochs,
             "self_train_rounds": args.self_train_rounds, "n_pseudo": records[-1]["n_pseudo"],
             "pseudo_label_accuracy": records[-1]["pseudo_label_accuracy"],
             "wall_s_self_train": round(wall, 1)}
    if args.pseudo_phase2:
        split, _, _ = with_pseudo_labels(split, student, unlabelled.images, args.self_train,
                                         keep=args.self_train_keep,
                                         flip_average=args.flip_pseudo_labels, verbose=0)
    return student, records, correct, extra, split


ROUND_OPTIONS = {"flip_pseudo_labels": False, "fresh_student": False, "self_train_keep": 1.0}
TEACHER_MEMBERS = "teacher_members"  # how many classifiers labelled a round (default 1)


def labelling_record(args, teacher_members=1):
    """How a self-training round is made, as recipes and cached rounds record it: the
    options of `ROUND_OPTIONS` that differ from their default (files from before an option
    hold nothing for it: it had its default), and for a round labelled by an ensemble, the
    number of its members."""
    record = {key: getattr(args, key) for key, default in ROUND_OPTIONS.items()
              if getattr(args, key) != default}
    return {**record, TEACHER_MEMBERS: teacher_members} if teacher_members > 1 else record


def check_same_labelling(record, args, path, teacher_members=1):
    """Refuses a cached self-training round that was made another way (with other options,
    or labelled by another number of classifiers)."""
    wanted = labelling_record(args, teacher_members)
    for key, default in {**ROUND_OPTIONS, TEACHER_MEMBERS: 1}.items():
        made, asked = record.get(key, default), wanted.get(key, default)
        if made != asked:
            raise SystemExit(f"{path}: this cached round was made with {key} = {made}, "
                             f"not {asked}; use another --tag or --work-dir")


def recipe_record(args, config):
    """The recipe a results file stores: the config, plus self-training when used."""
    record = dataclasses.asdict(config)
    if args.self_train:
        record.update(self_train=args.self_train, self_train_epochs=args.self_train_epochs)
        if args.self_train_rounds != 1:  # files from before rounds existed hold one round
            record.update(self_train_rounds=args.self_train_rounds)
        if args.pseudo_phase2:
            record.update(pseudo_phase2=True)
        record.update(labelling_record(args))
    if args.ensemble_with:
        record.update(ensemble_with=list(args.ensemble_with))
    return record


def check_same_recipe(earlier, config):
    """Refuses to mix rows of different recipes (everything but the seed must match)."""
    if "config" not in earlier:
        return
    old = stored_config(earlier)
    new = json.loads(json.dumps(config))
    old.pop("seed"), new.pop("seed")
    diff = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if diff:
        raise SystemExit(f"--append: the recipe differs from the results file in {diff}")


PHASE1_FIELDS = ("backbone", "backbone_width", "backbone_stem", "pretrain_epochs", "batch_size",
                 "pretrain_lr", "weight_decay", "ema_momentum", "sam_radius", "label_smoothing",
                 "augment", "augment_strength", "mix", "precision")


def check_phase1_source(source, dataset, protocol, config):
    """Refuses to take phase 1 from a run (its results file ``source``, as a dict) that
    trained it on another dataset or protocol, or with other phase-1 settings than
    ``config`` (a `recipe_record`): the rows would claim a phase 1 they did not get."""
    check_same_data(source, dataset, protocol, "--phase1-from: that run")
    old, new = stored_config(source), json.loads(json.dumps(config))
    diff = [k for k in PHASE1_FIELDS if old.get(k) != new.get(k)]
    if diff:
        raise SystemExit(f"--phase1-from: that run's phase 1 differs from this recipe in {diff}")


def check_same_data(source, dataset, protocol, who):
    """Refuses a results file ``source`` (a dict) whose rows are not all of ``dataset`` under
    ``protocol``; ``who`` names it in the message."""
    places = {(r["dataset"], r["protocol"]) for r in source["rows"]}
    if places != {(dataset, protocol)}:
        raise SystemExit(f"{who} holds {sorted(places)}, not {dataset} {protocol}")


def mixed_recipes(args, name, work_root):
    """The recipes of the runs ``--ensemble-with`` names, by run, once each is checked:
    another run than this one and its ``--phase1-from`` (their classifiers are this run's
    members already), the same dataset and protocol, phase-1 classifiers only (no
    self-training, not itself a mixed ensemble), and cached for every seed of this run,
    so a missing file stops the run before any training, not after an hour of it."""
    if len(set(args.ensemble_with)) != len(args.ensemble_with):
        raise SystemExit(f"--ensemble-with: a run is named twice in {args.ensemble_with}")
    recipes = {}
    for run in args.ensemble_with:
        if run in (name, args.phase1_from):
            raise SystemExit(f"--ensemble-with: {run} is this run or its --phase1-from; its "
                             "classifiers are this run's members already")
        source = load_results(run, "--ensemble-with")
        check_same_data(source, args.dataset, args.protocol, f"--ensemble-with: {run}")
        config = stored_config(source)
        if config.get("self_train") or config.get("ensemble_with"):
            raise SystemExit(f"--ensemble-with: {run} is a self-trained or mixed ensemble; "
                             "name runs whose phase-1 classifiers are their own")
        for seed in args.seeds:
            cached_records(last_classifier_files(work_root.parent / run / f"seed{seed}",
                                                 config), "--ensemble-with")
        recipes[run] = config
    return recipes


# what makes the rounds: with another ensemble size, another teacher labelled round 1
SELF_TRAINING_FIELDS = ("self_train", "self_train_epochs", "ensemble_size", *ROUND_OPTIONS)


def adopted_rounds(source, config):
    """How many self-training rounds a run with recipe ``config`` (a `recipe_record`) takes
    with its phase 1 from the run whose results file is ``source``: that run's rounds, up to
    as many as ``config`` asks for, when both self-train the same way (with the same
    ensemble teaching the first round); otherwise none, and
    only the phase-1 classifier is taken."""
    old, new = stored_config(source), json.loads(json.dumps(config))
    if not (old.get("self_train") and new.get("self_train")):
        return 0
    if any(old.get(k, ROUND_OPTIONS.get(k)) != new.get(k, ROUND_OPTIONS.get(k))
           for k in SELF_TRAINING_FIELDS):
        return 0
    return min(old.get("self_train_rounds", 1), new.get("self_train_rounds", 1))


def adopt_phase1(source_dir, seed_dir, rounds=0, members=1):
    """Copies a seed's cached phase 1 (``pretrained.weights.h5`` and its record), its
    first ``rounds`` self-training rounds and its ensemble members 1 to ``members - 1``
    (``member<k>/pretrained``) from another run's seed folder, each file atomically,
    weights before records as `cached_training` writes them. Files already there and the
    same are left as they are; another classifier under the same name is refused."""
    def files(root):  # the cache files to copy, under a seed folder ``root``, in order
        for r in range(rounds + 1):
            yield from cache_files(root, round_stem(r))
        for k in range(1, members):
            yield from cache_files(model.member_work_dir(root, k), round_stem(0))

    for source, target in zip(files(source_dir), files(seed_dir)):
        if not source.exists():
            raise SystemExit(f"--phase1-from: no {source}")
        if target.exists():
            if not filecmp.cmp(source, target, shallow=False):
                raise SystemExit(f"{target} is another classifier than {source}; "
                                 "use another --tag or --work-dir")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist", choices=("mnist", "cifar10", "mnist-5k"))
    parser.add_argument("--protocol", default="cnnh", choices=("cnnh", "full"),
                        help="full: CIFAR-10 50,000 train / 10,000 queries")
    parser.add_argument("--bits", type=int, nargs="+", default=[12, 24, 32, 48])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--methods", nargs="*", default=["exponentiated", "dpsh", "dsh",
                                                         "orthohash"],
                        choices=(*model.METHODS, *GRADED_METHODS),
                        help="pre-trained rows to run; none (a bare --methods) with the "
                             f"ablation runs only the ablation row; {GRADED}: codes placed "
                             "from the phase-1 classifier's class probabilities "
                             f"(tfhash.model.build_graded_hasher), no phase 2; {ARRANGED}: "
                             "the same with codewords arranged by the training images; "
                             f"{ASYMMETRIC}: the database coded as {ARRANGED}, each query "
                             f"as its likeliest class's codeword; {FITTED}: the database "
                             "fitted to all the class probabilities "
                             f"(tfhash.layers.FittedClassCodes), queries as {ASYMMETRIC}; "
                             f"{CAPPED}: the same on nearly equidistant codewords "
                             "(tfhash.codebooks.capped_codebook)")
    parser.add_argument("--fit-temperature", type=positive_float,
                        default=FittedClassCodes.DEFAULT_TEMPERATURE,
                        help=f"the temperature of --methods {FITTED} and {CAPPED} (the "
                             f"share of the code length per e-fold of probability; default "
                             f"{FittedClassCodes.DEFAULT_TEMPERATURE}; each row records its "
                             "own)")
    parser.add_argument("--pretrain-epochs", type=int, default=None)
    parser.add_argument("--hash-epochs", type=int, default=None)
    parser.add_argument("--margin", type=float, default=None, help="default: the recipe's")
    parser.add_argument("--negative-margin", type=float, default=None)
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--precision", default=None, choices=model.PRECISIONS)
    parser.add_argument("--backbone-width", type=int, default=None)
    parser.add_argument("--backbone-stem", default=None, choices=STEMS,
                        help="first layer of the backbone (default: the recipe's, conv)")
    parser.add_argument("--mix", default=None, choices=MIXES,
                        help="phase-1 batch mixing (default: the recipe's)")
    parser.add_argument("--hash-mix", default=None, choices=MIXES,
                        help="phase-2 batch mixing: mixed pairs count as similar in "
                             "proportion to their labels' overlap (default: none)")
    parser.add_argument("--augment", default=None, choices=AUGMENTATIONS,
                        help="default: the recipe's (see tfhash.pipeline.make_dataset)")
    parser.add_argument("--weight-decay", type=float, default=None,
                        help="decoupled weight decay of both phases (default: TrainConfig's)")
    parser.add_argument("--ema-momentum", type=float, default=None,
                        help="keep a moving average of the weights in both phases")
    parser.add_argument("--sam-radius", type=float, default=None,
                        help="sharpness-aware phase-1 steps of this radius (default: none)")
    parser.add_argument("--soup-size", type=int, default=None, metavar="K",
                        help="train phase 2 K times from the same start and average the "
                             "weights (every method alike; default 1)")
    parser.add_argument("--ensemble-size", type=int, default=None, metavar="K",
                        help="hash from K backbones pre-trained apart (features concatenated); "
                             "phase 1 costs K times as much")
    parser.add_argument("--classification-weight", type=float, default=None,
                        help="classifier-on-codes term in phase 2 (default: the recipe's)")
    parser.add_argument("--classification-head", default=None,
                        choices=model.CLASSIFICATION_HEADS,
                        help="that classifier: a learned softmax layer (dense, the default) or "
                             "a cosine softmax against far-apart fixed class codewords "
                             "(codebook; arranged-codebook: the nearer codewords to the "
                             "classes the phase-1 classifier mixes up)")
    parser.add_argument("--self-train", type=int, default=0, metavar="N",
                        help="after phase 1, pseudo-label N database images per class and "
                             "continue phase 1 on them (a separate row: use --tag)")
    parser.add_argument("--self-train-epochs", type=int, default=20)
    parser.add_argument("--self-train-rounds", type=int, default=1,
                        help="pseudo-label again with each round's classifier")
    parser.add_argument("--self-train-keep", type=float, default=1.0, metavar="FRACTION",
                        help="pseudo-label at most this fraction of each predicted class, its "
                             "most confident, leaving the rest unlabelled (default: 1)")
    parser.add_argument("--pseudo-phase2", action="store_true",
                        help="with --self-train: phase 2 also trains on the N database images "
                             "per class the self-trained classifier is surest of")
    parser.add_argument("--flip-pseudo-labels", action="store_true",
                        help="pseudo-label with probabilities averaged over each image and its "
                             "mirror (model.flip_averaged; natural images, not digits)")
    parser.add_argument("--fresh-student", action="store_true",
                        help="each self-training round trains a new backbone from scratch "
                             "on the labelled and pseudo-labelled images (Noisy Student) "
                             "instead of training the teacher's on")
    parser.add_argument("--flip-average", action="store_true",
                        help="also evaluate flip-averaged codes (tfhash.model.flip_averaged) "
                             "of every trained model, as extra rows")
    parser.add_argument("--asymmetric", action="store_true",
                        help="also evaluate every trained model with asymmetric codes, as "
                             "extra rows: the database coded as it is, each query as the "
                             "class centre of the training images' codes nearest its own "
                             "(tfhash.model.build_query_hasher); graded codes have theirs "
                             f"in --methods {ASYMMETRIC}")
    parser.add_argument("--shift-average", action="store_true",
                        help="also evaluate shift-averaged codes (tfhash.model.shift_averaged: "
                             "each image and its one-pixel shifts) of every trained model, "
                             "as extra rows")
    parser.add_argument("--flip-shift-average", action="store_true",
                        help="also evaluate flip+shift-averaged codes "
                             "(tfhash.model.flip_and_shift_averaged: each image, its "
                             "one-pixel shifts and the mirror images of all five) of every "
                             "trained model, as extra rows")
    parser.add_argument("--ensemble-with", nargs="+", default=None, metavar="RUN",
                        help="also average each seed's cached classifiers of these runs "
                        "(any phase-1 recipe; graded methods only)")
    parser.add_argument("--phase1-from", default=None, metavar="RUN",
                        help="start every seed from the phase-1 classifier of run RUN (a "
                             "results file stem under the same --work-dir, e.g. "
                             "cifar10-cnnh-w16-bf16-p300-h40) instead of training one; "
                             "its self-training rounds too when both self-train alike")
    parser.add_argument("--no-ablation", action="store_true")
    parser.add_argument("--tag", default="", help="suffix of the results file name")
    parser.add_argument("--append", action="store_true",
                        help="add these seeds/methods to the existing results file (same recipe)")
    parser.add_argument("--phase1-only", action="store_true",
                        help="train (or find cached) each seed's phase-1 classifiers, then "
                             "stop: no rows, no results file; with --members only those "
                             "ensemble members, so processes given other members can train "
                             "one run's side by side")
    parser.add_argument("--members", type=non_negative_int, nargs="+", default=None,
                        metavar="K", help="with --phase1-only: the ensemble members to "
                                          "train, 0 to --ensemble-size - 1 (default all)")
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N",
                        help="TensorFlow's intra- and inter-op threads (default: its own "
                             "choice, every core); on 2 cores two --phase1-only processes "
                             "of one thread each train more epochs an hour than one process "
                             "(benchmarks/side_by_side.py)")
    parser.add_argument("--work-dir", default="runs/reproduce")
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args()
    if args.threads:  # before TensorFlow runs anything
        use_threads(args.threads)
    if args.members is not None and not args.phase1_only:
        parser.error("--members needs --phase1-only (a full run trains every member)")
    if args.phase1_only and args.self_train:
        parser.error("--phase1-only trains ensemble members, not self-training rounds: "
                     "drop --self-train")
    if args.pseudo_phase2 and not args.self_train:
        parser.error("--pseudo-phase2 needs --self-train N")
    if not 0 < args.self_train_keep <= 1:
        parser.error(f"--self-train-keep must be in (0, 1], got {args.self_train_keep}")
    for flag in labelling_record(args) if not args.self_train else ():
        parser.error(f"--{flag.replace('_', '-')} needs --self-train N")
    if args.classification_head == "arranged-codebook" and not args.no_ablation:
        parser.error("--classification-head arranged-codebook needs --no-ablation (the "
                     "ablation has no phase-1 classifier to arrange the codewords by)")
    if args.asymmetric and args.no_ablation and not set(args.methods) - set(GRADED_METHODS):
        parser.error(f"--asymmetric: adds rows to trained methods, and none runs (for graded "
                     f"codes use --methods {ASYMMETRIC})")
    if not args.methods and args.no_ablation:
        parser.error("--methods: name at least one method, or drop --no-ablation")
    if args.ensemble_with:
        trained = sorted(set(args.methods) - set(GRADED_METHODS))
        if trained or not args.no_ablation or args.self_train:
            parser.error(f"--ensemble-with: a mixed ensemble codes graded methods only, with "
                         f"--no-ablation and no --self-train (phase 2 and self-training train "
                         f"one architecture); got methods {args.methods}"
                         f"{'' if args.no_ablation else ' and the ablation'}"
                         f"{' and --self-train' if args.self_train else ''}")
    dataset = data.load_dataset(args.dataset)
    name = run_name(args.dataset, args.protocol, args.tag)
    work_root = Path(args.work_dir) / name
    earlier = (load_results(name, "--append") if args.append
               else {"rows": [], "total_wall_s": 0.0})
    rows = []
    configs = {seed: seed_config(args, seed) for seed in args.seeds}
    for config in configs.values():  # before any training, not after an hour of it
        check_same_recipe(earlier, recipe_record(args, config))
    size = configs[args.seeds[0]].ensemble_size
    if args.members and max(args.members) >= size:
        parser.error(f"--members: this run has {size} ensemble member(s), numbered 0 to "
                     f"{size - 1}; got {args.members}")
    mixed = mixed_recipes(args, name, work_root) if args.ensemble_with else {}
    if args.phase1_from:
        if args.phase1_from == name:
            parser.error(f"--phase1-from: {name} is this run")
        source = load_results(args.phase1_from, "--phase1-from")
        recipe = recipe_record(args, configs[args.seeds[0]])
        check_phase1_source(source, args.dataset, args.protocol, recipe)
        rounds = adopted_rounds(source, recipe)
        members = adopted_members(stored_config(source)["ensemble_size"],
                                  recipe["ensemble_size"])
        for seed in args.seeds:
            adopt_phase1(work_root.parent / args.phase1_from / f"seed{seed}",
                         work_root / f"seed{seed}", rounds, members)
        print(f"phase 1{f' and self-training rounds 1-{rounds}' if rounds else ''} "
              f"from {args.phase1_from}", flush=True)
    if args.phase1_only:
        train_members(args, dataset, configs, work_root)
        return
    pr_curves = earlier.get("pr_curves") or {
        "method": "exponentiated" if "exponentiated" in args.methods or not args.methods
        else args.methods[0], "seed": args.seeds[0], "curves": {}}
    start = time.perf_counter()
    for seed in args.seeds:
        curves = pr_curves["curves"] if seed == pr_curves["seed"] else {}
        rows.extend(run_seed(args, dataset, configs[seed], work_root, curves,
                             pr_curves["method"], mixed))
        done = {(r["seed"], r["method"], r["pretrain"]) for r in rows}
        kept = [r for r in earlier["rows"]
                if (r["seed"], r["method"], r["pretrain"]) not in done]
        write_results(name, kept + rows, config=recipe_record(args, configs[seed]),
                      total_wall_s=earlier["total_wall_s"] + time.perf_counter() - start,
                      pr_curves=pr_curves)
    print("run benchmarks/report.py to refresh RESULTS.md and the PNGs")


if __name__ == "__main__":
    main()
