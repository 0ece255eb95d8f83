import argparse
import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from tfhash import cli
from tfhash.codebooks import capped_codebook, class_codebook

# the digits with a narrow backbone: the CLI's training tests check what it writes, not
# how well it learns (tests/test_training.py does that)
TINY = ("--dataset", "mnist-5k", "--backbone-width", "4")


def run_cli(*argv):
    """Runs the real console entry point in a subprocess; returns (code, stdout, stderr).
    Each call loads TensorFlow afresh (seconds), so most error tests use `run_main`."""
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from tfhash.cli import main; sys.exit(main())", *argv],
        capture_output=True, text=True, timeout=300,
    )
    return proc.returncode, proc.stdout, proc.stderr


def run_main(capsys, *argv):
    """Runs `cli.main` in this process; returns (code, stderr). A parser error's exit
    becomes its code, as the console script's would."""
    try:
        code = cli.main(list(argv))
    except SystemExit as stopped:
        code = stopped.code
    return code, capsys.readouterr().err


def assert_one_line_error(code, err, *fragments):
    """The error is the only line on stderr (argparse's usage lines aside), no traceback;
    in a subprocess that includes TensorFlow's load-time native log (`tfhash.quiet`)."""
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("tfhash") and "error:" in line]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    usage = lines[:-1]
    assert not usage or (usage[0].startswith("usage: tfhash")
                         and all(line.startswith(" ") for line in usage[1:])), err
    for fragment in fragments:
        assert fragment in errors[0], err


@pytest.mark.parametrize("name", ["train", "evaluate", "export", "index", "search", "demo"])
def test_every_command_has_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([name, "--help"])
    assert exit_info.value.code == 0
    assert "usage: tfhash " + name in capsys.readouterr().out


