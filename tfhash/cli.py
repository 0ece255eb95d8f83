"""The ``tfhash`` command: train, evaluate, export, index, search, tune, demo.

Bad arguments end with one line on stderr (``tfhash: error: ...``) and exit status 2.
"""

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

from tfhash.codebooks import CODEBOOKS
from tfhash.codes import MAX_BITS
from tfhash.data import PROTOCOLS
from tfhash.errors import TfhashError
from tfhash.hardware import use_threads
from tfhash.quiet import drop_retracing_warnings, import_tensorflow

COMMANDS = {}
GRADED_CODES = ("fitted", "runner-up")  # `train --graded-codes`, the default first


def command(name, help_text):
    """Registers ``func(args)`` as a subcommand, with ``configure(parser)`` for its flags."""

    def wrap(configure):
        COMMANDS[name] = (help_text, configure)
        return configure

    return wrap


def int_in_range(low, high=None):
    """An argparse type: an integer from ``low`` to ``high`` (no upper bound if None)."""

    def parse(value):
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
        if number < low or (high is not None and number > high):
            bound = f"from {low} to {high}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {number}")
        return number

    return parse


bits_arg = int_in_range(1, MAX_BITS)
positive_int = int_in_range(1)
non_negative_int = int_in_range(0)


def positive_float(value):
    """An argparse type: a finite number > 0."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not 0 < number < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {value}")
    return number


def output_dir(value):
    """An argparse type: a folder to write into, new or existing, but not a file (found
    before any training, not when the first model is saved)."""
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"expected a folder, {value!r} is a file")
    return value


def add_data_dir_arg(parser):
    parser.add_argument("--data-dir", default=None,
                        help="folder with <dataset>.npz (default: $TFHASH_DATA_DIR)")


def add_data_args(parser, dataset_required=True):
    parser.add_argument("--dataset", required=dataset_required,
                        help="mnist-5k, mnist, cifar10, fashion_mnist or folder:PATH")
    parser.add_argument("--protocol", default="cnnh", choices=PROTOCOLS,
                        help="split: cnnh = 100 queries and 500 training images per class, the "
                             "rest the database; full = the test set as queries, the "
                             "training set as training images and database")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="seed of the split and training")
    add_data_dir_arg(parser)
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="share of training images held out for model selection")


def add_precision_arg(parser):
    # the names of tfhash.hardware.PRECISIONS, spelled here so parsing does not import
    # TensorFlow; None (not given) leaves a recipe's precision, else TrainConfig's float32
    parser.add_argument("--precision", default=None,
                        choices=("auto", "float32", "mixed_bfloat16"),
                        help="backbone compute precision, float32 by default; bfloat16 is "
                             "faster on GPUs and AVX512-BF16/AMX CPUs, emulated and much "
                             "slower elsewhere; auto: bfloat16 where it is native")


def add_backbone_args(parser):
    parser.add_argument("--backbone-width", type=positive_int, default=None,
                        help="base width (filters of the first layer) of the built-in "
                             "backbones (default 32; the CIFAR-10 benchmark recipes use 16)")
    parser.add_argument("--backbone-stem", default=None, choices=STEMS,
                        help="first layer of the built-in backbones: a convolution (default) "
                             "or patch whitening fitted to the training images")


# the names of tfhash.model.RECIPES, backbones.STEMS, CLASSIFICATION_HEADS and METHODS,
# spelled here so parsing does not import TensorFlow
RECIPE_NAMES = ("demo", "cifar10-cnnh")
STEMS = ("conv", "whitening")
CLASSIFICATION_HEADS = ("dense", "codebook", "arranged-codebook")
METHODS = ("exponentiated", "dpsh", "dsh", "orthohash", "orthohash-greedy")

# flags that set the TrainConfig field of the same name (`tfhash train` has them all,
# `tfhash tune` some); their parser default is None (not given), so a --recipe or
# --hparams value under them stands
CONFIG_FLAGS = ("backbone", "backbone_width", "backbone_stem", "precision", "pretrain_epochs",
                "hash_epochs", "batch_size", "augment", "augment_strength", "mix", "hash_mix",
                "weight_decay", "ema_momentum", "sam_radius", "soup_size", "ensemble_size",
                "method", "margin", "negative_margin", "temperature", "quantization",
                "classification_weight", "classification_head")


def add_train_args(parser):
    parser.add_argument("--bits", type=bits_arg, nargs="+", default=[12],
                        help="code length(s); phase 1 is shared by all")
    parser.add_argument("--recipe", default=None, choices=RECIPE_NAMES,
                        help="start from a named recipe (tfhash.model.RECIPES; cifar10-cnnh: "
                             "the CIFAR-10 benchmark's, about half an hour on 2 CPU cores); "
                             "--hparams and the flags below override its values")
    parser.add_argument("--hparams", default=None,
                        help="JSON of TrainConfig values (e.g. from `tfhash tune`); they "
                             "override the recipe's, the flags below override them")
    parser.add_argument("--backbone", default=None,
                        help="mnist_cnn, cifar_resnet or applications.<Name> (default by channels)")
    add_backbone_args(parser)
    add_precision_arg(parser)
    parser.add_argument("--pretrain-epochs", type=non_negative_int, default=None,
                        help="epochs of phase 1, classification pre-training (default 10)")
    parser.add_argument("--hash-epochs", type=positive_int, default=None,
                        help="epochs of phase 2, hash learning (default 10)")
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="batch size of both phases, 128 by default (phase 2 compares "
                             "all its pairs)")
    # the names of tfhash.pipeline.AUGMENTATIONS and MIXES
    parser.add_argument("--augment", default=None,
                        choices=("none", "crop_flip", "crop_flip_cutout", "randaugment",
                                 "mild_randaugment", "shift", "affine", "auto"),
                        help="augmentation of both phases (default auto: crop+flip for colour "
                             "images, shifts for grayscale)")
    parser.add_argument("--augment-strength", type=float, default=None,
                        help="strength in (0, 1] of --augment randaugment's or "
                             "mild_randaugment's operations (default 0.5: rotations of up "
                             "to half a turn with randaugment, Keras's, 15 degrees with "
                             "mild_randaugment)")
    parser.add_argument("--weight-decay", type=float, default=None,
                        help="decoupled weight decay of both phases' AdamW, shrinking the "
                             "weights by learning rate x this each step (default 5e-4)")
    parser.add_argument("--ema-momentum", type=float, default=None,
                        help="train with a moving average of the weights (e.g. 0.99)")
    parser.add_argument("--sam-radius", type=float, default=None,
                        help="train phase 1 with sharpness-aware steps of this radius "
                             "(e.g. 0.05; each step costs twice a plain one)")
    parser.add_argument("--soup-size", type=positive_int, default=None, metavar="K",
                        help="train phase 2 K times from the same start (own batch orders) "
                             "and average the weights (default 1)")
    parser.add_argument("--ensemble-size", type=positive_int, default=None, metavar="K",
                        help="pre-train K backbones apart and hash from all of their features "
                             "(default 1)")
    parser.add_argument("--mix", default=None, choices=("none", "cutmix", "mixup"),
                        help="mix images and labels across phase-1 batches (default none)")
    parser.add_argument("--hash-mix", default=None, choices=("none", "cutmix", "mixup"),
                        help="mix phase-2 batches too, pairs weighed by their mixed labels "
                             "(default none)")
    parser.add_argument("--no-pretrain", action="store_true",
                        help="skip classification pre-training (the ablation)")
    parser.add_argument("--method", default=None, choices=METHODS,
                        help="the phase-2 loss: the paper's (default) or a peer's")
    parser.add_argument("--margin", type=float, default=None,
                        help="margin m in (0, 1] of the exponentiated loss (default 1.0)")
    parser.add_argument("--negative-margin", type=float, default=None,
                        help="margin in [0, 1] of its dissimilar pairs (default: --margin)")
    parser.add_argument("--temperature", type=float, default=None,
                        help="temperature T > 0 of the exponentiated loss (default 0.5)")
    parser.add_argument("--quantization", type=float, default=None,
                        help="weight >= 0 of the term pulling relaxed codes to +-1 "
                             "(default 0)")
    parser.add_argument("--classification-weight", type=float, default=None,
                        help="weight >= 0 of a classifier on the codes kept in phase 2 "
                             "(default 0)")
    parser.add_argument("--classification-head", default=None, choices=CLASSIFICATION_HEADS,
                        help="that classifier: a learned softmax layer (default), or a cosine "
                             "softmax against far-apart class codewords, arranged by the "
                             "phase-1 classifier's confusions or not")
    parser.add_argument("--strategy", default="default",
                        choices=("default", "mirrored", "multiworker"),
                        help="tf.distribute strategy (multiworker reads TF_CONFIG)")


def load_split(args):
    from tfhash.data import load_dataset, make_split

    dataset = load_dataset(args.dataset, args.data_dir)
    return dataset, make_split(dataset, args.protocol, args.seed, args.val_fraction)


def given_config_flags(args):
    """The `CONFIG_FLAGS` given on the command line, as TrainConfig values."""
    given = {name: getattr(args, name, None) for name in CONFIG_FLAGS}
    return {name: value for name, value in given.items() if value is not None}


def train_config(args):
    """The `TrainConfig` of `tfhash train`: the ``--recipe``'s values, over them the
    ``--hparams`` file's, over those the flags given; `TrainConfig`'s defaults for the rest."""
    from tfhash.model import RECIPES, TrainConfig

    values = dict(RECIPES[args.recipe]) if args.recipe else {}
    if args.hparams:
        values.update(read_hparams(args.hparams))
    values.update(given_config_flags(args))
    if args.no_pretrain:
        values["pretrain"] = False
    return TrainConfig(bits=tuple(args.bits), seed=args.seed, **values)


def read_hparams(path):
    from tfhash.model import TrainConfig

    path = Path(path)
    if not path.is_file():
        raise TfhashError(f"--hparams file {path} does not exist")
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise TfhashError(f"--hparams file {path} is not valid JSON: {error}") from None
    known = {f.name for f in dataclasses.fields(TrainConfig)} - {"bits", "seed"}
    if not isinstance(values, dict) or set(values) - known:
        raise TfhashError(
            f"--hparams file {path} must be an object with keys from {sorted(known)}"
        )
    return values


def graded_temperature(graded_codes=None, fit_temperature=None):
    """The ``fit_temperature`` of `run_and_report` for ``train --graded-codes`` (``None``:
    fitted, the default) and ``--fit-temperature`` (``None``: the default temperature):
    ``None`` for runner-up codes (`tfhash.layers.GradedClassCodes`)."""
    if graded_codes == "runner-up":
        return None
    from tfhash.layers import FittedClassCodes

    return FittedClassCodes.DEFAULT_TEMPERATURE if fit_temperature is None else fit_temperature


def run_and_report(dataset, split, config, out, work_dir=None, grid=True, strategy=None,
                   average=None, graded=False, arrange=True, asymmetric=False,
                   fit_temperature=None, codebook="max-min"):
    """Trains, saves encoders, evaluates; writes run.json, PR-curve and grid PNGs.

    With ``average="flip"`` (``"shift"``, ``"flip+shift"``) the saved encoders are
    `tfhash.model.flip_averaged` (`shift_averaged`, `flip_and_shift_averaged`) ones;
    ``None``: the trained hashers as they are. With ``graded``, phase 1 only
    (`tfhash.model.fit_graded`): the encoders are graded class codes of the classifier,
    view-averaged before the codes are placed when ``average`` is set, their codewords (by
    the ``codebook`` rule, `tfhash.codebooks.CODEBOOKS`) arranged by the training images
    unless ``arrange`` is off, fitted class codes of that temperature with
    ``fit_temperature``; with ``asymmetric``, queries get their own encoders
    (``query-<bits>.keras``, `tfhash.model.build_query_hasher`: each query on its likeliest
    class's codeword for graded codes, else on the class centre of the training images'
    codes nearest its own), and each row adds ``map_symmetric``, the mAP with the database
    encoder coding the queries too.

    In a multi-worker run only the chief saves and evaluates; every worker prints the
    fingerprint of its trained encoders (equal on all workers).
    """
    from tfhash.artifacts import fingerprint, save_encoder
    from tfhash.distribute import is_chief
    from tfhash.evaluation import evaluate_encoder, format_table, summary_row
    from tfhash.io import write_json
    from tfhash.metrics import mean_average_precision
    from tfhash.model import (
        build_query_hashers,
        check_average,
        encode,
        fit_graded,
        fit_two_phase,
        training_centres,
        view_averaged,
    )
    from tfhash.plots import plot_map_vs_bits, plot_pr_curves

    check_average(average)  # before training, not after it
    out = Path(out)
    work_dir = work_dir or out / "work"
    if graded:  # the probabilities are averaged, then the codes placed
        result = fit_graded(split, config, dataset.num_classes, work_dir=work_dir,
                            strategy=strategy, average=average, arrange=arrange,
                            temperature=fit_temperature, codebook=codebook)
        hashers = result.hashers
        queries = build_query_hashers(hashers) if asymmetric else {}
    else:
        result = fit_two_phase(split, config, dataset.num_classes, work_dir=work_dir,
                               strategy=strategy)
        hashers = view_averaged(result.hashers, average)
        queries = (build_query_hashers(hashers, training_centres(hashers, split.train))
                   if asymmetric else {})
    views = (average or "").split("+")
    flags = {"flip_averaged": "flip" in views, "shift_averaged": "shift" in views,
             "graded": bool(graded), "arranged_codebook": bool(graded and arrange),
             "fit_temperature": fit_temperature if graded else None,
             "codebook": codebook if graded else None,
             "asymmetric": bool(queries)}
    for bits, hasher in hashers.items():
        print(f"encoder {bits} bits fingerprint {fingerprint(hasher)}", flush=True)
    if not is_chief(strategy):
        return []
    rows, curves, reports = [], {}, {}
    for bits, hasher in hashers.items():
        meta = {"dataset": dataset.name, "class_names": list(dataset.class_names),
                **split.record(), "config": dataclasses.asdict(config),
                **flags}
        saved = save_encoder(hasher, out / f"model-{bits}.keras", meta)
        if bits in queries:
            save_encoder(queries[bits], out / f"query-{bits}.keras",
                         {**meta, "database_encoder": f"model-{bits}.keras",
                          "database_fingerprint": saved["fingerprint"]})
        report = evaluate_encoder(hasher, split, query_model=queries.get(bits))
        reports[bits] = report
        rows.append(summary_row(report, bits=bits, pretrain=config.pretrain))
        if bits in queries:  # what the query encoders bought: mAP alone, no full report
            symmetric = mean_average_precision(encode(hasher, split.query.images, verbose=0),
                                               split.query.labels, report["database_codes"],
                                               split.database.labels)
            rows[-1]["map_symmetric"] = round(float(symmetric), 6)
        curves[f"{bits} bits"] = (report["pr_curve"]["precision"], report["pr_curve"]["recall"])
    title = f"{dataset.name} {split.protocol}"
    plot_pr_curves(curves, out / "pr_curve.png", title=title)
    written = ["model-*.keras", *(["query-*.keras"] if queries else []), "pr_curve.png"]
    if len(rows) > 1:  # one point per line says nothing
        lines = ({"queries by the query encoders": "map",
                  "queries by the database encoders": "map_symmetric"} if queries
                 else {"mAP": "map"})
        plot_map_vs_bits({label: ([row["bits"] for row in rows], [row[key] for row in rows])
                          for label, key in lines.items()}, out / "map_vs_bits.png", title=title)
        written.append("map_vs_bits.png")
    if grid:
        write_grid(split, reports[max(reports)], out / "retrieval_grid.png")
        written.append("retrieval_grid.png")
    write_json(out / "run.json", {
        "dataset": dataset.name, **split.record(), "config": dataclasses.asdict(config),
        **flags, "wall_s": result.wall_s, "rows": rows,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "python": platform.python_version(),
    })
    print(format_table(rows, ["bits", "pretrain", "map", "map_index", "precision_r2"]
                       + (["map_symmetric"] if queries else [])))
    written.append("run.json")
    print(f"wrote {out}/{', '.join(written)}")
    return rows


def write_grid(split, report, path, n_queries=8, k=10):
    import numpy as np

    from tfhash.index import HammingIndex
    from tfhash.plots import plot_retrieval_grid

    rng = np.random.default_rng(0)
    picks = rng.choice(len(split.query), size=min(n_queries, len(split.query)), replace=False)
    index = HammingIndex(report["database_codes"].shape[1])
    index.add(report["database_codes"])  # ids are database positions
    hits, dist = index.search(report["query_codes"][picks], k)
    relevant = split.database.labels[hits] == split.query.labels[picks][:, None]
    plot_retrieval_grid(split.query.images[picks], split.database.images[hits], relevant, path,
                        distances=dist)


def view_average(args):
    """The test-time averaging ``--flip-average`` and ``--shift-average`` ask for (a key of
    `tfhash.model.VIEW_AVERAGES`)."""
    names = [name for name, given in (("flip", args.flip_average),
                                      ("shift", args.shift_average)) if given]
    return "+".join(names) or None


@command("train", "two-phase training: classification pre-training, then hash learning")
def configure_train(parser):
    add_data_args(parser)
    add_train_args(parser)
    parser.add_argument("--flip-average", action="store_true",
                        help="encoders average each image's codes with its mirror image's "
                             "(two forward passes per image); with --shift-average, over "
                             "the image, its shifts and their mirror images (ten passes)")
    parser.add_argument("--shift-average", action="store_true",
                        help="encoders average each image's codes with its one-pixel "
                             "shifts' (five forward passes per image; digits, text)")
    parser.add_argument("--graded", action="store_true",
                        help="no hashing phase: code each image from the phase-1 classifier's "
                             "class probabilities (class codes, "
                             "tfhash.model.build_graded_hasher; see --graded-codes)")
    parser.add_argument("--graded-codes", choices=GRADED_CODES, default=None,
                        help="with --graded: fitted (the default), each image where its "
                             "distances to all the codewords best explain its class "
                             "probabilities (tfhash.layers.FittedClassCodes, "
                             "--fit-temperature); runner-up, each image on its likeliest "
                             "class's codeword or some bits towards its runner-up's "
                             "(tfhash.layers.GradedClassCodes)")
    parser.add_argument("--no-arrange", dest="arrange", action="store_false",
                        help="with --graded: keep the codebook's own order instead of giving "
                             "the classes the classifier mixes up the nearer codewords")
    parser.add_argument("--fit-temperature", type=positive_float, default=None,
                        help="with --graded: the temperature of fitted class codes, a share "
                             "of the code length per e-fold of probability (default "
                             "tfhash.layers.FittedClassCodes.DEFAULT_TEMPERATURE, best on "
                             "held-out CIFAR-10 training images: "
                             "benchmarks/fit_temperature.py)")
    parser.add_argument("--codebook", choices=sorted(CODEBOOKS), default=None,
                        help="with --graded: the class codewords, as far apart as can be "
                             "(max-min, the default) or all nearly equally apart (capped: "
                             "better for 12-bit fitted codes; tfhash.codebooks)")
    parser.add_argument("--asymmetric", action="store_true",
                        help="also save query encoders (query-<bits>.keras) that code each "
                             "query as a class's codeword: with --graded its likeliest "
                             "class's, else the class centre of the training images' codes "
                             "nearest its own; the database keeps its codes")
    parser.add_argument("--out", type=output_dir, required=True,
                        help="output folder for models and results")

    def run(args):
        from tfhash.distribute import get_strategy

        if not args.arrange and not args.graded:
            raise TfhashError("--no-arrange orders the codewords of --graded codes; add --graded")
        if args.graded_codes is not None and not args.graded:
            raise TfhashError("--graded-codes places --graded codes; add --graded")
        if args.fit_temperature is not None and not args.graded:
            raise TfhashError("--fit-temperature fits --graded codes; add --graded")
        if args.fit_temperature is not None and args.graded_codes == "runner-up":
            raise TfhashError("--fit-temperature is the temperature of fitted codes; "
                              "--graded-codes runner-up has none")
        if args.codebook is not None and not args.graded:
            raise TfhashError("--codebook picks the codewords of --graded codes; add --graded")
        config = train_config(args)
        if args.graded and (not config.pretrain or config.pretrain_epochs == 0):
            raise TfhashError("--graded codes the phase-1 classifier: it needs pre-training "
                              "(drop --no-pretrain, --pretrain-epochs >= 1)")
        strategy = get_strategy(args.strategy)  # before any other TensorFlow work
        dataset, split = load_split(args)
        run_and_report(dataset, split, config, args.out, strategy=strategy,
                       average=view_average(args), graded=args.graded, arrange=args.arrange,
                       asymmetric=args.asymmetric,
                       fit_temperature=graded_temperature(args.graded_codes,
                                                          args.fit_temperature),
                       codebook=args.codebook or "max-min")

    return run


@command("evaluate", "mAP table and PR curve of a saved encoder on a dataset protocol")
def configure_evaluate(parser):
    parser.add_argument("model", help="a .keras file written by `tfhash train`")
    add_data_args(parser, dataset_required=False)
    parser.add_argument("--query-model", default=None,
                        help="the query encoder of asymmetric codes (query-<bits>.keras)")
    parser.add_argument("--out", type=output_dir, default=None,
                        help="folder for evaluation.json and PR curve")

    def run(args):
        from tfhash.evaluation import evaluate_encoder, format_table, summary_row
        from tfhash.io import write_json
        from tfhash.plots import plot_pr_curves

        model, meta = load_database_encoder(args.model)
        query_model = load_query_encoder(args.query_model, meta)
        args.dataset = args.dataset or meta.get("dataset")
        if not args.dataset:
            raise TfhashError("--dataset is required: the model has no recorded dataset")
        _, split = load_split(args)
        report = evaluate_encoder(model, split, query_model=query_model)
        row = summary_row(report, dataset=args.dataset, protocol=args.protocol,
                          bits=meta["bits"])
        print(format_table([row], ["dataset", "protocol", "bits", "map", "map_index",
                                   "precision_r2", "recall_r2"]))
        out = Path(args.out) if args.out else Path(args.model).parent
        curve = report["pr_curve"]
        plot_pr_curves({f"{meta['bits']} bits": (curve["precision"], curve["recall"])},
                       out / "eval_pr_curve.png", title=f"{args.dataset} {args.protocol}")
        write_json(out / "evaluation.json", {"rows": [row], **split.record()})
        print(f"wrote {out}/evaluation.json, eval_pr_curve.png")

    return run


@command("export", "export an encoder as a TF Serving SavedModel and/or ONNX")
def configure_export(parser):
    parser.add_argument("model", help="a .keras file written by `tfhash train`")
    parser.add_argument("--out", type=output_dir, required=True,
                        help="serving folder (gets <name>/<version>/)")
    parser.add_argument("--name", default="tfhash", help="model name TF Serving serves")
    parser.add_argument("--version", type=positive_int, default=None, help="default: next free")
    parser.add_argument("--format", default="savedmodel,onnx",
                        help="comma-separated: savedmodel, onnx")

    def run(args):
        from tfhash.artifacts import load_encoder
        from tfhash.export import export

        formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
        unknown = set(formats) - {"savedmodel", "onnx"}
        if not formats or unknown:
            raise TfhashError(f"--format must list savedmodel and/or onnx, got {args.format!r}")
        model, meta = load_encoder(args.model)
        exported = export(model, args.out, args.name, args.version, formats, metadata=meta)
        for fmt, path in exported.items():
            print(f"{fmt}: {path}")

    return run


def encode_images_arg(model, meta, args):
    """Images to index: a folder (--images) or a dataset's database part (--dataset)."""
    from tfhash.data import load_dataset, make_split

    if args.images:
        h, w, _ = meta["image_shape"]
        part = load_dataset(f"folder:{args.images}", image_size=h if h == w else None).train
        images = part.images
        if meta["image_shape"][-1] == 1 and images.shape[-1] == 3:
            images = images.mean(axis=-1, keepdims=True).astype(images.dtype)
        return images, part.labels, part.paths
    dataset = load_dataset(args.dataset, args.data_dir)
    split = make_split(dataset, args.protocol, args.seed, 0.0)
    return split.database.images, split.database.labels, None


def add_index_source_args(parser):
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", help="folder with one sub-folder of images per class")
    source.add_argument("--dataset", help="index this dataset's database part")
    parser.add_argument("--protocol", default="cnnh", choices=PROTOCOLS,
                        help="split whose database part --dataset indexes")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of that split")
    add_data_dir_arg(parser)
    parser.add_argument("--batch-size", type=positive_int, default=256,
                        help="images encoded per batch")


@command("index", "build or extend a Hamming index of images: index build | index add")
def configure_index(parser):
    actions = parser.add_subparsers(dest="action", required=True)
    build = actions.add_parser("build", help="encode images and write a new index")
    build.add_argument("model", help="a .keras encoder")
    add_index_source_args(build)
    build.add_argument("--out", type=output_dir, required=True, help="index folder to write")
    build.add_argument("--kind", default="flat", choices=("flat", "ivf", "multihash"),
                        help="flat: exhaustive and exact; ivf, multihash: sublinear and "
                             "approximate (FAISS binary indexes)")
    add = actions.add_parser("add", help="encode more images into an existing index")
    add.add_argument("index", help="index folder")
    add.add_argument("--model", required=True, help="the encoder that built the index")
    add_index_source_args(add)

    def run(args):
        from tfhash.index import HammingIndex
        from tfhash.model import encode

        model, meta = load_database_encoder(args.model)
        if args.action == "build":
            if Path(args.out).exists():
                raise TfhashError(f"--out {args.out} exists; use `tfhash index add` to extend it")
            index = HammingIndex(meta["bits"], kind=args.kind, fingerprint=meta["fingerprint"])
            target = args.out
        else:
            index = HammingIndex.load(args.index, bits=meta["bits"],
                                      fingerprint=meta["fingerprint"])
            target = args.index
        images, labels, paths = encode_images_arg(model, meta, args)
        codes = encode(model, images, args.batch_size)
        index.add(codes, labels=labels, paths=paths)
        index.save(target)
        print(f"index {target}: {len(index)} codes of {index.bits} bits ({index.kind})")

    return run