def test_every_argument_of_every_command_says_what_it_is():
    def undocumented(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from undocumented(sub, f"{path} {name}")
            elif not action.help:
                yield f"{path} {'/'.join(action.option_strings) or action.dest}"

    assert list(undocumented(cli.build_parser(), "tfhash")) == []


def test_unknown_dataset(tmp_path):
    """In a fresh process, as the console script runs it (so are the missing
    data file's and a fresh process's export): one line, exit 2."""
    code, _, err = run_cli("train", "--dataset", "imagenet", "--out", str(tmp_path))
    assert_one_line_error(code, err, "unknown dataset 'imagenet'")


@pytest.mark.parametrize("bits", ["0", "1025", "abc"])
def test_bits_out_of_range(bits, tmp_path, capsys):
    code, err = run_main(capsys, "train", "--dataset", "mnist-5k", "--bits", bits,
                         "--out", str(tmp_path))
    assert_one_line_error(code, err, "--bits")


def test_missing_data_file_says_where_it_looked(tmp_path):
    code, _, err = run_cli("train", "--dataset", "mnist", "--data-dir", str(tmp_path),
                           "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, str(tmp_path / "mnist.npz"))


def write_npz(path, **overrides):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 255, (20, 8, 8), dtype=np.uint8),
        "y_train": rng.integers(0, 2, 20),
        "x_test": rng.integers(0, 255, (6, 8, 8), dtype=np.uint8),
        "y_test": rng.integers(0, 2, 6),
    }
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"y_test": None}, "lacks keys ['y_test']"),
        ({"x_train": np.zeros((20, 8, 8), np.float32)}, "images must be uint8"),
        ({"y_train": np.zeros((20, 2), np.int64)}, "labels must be integer class ids"),
        ({"y_train": np.zeros(19, np.int64)}, "20 images but 19 labels"),
        ({"x_train": np.zeros((20, 8), np.uint8)}, "images must be uint8"),
    ],
)
def test_bad_data_file(tmp_path, overrides, fragment, capsys):
    write_npz(tmp_path / "mnist.npz", **overrides)
    code, err = run_main(capsys, "train", "--dataset", "mnist", "--data-dir", str(tmp_path),
                         "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, fragment)


def test_bad_hparams_file(tmp_path, capsys):
    (tmp_path / "h.json").write_text(json.dumps({"margn": 0.5}))
    code, err = run_main(capsys, "train", "--dataset", "mnist-5k",
                         "--hparams", str(tmp_path / "h.json"), "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "--hparams")


def test_evaluate_missing_model(tmp_path, capsys):
    code, err = run_main(capsys, "evaluate", str(tmp_path / "nope.keras"),
                         "--dataset", "mnist-5k")
    assert_one_line_error(code, err, "does not exist")


@pytest.mark.parametrize("command", [("evaluate",), ("export",),
                                     ("index", "build", "--dataset", "mnist-5k")])
def test_a_file_that_is_not_a_keras_archive_is_named_as_such(command, tmp_path, capsys):
    (tmp_path / "notes.keras").write_text("not a model")
    code, err = run_main(capsys, *command[:2], str(tmp_path / "notes.keras"), *command[2:],
                         "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "notes.keras is not a .keras archive")


@pytest.fixture(scope="module")
def saved_encoder(tmp_path_factory):
    import keras

    from tfhash.artifacts import save_encoder
    from tfhash.model import build_hasher, get_backbone

    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("enc") / "model-16.keras"
    save_encoder(build_hasher(get_backbone("mnist_cnn", (28, 28, 1)), 16), path,
                 {"dataset": "mnist-5k"})
    return path


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    from PIL import Image

    from tfhash.data import load_dataset

    root = tmp_path_factory.mktemp("images")
    part = load_dataset("mnist-5k").train
    for label in (3, 7):
        (root / f"digit{label}").mkdir()
        for i in np.flatnonzero(part.labels == label)[:6]:
            Image.fromarray(part.images[i, ..., 0]).save(root / f"digit{label}" / f"{i}.png")
    return root


def test_index_build_search_and_grid(saved_encoder, image_folder, tmp_path, capsys):
    index_dir = tmp_path / "ix"
    assert cli.main(["index", "build", str(saved_encoder), "--images", str(image_folder),
                     "--out", str(index_dir)]) == 0
    assert "12 codes of 16 bits" in capsys.readouterr().out
    query = sorted((image_folder / "digit3").iterdir())[0]
    grid = tmp_path / "grid.png"
    assert cli.main(["search", str(index_dir), str(query), "--model", str(saved_encoder),
                     "--k", "3", "--grid", str(grid)]) == 0
    out = capsys.readouterr().out
    assert f"query {query}" in out and "distance=0" in out and str(query) in out.split("\n")[1]
    assert grid.stat().st_size > 1000
    assert cli.main(["index", "add", str(index_dir), "--model", str(saved_encoder),
                     "--images", str(image_folder)]) == 0
    assert "24 codes" in capsys.readouterr().out


def test_search_refuses_another_encoder(saved_encoder, image_folder, tmp_path, capsys):
    import keras

    from tfhash.artifacts import save_encoder
    from tfhash.model import build_hasher, get_backbone

    index_dir = tmp_path / "ix"
    cli.main(["index", "build", str(saved_encoder), "--images", str(image_folder),
              "--out", str(index_dir)])
    keras.utils.set_random_seed(1)
    other = tmp_path / "other-16.keras"
    save_encoder(build_hasher(get_backbone("mnist_cnn", (28, 28, 1)), 16), other)
    query = sorted((image_folder / "digit7").iterdir())[0]
    assert cli.main(["search", str(index_dir), str(query), "--model", str(other)]) == 2
    assert "not the one that built the index" in capsys.readouterr().err


def test_export_command(saved_encoder, tmp_path, capsys):
    assert cli.main(["export", str(saved_encoder), "--out", str(tmp_path), "--name", "digits",
                     "--format", "savedmodel"]) == 0
    assert (tmp_path / "digits/1/saved_model.pb").is_file()
    assert cli.main(["export", str(saved_encoder), "--out", str(tmp_path),
                     "--format", "tflite"]) == 2
    assert "--format" in capsys.readouterr().err


@pytest.mark.parametrize("graded", [False, True])
def test_a_fresh_process_exports_a_saved_encoder(graded, tmp_path):
    """`tfhash export` loads the encoder in a process that has imported nothing of tfhash's
    layers yet (the in-process tests always had)."""
    import keras

    from tfhash.artifacts import save_encoder
    from tfhash.model import build_classifier, build_graded_hasher, build_hasher, get_backbone

    keras.utils.set_random_seed(0)
    backbone = get_backbone("mnist_cnn", (28, 28, 1), width=4)
    encoder = (build_graded_hasher(build_classifier(backbone, 10), 12) if graded
               else build_hasher(backbone, 12))
    save_encoder(encoder, tmp_path / "model-12.keras", {"dataset": "mnist-5k"})
    code, out, err = run_cli("export", str(tmp_path / "model-12.keras"), "--out",
                             str(tmp_path / "serving"), "--format", "savedmodel")
    assert code == 0, err
    assert (tmp_path / "serving" / "tfhash" / "1" / "saved_model.pb").is_file()


def test_train_in_mixed_precision_saves_a_float32_encoder(tmp_path, capsys):
    from tfhash.artifacts import load_encoder

    code = cli.main(["train", *TINY, "--bits", "8", "--pretrain-epochs", "1",
                     "--hash-epochs", "1", "--precision", "mixed_bfloat16",
                     "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["config"]["precision"] == "mixed_bfloat16"
    assert run["config"]["backbone_width"] == 4
    assert 0 < run["rows"][0]["map"] <= 1
    encoder, meta = load_encoder(tmp_path / "model-8.keras")
    assert meta["bits"] == 8
    inner = [layer for sub in encoder.layers for layer in getattr(sub, "layers", [sub])]
    assert all(layer.compute_dtype == "float32" for layer in inner)
    assert [layer.filters for layer in inner if hasattr(layer, "filters")] == [4, 4, 8, 8]


def test_train_from_the_cifar10_recipe_trains_its_arranged_codebook_head(tmp_path, capsys):
    # the recipe's own settings (shared heads, mixup, the arranged codebook head that needs
    # the phase-1 classifier's confusions) run end to end, sized down by flags
    code = cli.main(["train", *TINY, "--recipe", "cifar10-cnnh", "--bits", "8", "16",
                     "--pretrain-epochs", "1", "--hash-epochs", "1", "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    config = json.loads((tmp_path / "run.json").read_text())["config"]
    assert (config["classification_head"], config["shared_heads"], config["mix"],
            config["temperature"], config["pretrain_epochs"]) == (
        "arranged-codebook", True, "mixup", 4.0, 1)
    assert (tmp_path / "model-8.keras").is_file() and (tmp_path / "model-16.keras").is_file()


@pytest.mark.parametrize("flags, flip, shift", [
    (("--flip-average",), True, False),
    (("--shift-average",), False, True),
    (("--flip-average", "--shift-average"), True, True),  # ten views
])
def test_train_with_test_time_averaging_saves_averaged_encoders(flags, flip, shift, tmp_path,
                                                                capsys):
    from tfhash.artifacts import load_encoder
    from tfhash.data import load_dataset
    from tfhash.layers import HorizontalFlip, Shift
    from tfhash.model import encode

    code = cli.main(["train", *TINY, "--bits", "8", "--pretrain-epochs", "1",
                     "--hash-epochs", "1", *flags, "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    run = json.loads((tmp_path / "run.json").read_text())
    encoder, meta = load_encoder(tmp_path / "model-8.keras")
    for record in (run, meta):
        assert (record["flip_averaged"], record["shift_averaged"]) == (flip, shift)

    def nested(outer):  # the flip+shift encoder holds the shift-averaged one as a layer
        for layer in outer.layers:
            yield layer
            if hasattr(layer, "layers"):
                yield from nested(layer)

    layers = list(nested(encoder))
    assert sum(isinstance(layer, HorizontalFlip) for layer in layers) == flip
    shifts = sorted((layer.rows, layer.cols) for layer in layers if isinstance(layer, Shift))
    assert shifts == ([(-1, 0), (0, -1), (0, 1), (1, 0)] if shift else [])
    if flip:
        images = load_dataset("mnist-5k").train.images[:32]
        np.testing.assert_array_equal(encode(encoder, images, verbose=0),
                                      encode(encoder, images[:, :, ::-1], verbose=0))


def test_train_graded_saves_shift_averaged_class_codes_with_no_hashing_phase(tmp_path, capsys):
    from tfhash.artifacts import load_encoder
    from tfhash.codebooks import class_codebook
    from tfhash.data import load_dataset
    from tfhash.layers import GradedClassCodes, Shift
    from tfhash.model import encode

    code = cli.main(["train", *TINY, "--bits", "12", "--pretrain-epochs", "1", "--graded",
                     "--graded-codes", "runner-up", "--shift-average", "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["graded"] is True and run["shift_averaged"] is True
    assert not any(phase.startswith("hash") for phase in run["wall_s"])
    encoder, meta = load_encoder(tmp_path / "model-12.keras")
    assert meta["graded"] is True
    assert sum(isinstance(layer, Shift) for layer in encoder.layers) == 4
    (graded,) = [layer for layer in encoder.layers if isinstance(layer, GradedClassCodes)]
    codes = encode(encoder, load_dataset("mnist-5k").train.images[:64], verbose=0)
    distance = (codes[:, None, :] != class_codebook(10, 12)[None]).sum(-1).min(1)
    assert distance.max() <= graded.max_shift  # each code near its class's codeword


def test_train_graded_arranges_the_codewords_unless_told_not_to(tmp_path, capsys):
    from tfhash.artifacts import load_encoder
    from tfhash.codebooks import class_codebook
    from tfhash.layers import GradedClassCodes

    books = {}
    for name, extra in (("arranged", []), ("own", ["--no-arrange"])):
        code = cli.main(["train", *TINY, "--bits", "12", "--pretrain-epochs", "1", "--graded",
                         "--graded-codes", "runner-up", *extra, "--out", str(tmp_path / name)])
        assert code == 0, capsys.readouterr().err
        run = json.loads((tmp_path / name / "run.json").read_text())
        assert run["arranged_codebook"] is (name == "arranged")
        encoder, _ = load_encoder(tmp_path / name / "model-12.keras")
        (layer,) = [lay for lay in encoder.layers if isinstance(lay, GradedClassCodes)]
        books[name] = layer.codebook
    plain = class_codebook(10, 12)
    np.testing.assert_array_equal(books["own"], plain)
    assert not np.array_equal(books["arranged"], plain)
    assert sorted(map(bytes, books["arranged"])) == sorted(map(bytes, plain))


@pytest.mark.parametrize("options, fit_temperature, codebook", [
    (["--graded-codes", "runner-up"], None, None), ([], 0.15, None),
    (["--fit-temperature", "0.125", "--codebook", "capped"], 0.125, "capped")])
def test_train_graded_asymmetric_saves_query_encoders_that_evaluate_and_search_use(
        tmp_path, image_folder, capsys, options, fit_temperature, codebook):
    """Runner-up graded codes, or by default fitted ones at the default temperature
    (checked against a brute-force search over every 12-bit code), on the default codebook
    or with --codebook capped `capped_codebook`'s words."""
    import keras
    from test_fitted_codes import fitted_reference

    from tfhash.artifacts import load_encoder
    from tfhash.data import load_dataset, make_split
    from tfhash.layers import FittedClassCodes, GradedClassCodes
    from tfhash.metrics import mean_average_precision
    from tfhash.model import encode

    out = tmp_path / "run"
    code = cli.main(["train", *TINY, "--bits", "12", "--pretrain-epochs", "1",
                     "--graded", "--asymmetric", *options, "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    run = json.loads((out / "run.json").read_text())
    assert run["asymmetric"] is True and run["arranged_codebook"] is True
    assert run["fit_temperature"] == fit_temperature
    assert run["codebook"] == (codebook or "max-min")
    assert (out / "pr_curve.png").is_file() and not (out / "map_vs_bits.png").exists()
    database, db_meta = load_encoder(out / "model-12.keras")
    query, q_meta = load_encoder(out / "query-12.keras")
    assert q_meta["database_fingerprint"] == db_meta["fingerprint"]
    assert q_meta["database_encoder"] == "model-12.keras"
    # the query codes are the database encoder's codewords of each image's likeliest class
    kind = GradedClassCodes if fit_temperature is None else FittedClassCodes
    (layer,) = [lay for lay in database.layers if isinstance(lay, kind)]
    words = (capped_codebook if codebook else class_codebook)(10, 12)  # arranged: reordered
    assert sorted(map(bytes, layer.codebook)) == sorted(map(bytes, words))
    probabilities = keras.Model(database.inputs, layer.input)  # the classifier's output
    split = make_split(load_dataset("mnist-5k"), "cnnh", seed=0, val_fraction=0.0)
    q_probs = probabilities.predict(split.query.images, verbose=0)
    np.testing.assert_array_equal(encode(query, split.query.images, verbose=0),
                                  layer.codebook[q_probs.argmax(1)])
    db_codes = encode(database, split.database.images, verbose=0)
    if fit_temperature is not None:  # codes of equal loss may differ: compare distances
        db_probs = probabilities.predict(split.database.images, verbose=0)
        expected_codes = fitted_reference(db_probs, layer.codebook, fit_temperature)
        np.testing.assert_array_equal(
            (db_codes[:, None] != layer.codebook[None]).sum(-1),
            (expected_codes[:, None] != layer.codebook[None]).sum(-1))
    expected = mean_average_precision(layer.codebook[q_probs.argmax(1)], split.query.labels,
                                      db_codes, split.database.labels)
    assert run["rows"][0]["map"] == pytest.approx(expected, abs=1e-6)
    symmetric = mean_average_precision(encode(database, split.query.images, verbose=0),
                                       split.query.labels, db_codes, split.database.labels)
    assert run["rows"][0]["map_symmetric"] == pytest.approx(symmetric, abs=1e-6)
    # evaluate and search take the query encoder; search refuses one of another encoder
    capsys.readouterr()
    assert cli.main(["evaluate", str(out / "model-12.keras"), "--query-model",
                     str(out / "query-12.keras"), "--out", str(tmp_path)]) == 0
    evaluation = json.loads((tmp_path / "evaluation.json").read_text())
    assert evaluation["rows"][0]["map"] == pytest.approx(expected, abs=1e-6)
    assert "note: this encoder has a query encoder" not in capsys.readouterr().err
    assert cli.main(["evaluate", str(out / "model-12.keras"), "--out", str(tmp_path)]) == 0
    assert "note: this encoder has a query encoder (query-12.keras" in capsys.readouterr().err
    evaluation = json.loads((tmp_path / "evaluation.json").read_text())
    assert evaluation["rows"][0]["map"] == pytest.approx(symmetric, abs=1e-6)
    index_dir = tmp_path / "ix"
    assert cli.main(["index", "build", str(out / "model-12.keras"), "--images",
                     str(image_folder), "--out", str(index_dir)]) == 0
    image = sorted((image_folder / "digit3").iterdir())[0]
    capsys.readouterr()
    assert cli.main(["search", str(index_dir), str(image), "--model", str(out / "model-12.keras"),
                     "--query-model", str(out / "query-12.keras"), "--k", "3"]) == 0
    assert f"query {image}" in capsys.readouterr().out
    assert cli.main(["search", str(index_dir), str(image), "--model", str(out / "model-12.keras"),
                     "--query-model", str(out / "model-12.keras")]) == 2
    assert "is not the query encoder of --model" in capsys.readouterr().err
    # a query encoder where the database's belongs is refused by evaluate, index and search
    for argv in (["evaluate", str(out / "query-12.keras")],
                 ["index", "add", str(index_dir), "--model", str(out / "query-12.keras"),
                  "--images", str(image_folder)],
                 ["search", str(index_dir), str(image), "--model", str(out / "query-12.keras")]):
        assert cli.main(argv) == 2
        assert "is a query encoder; give its database encoder model-12.keras" in \
            capsys.readouterr().err


def test_train_asymmetric_saves_query_encoders_on_the_training_codes_class_centres(
        tmp_path, capsys):
    from test_asymmetric_learned_codes import centres_reference, nearest_reference

    from tfhash.artifacts import load_encoder
    from tfhash.data import load_dataset, make_split
    from tfhash.metrics import mean_average_precision
    from tfhash.model import encode

    out = tmp_path / "run"
    code = cli.main(["train", *TINY, "--bits", "12", "24",
                     "--pretrain-epochs", "1", "--hash-epochs", "1", "--asymmetric",
                     "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    run = json.loads((out / "run.json").read_text())
    assert run["asymmetric"] is True and run["graded"] is False
    # the centres come from the training images that train trained on (the default
    # --val-fraction 0.1 holds the rest out)
    split = make_split(load_dataset("mnist-5k"), "cnnh", seed=0, val_fraction=0.1)
    for row in run["rows"]:
        bits = row["bits"]
        database, db_meta = load_encoder(out / f"model-{bits}.keras")
        query, q_meta = load_encoder(out / f"query-{bits}.keras")
        assert q_meta["database_fingerprint"] == db_meta["fingerprint"]
        centres = centres_reference(database.predict(split.train.images, verbose=0),
                                    split.train.labels, 10)
        relaxed = database.predict(split.query.images, verbose=0)
        snapped = nearest_reference(relaxed, centres)
        np.testing.assert_array_equal(encode(query, split.query.images, verbose=0), snapped)
        db_codes = encode(database, split.database.images, verbose=0)
        for key, q_codes in (("map", snapped), ("map_symmetric", np.where(relaxed >= 0, 1, -1))):
            expected = mean_average_precision(q_codes, split.query.labels, db_codes,
                                              split.database.labels)
            assert row[key] == pytest.approx(expected, abs=1e-6)


def test_no_arrange_needs_graded(tmp_path, capsys):
    code, err = run_main(capsys, "train", "--dataset", "mnist-5k", "--no-arrange",
                         "--out", str(tmp_path))
    assert_one_line_error(code, err, "--no-arrange", "--graded")


@pytest.mark.parametrize("options, names", [
    (["--fit-temperature", "0.125"], ("--fit-temperature", "--graded")),
    (["--graded", "--fit-temperature", "0"], ("--fit-temperature", "> 0")),
    (["--graded", "--fit-temperature", "warm"], ("--fit-temperature", "expected a number")),
    (["--graded", "--graded-codes", "runner-up", "--fit-temperature", "0.15"],
     ("--fit-temperature", "runner-up")),
    (["--graded-codes", "fitted"], ("--graded-codes", "--graded")),
    (["--graded", "--graded-codes", "nearest"], ("--graded-codes", "invalid choice")),
    (["--codebook", "capped"], ("--codebook", "--graded")),
    (["--graded", "--codebook", "equidistant"], ("--codebook", "invalid choice")),
])
def test_class_code_options_are_checked(tmp_path, capsys, options, names):
    code, err = run_main(capsys, "train", "--dataset", "mnist-5k", *options,
                         "--out", str(tmp_path))
    assert_one_line_error(code, err, *names)


def test_train_graded_needs_pretraining(tmp_path, capsys):
    code, err = run_main(capsys, "train", "--dataset", "mnist-5k", "--graded", "--no-pretrain",
                         "--out", str(tmp_path))
    assert_one_line_error(code, err, "--graded", "pre-training")


def test_demo_also_codes_its_classifier_with_graded_codes_without_training_again(
        tmp_path, capsys, monkeypatch):
    from tfhash import model, plots

    monkeypatch.setattr(model, "DEMO_RECIPE", {"pretrain_epochs": 1, "hash_epochs": 1,
                                                "backbone_width": 4})
    plotted = {}
    draw = plots.plot_map_vs_bits
    monkeypatch.setattr(plots, "plot_map_vs_bits", lambda series, path, **kwargs: (
        plotted.__setitem__(path.parent, series) or draw(series, path, **kwargs)))
    trainings = []
    pretrain = model.pretrain
    monkeypatch.setattr(model, "pretrain",
                        lambda *args, **kwargs: trainings.append(1) or pretrain(*args, **kwargs))
    assert cli.main(["demo", "--out", str(tmp_path)]) == 0
    assert len(trainings) == 1  # the graded half loads the learned half's phase 1
    learned = json.loads((tmp_path / "run.json").read_text())
    graded = json.loads((tmp_path / "graded" / "run.json").read_text())
    assert graded["graded"] is True and learned["graded"] is False
    assert graded["fit_temperature"] == 0.15  # fitted codes, at the default temperature
    assert (tmp_path / "graded" / "model-12.keras").is_file()
    assert graded["asymmetric"] is True and (tmp_path / "graded" / "query-12.keras").is_file()
    lengths = [row["bits"] for row in learned["rows"]]
    assert lengths == [12, 32] and plotted[tmp_path] == {
        "mAP": (lengths, [row["map"] for row in learned["rows"]])}
    assert plotted[tmp_path / "graded"] == {
        "queries by the query encoders": (lengths, [row["map"] for row in graded["rows"]]),
        "queries by the database encoders": (lengths, [row["map_symmetric"]
                                                       for row in graded["rows"]])}
    out = capsys.readouterr().out
    for folder in (tmp_path, tmp_path / "graded"):  # two code lengths: a line each can show
        for picture in ("pr_curve.png", "map_vs_bits.png"):
            assert (folder / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", folder / picture
        (listed,) = [line.split("/")[-1].split(", ") for line in out.splitlines()
                     if line.startswith(f"wrote {folder}/model-")]
        assert sorted(p.name for p in folder.glob("*.png")) == sorted(
            name for name in listed if name.endswith(".png"))
        assert all(any(folder.glob(name)) for name in listed), listed
    for row in graded["rows"]:
        assert (f"{row['map_symmetric']:.4f} fitted class codes, {row['map']:.4f} with queries "
                "on their class's codeword") in out


def test_run_and_report_refuses_an_unknown_average_before_training(tmp_path):
    from tfhash.errors import TfhashError

    with pytest.raises(TfhashError, match="`average` must be one of"):
        cli.run_and_report(None, None, None, tmp_path, average="mirror")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("flags, average", [
    ((), None), (("--flip-average",), "flip"), (("--shift-average",), "shift"),
    (("--shift-average", "--flip-average"), "flip+shift"),
])
def test_the_average_flags_name_one_of_the_librarys_view_averages(flags, average):
    from tfhash.model import VIEW_AVERAGES

    args = cli.build_parser().parse_args(["train", "--dataset", "mnist-5k", *flags,
                                          "--out", "unused"])
    assert cli.view_average(args) == average and average in VIEW_AVERAGES


def test_choices_spelled_in_the_cli_are_the_librarys():
    import argparse

    from tfhash.backbones import STEMS
    from tfhash.model import CLASSIFICATION_HEADS, METHODS, PRECISIONS, RECIPES
    from tfhash.pipeline import AUGMENTATIONS, MIXES

    parser = argparse.ArgumentParser()
    cli.add_train_args(parser)
    choices = {a.dest: tuple(a.choices) for a in parser._actions if a.choices}
    assert choices["precision"] == PRECISIONS and choices["mix"] == MIXES
    assert choices["augment"] == AUGMENTATIONS
    assert choices["recipe"] == tuple(RECIPES) and choices["method"] == tuple(METHODS)
    assert choices["classification_head"] == CLASSIFICATION_HEADS
    assert choices["backbone_stem"] == STEMS


def test_every_train_flag_that_names_a_config_field_reaches_it():
    from tfhash.model import TrainConfig

    parser = argparse.ArgumentParser()
    cli.add_data_args(parser)
    cli.add_train_args(parser)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    flags = {a.dest for a in parser._actions} & fields - {"bits", "seed"}
    assert flags == set(cli.CONFIG_FLAGS)
    config = cli.train_config(parser.parse_args(
        ["--dataset", "x", "--method", "dsh", "--negative-margin", "0",
         "--classification-weight", "0.5", "--classification-head", "codebook"]))
    assert (config.method, config.negative_margin, config.classification_weight,
            config.classification_head) == ("dsh", 0.0, 0.5, "codebook")


def test_a_recipe_under_an_hparams_file_under_the_flags_given(tmp_path, monkeypatch):
    from tfhash import hardware
    from tfhash.model import TrainConfig

    monkeypatch.setattr(hardware, "native_bfloat16", lambda: True)  # the recipe's "auto"
    parser = argparse.ArgumentParser()
    cli.add_data_args(parser)
    cli.add_train_args(parser)
    hparams = tmp_path / "h.json"
    # keys that are flags too: the file once crashed into one of them ("multiple values")
    hparams.write_text(json.dumps({"pretrain_epochs": 5, "temperature": 2.0, "mix": "none"}))
    config = cli.train_config(parser.parse_args(
        ["--dataset", "x", "--recipe", "cifar10-cnnh", "--hparams", str(hparams),
         "--temperature", "3", "--bits", "12", "24"]))
    assert (config.pretrain_epochs, config.temperature, config.mix) == (5, 3.0, "none")
    assert (config.classification_head, config.hash_epochs, config.precision,
            config.bits) == ("arranged-codebook", 80, "mixed_bfloat16", (12, 24))
    assert config.batch_size == TrainConfig.batch_size  # in none of the three
    plain = cli.train_config(parser.parse_args(["--dataset", "x", "--hparams", str(hparams)]))
    assert (plain.pretrain_epochs, plain.hash_epochs, plain.mix) == (5, 10, "none")


def test_index_kinds_and_tuners_spelled_in_the_cli_are_the_librarys():
    from tfhash.index import KINDS
    from tfhash.tuning import TUNERS

    def choices(*path):
        parser = cli.build_parser()
        for name in path:
            parser = next(a for a in parser._actions
                          if isinstance(a, argparse._SubParsersAction)).choices[name]
        return {a.dest: tuple(a.choices) for a in parser._actions if a.choices}

    assert choices("tune")["tuner"] == TUNERS
    assert choices("index", "build")["kind"] == KINDS


def test_train_options_reach_the_config():
    import argparse

    parser = argparse.ArgumentParser()
    cli.add_data_args(parser)
    cli.add_train_args(parser)
    args = parser.parse_args(["--dataset", "mnist-5k", "--augment", "affine",
                              "--ema-momentum", "0.99", "--hash-mix", "cutmix",
                              "--soup-size", "3", "--ensemble-size", "2",
                              "--backbone-width", "16", "--sam-radius", "0.05",
                              "--backbone-stem", "whitening", "--weight-decay", "0.5"])
    config = cli.train_config(args)
    assert (config.augment, config.ema_momentum, config.hash_mix, config.soup_size,
            config.ensemble_size, config.backbone_width, config.sam_radius,
            config.backbone_stem, config.weight_decay) == (
        "affine", 0.99, "cutmix", 3, 2, 16, 0.05, "whitening", 0.5)
    default = cli.train_config(parser.parse_args(["--dataset", "x"]))
    assert (default.ema_momentum, default.hash_mix, default.soup_size,
            default.ensemble_size, default.backbone_width, default.sam_radius,
            default.backbone_stem, default.weight_decay) == (
        None, "none", 1, 1, None, None, "conv", 5e-4)


@pytest.mark.parametrize("argv, flag", [
    (["train", "--soup-size", "0"], "--soup-size"),
    (["train", "--ensemble-size", "0"], "--ensemble-size"),
    (["train", "--batch-size", "0"], "--batch-size"),
    (["train", "--hash-epochs", "0"], "--hash-epochs"),
    (["tune", "--bits", "12", "--max-trials", "0"], "--max-trials"),
    (["tune", "--bits", "12", "--hash-epochs", "0"], "--hash-epochs"),
    (["train", "--backbone-width", "0"], "--backbone-width"),
    (["tune", "--bits", "12", "--backbone-width", "0"], "--backbone-width"),
    (["search", "--model", "m", "--k", "0", "index", "image.png"], "--k"),
    (["index", "build", "m", "--dataset", "x", "--batch-size", "0"], "--batch-size"),
    (["export", "m", "--version", "0"], "--version"),
])
def test_integers_below_one_are_refused_by_the_parser_naming_the_flag(
        argv, flag, capsys, tmp_path):
    needs = [] if argv[0] == "search" else ["--out", str(tmp_path)]  # no output is written
    needs += ["--dataset", "mnist-5k"] if argv[0] in ("train", "tune") else []
    assert_one_line_error(*run_main(capsys, *argv, *needs),
                          f"argument {flag}: must be >= 1, got 0")
    assert not any(tmp_path.iterdir())


def test_pretrain_epochs_may_be_zero_but_not_negative(capsys, tmp_path):
    parser = cli.build_parser()
    argv = ["train", "--dataset", "mnist-5k", "--out", str(tmp_path)]
    assert parser.parse_args([*argv, "--pretrain-epochs", "0"]).pretrain_epochs == 0
    assert_one_line_error(*run_main(capsys, *argv, "--pretrain-epochs", "-1"),
                          "argument --pretrain-epochs: must be >= 0, got -1")


@pytest.mark.parametrize("argv, fragment", [
    (("--margin", "5"), "`margin` must be a number in (0, 1]"),
    (("--temperature", "0"), "`temperature` must be a number >="),
    (("--quantization", "-1"), "`quantization` must be a number >= 0"),
])
def test_bad_loss_setting_fails_before_phase_one(argv, fragment, capsys, tmp_path, monkeypatch):
    from tfhash import model

    def phase_one(*args, **kwargs):
        raise AssertionError("phase 1 ran with a loss setting phase 2 refuses")

    monkeypatch.setattr(model, "pretrain", phase_one)
    assert_one_line_error(*run_main(capsys, "train", *TINY, *argv,
                                    "--out", str(tmp_path / "out")), fragment)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv", [["train"], ["evaluate", "m.keras"], ["export", "m.keras"],
                                  ["index", "build", "m.keras"], ["tune"], ["demo"]])
def test_out_that_is_a_file_is_refused_before_any_work(argv, capsys, tmp_path):
    (tmp_path / "results").write_text("not a folder")
    assert_one_line_error(*run_main(capsys, *argv, "--out", str(tmp_path / "results")),
                          "argument --out: expected a folder", "is a file")


def test_folder_that_cannot_be_made_is_one_line(capsys, tmp_path):
    (tmp_path / "results").write_text("not a folder")  # so results/run cannot be made
    out = tmp_path / "results" / "run"
    assert_one_line_error(*run_main(capsys, "train", *TINY, "--pretrain-epochs", "1",
                                    "--hash-epochs", "1", "--out", str(out)), "Not a directory")


def test_threads_are_set_before_the_command_runs(capsys, tmp_path, monkeypatch):
    asked = []
    monkeypatch.setattr(cli, "use_threads", asked.append)
    assert_one_line_error(*run_main(capsys, "--threads", "1", "train", "--dataset", "mnist-5k",
                                    "--ema-momentum", "1.5", "--out", str(tmp_path)),
                          "ema_momentum")
    assert asked == [1]
    assert_one_line_error(*run_main(capsys, "--threads", "0", "train", "--dataset",
                                    "mnist-5k", "--out", str(tmp_path)), "argument --threads")
    assert asked == [1]


def test_bad_ema_momentum_is_one_line(capsys, tmp_path):
    assert_one_line_error(*run_main(capsys, "train", "--dataset", "mnist-5k",
                                    "--ema-momentum", "1.5", "--out", str(tmp_path)),
                          "ema_momentum")


def test_bad_weight_decay_is_one_line(capsys, tmp_path):
    assert_one_line_error(*run_main(capsys, "train", "--dataset", "mnist-5k",
                                    "--weight-decay", "-1", "--out", str(tmp_path)),
                          "`weight_decay` must be a number >= 0, got -1.0")


def test_bad_sam_radius_is_one_line(capsys, tmp_path):
    assert_one_line_error(*run_main(capsys, "train", "--dataset", "mnist-5k",
                                    "--sam-radius", "-0.1", "--out", str(tmp_path)),
                          "`sam_radius` must be None or a number > 0, got -0.1")