@command("search", "search an index with query images; prints ranked ids and distances")
def configure_search(parser):
    parser.add_argument("index", help="index folder from `tfhash index build`")
    parser.add_argument("images", nargs="+", help="query image files")
    parser.add_argument("--model", required=True, help="the encoder that built the index")
    parser.add_argument("--query-model", default=None,
                        help="the query encoder of asymmetric codes (query-<bits>.keras)")
    parser.add_argument("--k", type=positive_int, default=10, help="hits per query")
    parser.add_argument("--grid", default=None, help="write a PNG of queries and hits")

    def run(args):
        from tfhash.images import read_images
        from tfhash.index import HammingIndex
        from tfhash.model import encode

        model, meta = load_database_encoder(args.model)
        query_model = load_query_encoder(args.query_model, meta)
        index = HammingIndex.load(args.index, bits=meta["bits"], fingerprint=meta["fingerprint"])
        queries = read_images(args.images, meta["image_shape"])
        ids, distances = index.search(encode(query_model or model, queries, verbose=0), args.k)
        paths = index.paths_of(ids)
        print_hits(args.images, ids, distances, paths)
        if args.grid:
            write_search_grid(queries, ids, distances, paths, meta["image_shape"], args.grid)
            print(f"wrote {args.grid}")

    return run


def print_hits(queries, ids, distances, paths=None):
    """Prints each query's ranked hits: rank, id, Hamming distance and, where the index
    stores them, the path (``paths`` shaped as ``ids``)."""
    for q, query in enumerate(queries):
        print(f"query {query}")
        for rank, (i, d) in enumerate(zip(ids[q], distances[q]), start=1):
            where = "" if paths is None else f"  {paths[q, rank - 1]}"
            print(f"  {rank:>3}  id={i}  distance={d}{where}")


def load_database_encoder(path):
    """`tfhash.artifacts.load_encoder`, refusing a query encoder of asymmetric codes (its
    codes are not the database's)."""
    from tfhash.artifacts import load_encoder

    model, meta = load_encoder(path)
    if "database_fingerprint" in meta:
        raise TfhashError(f"{path} is a query encoder; give its database encoder "
                          f"{meta.get('database_encoder', '')} here (and this one as "
                          "--query-model)")
    return model, meta


def load_query_encoder(path, database_meta):
    """The query encoder at ``path`` (``None``: none), checked to be the one `tfhash train
    --asymmetric` saved beside the database encoder ``database_meta`` describes.
    Without one for a database encoder that has one, says so (the codes are then symmetric)."""
    if path is None:
        if database_meta.get("asymmetric"):
            print(f"note: this encoder has a query encoder (query-{database_meta['bits']}.keras "
                  "beside it); without --query-model the queries are coded as the database",
                  file=sys.stderr)
        return None
    from tfhash.artifacts import load_encoder

    model, meta = load_encoder(path)
    if meta.get("database_fingerprint") != database_meta["fingerprint"]:
        raise TfhashError(f"--query-model {path} is not the query encoder of --model (its "
                          f"database_fingerprint {meta.get('database_fingerprint')} != "
                          f"{database_meta['fingerprint']})")
    return model


def write_search_grid(queries, ids, distances, paths, image_shape, out):
    import numpy as np

    from tfhash.images import read_image
    from tfhash.plots import plot_retrieval_grid

    if paths is None:
        raise TfhashError("--grid needs an index built from --images (it stores paths)")
    hits = [[read_image(p, image_shape) for p in row] for row in paths]
    plot_retrieval_grid(queries.astype(np.uint8), np.array(hits).astype(np.uint8), None,
                        out, distances=distances, n_hits=ids.shape[1])


# what `tfhash tune` trains with where neither a --recipe nor a flag says
TUNE_DEFAULTS = {"pretrain_epochs": 10, "hash_epochs": 8}


@command("tune", "KerasTuner search of margin and temperature (objective: validation mAP)")
def configure_tune(parser):
    add_data_args(parser)
    parser.add_argument("--bits", type=bits_arg, required=True, help="the code length tuned")
    parser.add_argument("--tuner", default="random", choices=("random", "bayesian", "hyperband"),
                        help="KerasTuner search algorithm")
    parser.add_argument("--max-trials", type=positive_int, default=10,
                        help="hyperparameter sets tried by random and bayesian (Hyperband "
                             "sizes its brackets from --hash-epochs)")
    parser.add_argument("--space", default=None, help="search-space JSON (see tuning/)")
    parser.add_argument("--recipe", default=None, choices=RECIPE_NAMES,
                        help="tune from a named recipe's settings (as for `tfhash train`); "
                             "the flags below override them")
    parser.add_argument("--pretrain-epochs", type=non_negative_int, default=None,
                        help="epochs of the phase 1 every trial starts from, trained once "
                             f"(default {TUNE_DEFAULTS['pretrain_epochs']}, or the recipe's)")
    parser.add_argument("--hash-epochs", type=positive_int, default=None,
                        help="phase-2 epochs of each trial (default "
                             f"{TUNE_DEFAULTS['hash_epochs']}, or the recipe's)")
    parser.add_argument("--backbone", default=None, help="as for `tfhash train`")
    add_backbone_args(parser)
    add_precision_arg(parser)
    parser.add_argument("--out", type=output_dir, required=True,
                        help="tuning folder; re-running resumes it")

    def run(args):
        from tfhash.evaluation import format_table
        from tfhash.io import write_json
        from tfhash.model import RECIPES, TrainConfig
        from tfhash.plots import plot_tuning
        from tfhash.tuning import (
            HashingHyperModel,
            best_hparams,
            default_objective,
            ensure_pretrained,
            load_space,
            make_tuner,
            trial_table,
        )

        space = load_space(args.space) if args.space else None
        values = dict(RECIPES[args.recipe]) if args.recipe else dict(TUNE_DEFAULTS)
        values.update(given_config_flags(args))
        config = TrainConfig(bits=args.bits, seed=args.seed, **values)
        dataset, split = load_split(args)
        out = Path(args.out)
        start = time.perf_counter()
        weights = ensure_pretrained(split, config, out, dataset.num_classes)
        hypermodel = HashingHyperModel(split, args.bits, weights, config, space,
                                       dataset.num_classes)
        tuner = make_tuner(args.tuner, hypermodel, args.max_trials, out,
                           f"{dataset.name}-{args.protocol}-{args.bits}", args.seed)
        tuner.search(verbose=0)
        defaults = default_objective(hypermodel, out)
        rows = trial_table(tuner)
        if not rows:
            raise TfhashError("no trial produced a score")
        names = list(hypermodel.space)
        print(format_table(rows, ["trial", "val_map", *names]))
        print(f"defaults {defaults}")
        best, source = best_hparams(rows, defaults, names)
        write_json(out / "best_hparams.json", best)
        previous = out / "trials.json"
        wall = json.loads(previous.read_text()).get("wall_s", 0.0) if previous.exists() else 0.0
        write_json(previous, {"dataset": dataset.name, "bits": args.bits, "tuner": args.tuner,
                              **split.record(), "config": dataclasses.asdict(config),
                              "defaults": defaults,
                              "wall_s": wall + time.perf_counter() - start, "rows": rows})
        plot_tuning(rows, [n for n in ("margin", "temperature") if n in names] or names,
                    out / "tuning.png")
        source = "the defaults (no trial beat them)" if source == "defaults" else "best trial"
        print(f"{source} {best}: wrote {out}/best_hparams.json (use with --hparams), tuning.png")

    return run


@command("demo", "the quick start: train on the bundled mnist-5k, print mAP at 12 and 32 bits")
def configure_demo(parser):
    parser.add_argument("--out", type=output_dir, default="demo-output",
                        help="folder for the models, PNGs and run.json")

    def run(args):
        from tfhash import model
        from tfhash.data import load_dataset, make_split

        dataset = load_dataset("mnist-5k")
        split = make_split(dataset, "cnnh", seed=0, val_fraction=0.1)
        print(f"mnist-5k, cnnh split: {split.record()}")
        config = model.TrainConfig(bits=(12, 32), **model.DEMO_RECIPE)
        out = Path(args.out)
        learned = run_and_report(dataset, split, config, out)
        print("fitted class codes from the same phase-1 classifier (no hashing phase):")
        graded = run_and_report(dataset, split, config, out / "graded", work_dir=out / "work",
                                grid=False, graded=True, asymmetric=True,
                                fit_temperature=graded_temperature())
        for mine, theirs in zip(learned, graded):
            print(f"{mine['bits']} bits: mAP {mine['map']:.4f} exponentiated loss, "
                  f"{theirs['map_symmetric']:.4f} fitted class codes, {theirs['map']:.4f} "
                  "with queries on their class's codeword")

    return run


def build_parser():
    parser = argparse.ArgumentParser(prog="tfhash", description="Deep hashing for image search.")
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N",
                        help="TensorFlow's intra- and inter-op threads (default: every "
                             "core); 1 for each of several trainings run side by side on a "
                             "small CPU")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, configure) in COMMANDS.items():
        child = sub.add_parser(name, help=help_text, description=help_text)
        child.set_defaults(run=configure(child))
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    import_tensorflow()  # before any command's work, so its load-time log stays quiet
    drop_retracing_warnings()
    try:
        if args.threads:
            use_threads(args.threads)
        args.run(args)
    except (TfhashError, OSError, ValueError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"tfhash: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tfhash: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
