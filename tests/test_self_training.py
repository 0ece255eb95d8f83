import keras
import numpy as np
import pytest

from tfhash import data, model
from tfhash.errors import TfhashError
from tfhash.self_training import (
    select_confident,
    self_train,
    unlabelled_rows,
    with_pseudo_labels,
)


def confident_by_sorting(probs, per_class, keep=1.0):
    """Reference: per predicted class, sort (confidence desc, row asc) and keep the head:
    ``per_class`` rows, and no more than ``keep`` of the class's rows."""
    chosen = []
    for c in range(probs.shape[1]):
        rows = [(-probs[i].max(), i) for i in range(len(probs)) if probs[i].argmax() == c]
        head = min(per_class, int(np.floor(keep * len(rows))))
        chosen += [(i, c) for _, i in sorted(rows)[:head]]
    return sorted(chosen)


@pytest.mark.parametrize("per_class, keep", [(1, 1.0), (3, 1.0), (50, 1.0), (50, 0.5),
                                             (3, 0.25), (50, np.float32(0.9))])
def test_select_confident_matches_a_sort_per_class(per_class, keep):
    rng = np.random.default_rng(per_class)
    logits = rng.normal(size=(40, 4)) * 2
    logits[:, 3] -= 10  # class 3 is predicted for no row: it contributes nothing
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    probs[5] = probs[6]  # a tie in confidence goes to the lower row
    indices, labels = select_confident(probs, per_class, keep=keep)
    expected = confident_by_sorting(probs, per_class, keep)
    assert list(zip(indices.tolist(), labels.tolist())) == expected


def test_select_confident_leaves_out_the_least_confident_fraction_of_each_class():
    # class 0: confidences 0.9, 0.8, ..., 0.6 (rows 0-3); class 1: 0.95, 0.55 (rows 4-5)
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4], [0.05, 0.95],
                      [0.45, 0.55]])
    indices, labels = select_confident(probs, per_class=10, keep=0.75)
    # 3 of class 0's 4 rows, 1 of class 1's 2 (1.5 rounded down)
    assert indices.tolist() == [0, 1, 2, 4]
    assert labels.tolist() == [0, 0, 0, 1]
    indices, _ = select_confident(probs, per_class=10, keep=0.5)
    assert indices.tolist() == [0, 1, 4]


def test_select_confident_refuses_bad_arguments():
    with pytest.raises(TfhashError, match="`probs`"):
        select_confident(np.ones(5), 1)
    with pytest.raises(TfhashError, match="`per_class`"):
        select_confident(np.ones((5, 2)), 0)
    for keep in (0, 1.5, True, "all"):
        with pytest.raises(TfhashError, match=r"`keep` must be a number in \(0, 1\]"):
            select_confident(np.ones((5, 2)), 1, keep=keep)


def test_self_train_adds_confident_pseudo_labels_and_keeps_training():
    split = data.make_split(data.load_dataset("mnist-5k"), "cnnh", seed=0, val_fraction=0.0)
    small = data.Split("cnnh", 0, split.train.take(slice(0, 512)), split.val, split.query,
                       split.database)
    config = model.TrainConfig(pretrain_epochs=2, batch_size=64)
    teacher, _ = model.pretrain(config.make_backbone((28, 28, 1)), small, 10, config, verbose=0)
    pool = split.database.images[2000:2600]
    # the teacher's probabilities, batched as self_train predicts them; before it trains on
    before = teacher.predict(pool, batch_size=256, verbose=0)
    student, histories, rows, labels = self_train(teacher, small, pool, config, per_class=20,
                                                  epochs=1, verbose=0)
    assert len(histories) == 1 and len(histories[0].history["loss"]) == 1
    assert list(zip(rows.tolist(), labels.tolist())) == confident_by_sorting(before, 20)
    assert student.predict(pool[:4], verbose=0).shape == (4, 10)
    with pytest.raises(TfhashError, match="`unlabelled`"):
        self_train(student, small, pool[:, :20], config, per_class=5, epochs=1)
    with pytest.raises(TfhashError, match="`rounds`"):
        self_train(student, small, pool, config, per_class=5, epochs=1, rounds=0)


def test_an_ensemble_teaches_one_members_backbone_and_the_other_stays_as_it_was():
    split = data.make_split(data.load_dataset("mnist-5k"), "cnnh", seed=1, val_fraction=0.0)
    small = data.Split("cnnh", 1, split.train.take(slice(0, 256)), split.val, split.query,
                       split.database)
    config = model.TrainConfig(pretrain_epochs=1, batch_size=64, backbone_width=8)
    members = []
    for seed in (0, 1):
        keras.utils.set_random_seed(seed)
        members.append(model.pretrain(config.make_backbone((28, 28, 1)), small, 10, config,
                                      verbose=0)[0])
    ensemble = model.average_classifiers(members)
    pool = split.database.images[1000:1400]
    mean = (members[0].predict(pool, batch_size=256, verbose=0)
            + members[1].predict(pool, batch_size=256, verbose=0)) / 2
    other = [w.copy() for w in members[1].get_weights()]
    with pytest.raises(TfhashError, match="3 layers with its input.*got 4 layers.*`student`"):
        self_train(ensemble, small, pool, config, per_class=10, epochs=1)
    student_backbone = members[0].layers[1]
    student, _, rows, labels = self_train(ensemble, small, pool, config, per_class=10,
                                          epochs=1, student=student_backbone, verbose=0)
    # the first round's labels are the mean of the members' probabilities, ranked
    assert list(zip(rows.tolist(), labels.tolist())) == confident_by_sorting(mean, 10)
    assert student.layers[1] is student_backbone and student.output_shape == (None, 10)
    for before, after in zip(other, members[1].get_weights()):
        np.testing.assert_array_equal(before, after)


def test_a_student_backbone_is_checked():
    images = np.zeros((3, 8, 8, 1), np.uint8)
    small = data.Split("cnnh", 0, data.Images(images, np.arange(3)), None, None, None)
    config = model.TrainConfig(backbone="mnist_cnn", backbone_width=4)
    teacher = FixedClassifier(np.eye(3))
    with pytest.raises(TfhashError, match="`student` must be a backbone taking images of "
                                          r"shape \(8, 8, 1\), got 'backbone' taking \(\)"):
        self_train(teacher, small, images, config, per_class=1, epochs=1, student="backbone")
    other_shape = config.make_backbone((28, 28, 1))
    with pytest.raises(TfhashError, match=r"taking \(28, 28, 1\)"):
        self_train(teacher, small, images, config, per_class=1, epochs=1, student=other_shape)
    with pytest.raises(TfhashError, match="give one or the other"):
        self_train(teacher, small, images, config, per_class=1, epochs=1, fresh_student=True,
                   student=config.make_backbone((8, 8, 1)))


def test_a_given_student_trains_every_round_after_the_teacher_labels_the_first(monkeypatch):
    rng = np.random.default_rng(5)
    rounds = [rng.dirichlet(np.ones(3), size=20) for _ in range(3)]
    made = iter(FixedClassifier(p) for p in rounds[1:])
    fitted, labelled_by = [], []

    def fake_pretrain(backbone, split, num_classes, config, verbose="auto"):
        fitted.append(backbone)
        return next(made), "history"

    import tfhash.self_training as self_training

    real_labels = self_training.with_pseudo_labels

    def spying_labels(split, classifier, *args, **kwargs):
        labelled_by.append(classifier.probs)
        return real_labels(split, classifier, *args, **kwargs)

    monkeypatch.setattr(model, "pretrain", fake_pretrain)
    monkeypatch.setattr(self_training, "with_pseudo_labels", spying_labels)
    images = np.zeros((20, 8, 8, 1), np.uint8)
    small = data.Split("cnnh", 0, data.Images(images[:3], np.arange(3)), None, None, None)
    ensemble = FixedClassifier(rounds[0])
    ensemble.layers = [None, "member0", "member1", "average"]
    backbone = model.TrainConfig(backbone="mnist_cnn", backbone_width=4).make_backbone(
        (8, 8, 1))
    self_train(ensemble, small, images, model.TrainConfig(), per_class=2, epochs=1, rounds=2,
               student=backbone)
    assert fitted == [backbone, backbone]
    assert labelled_by[0] is rounds[0] and labelled_by[1] is rounds[1]


class FixedClassifier:
    """Stands in for a Keras classifier: predicts fixed probabilities."""

    def __init__(self, probs):
        self.probs, self.layers = probs, [None, "backbone", "classes"]
        self.output_shape = (None, probs.shape[1])

    def predict(self, images, **kwargs):
        return self.probs[: len(images)]


def test_each_round_labels_with_the_classifier_the_round_before_made(monkeypatch):
    rng = np.random.default_rng(0)
    rounds = [rng.dirichlet(np.ones(3), size=30) for _ in range(3)]
    made = iter(FixedClassifier(p) for p in rounds[1:])
    fits = []

    def fake_pretrain(backbone, split, num_classes, config, verbose="auto"):
        fits.append((backbone, len(split.train), config.pretrain_epochs, num_classes))
        return next(made), "history"

    monkeypatch.setattr(model, "pretrain", fake_pretrain)
    images = np.zeros((30, 4, 4, 1), np.uint8)
    small = data.Split("cnnh", 0, data.Images(images[:5], np.arange(5) % 3),
                       data.Images(images[:0], np.zeros(0, int)), None, None)
    config = model.TrainConfig()
    final, histories, rows, labels = self_train(FixedClassifier(rounds[0]), small, images,
                                                config, per_class=4, epochs=7, rounds=2)
    first = select_confident(rounds[0], 4)
    second = select_confident(rounds[1], 4)  # chosen by the classifier round 1 made
    assert fits == [("backbone", 5 + len(first[0]), 7, 3), ("backbone", 5 + len(second[0]), 7, 3)]
    np.testing.assert_array_equal(rows, second[0])
    np.testing.assert_array_equal(labels, second[1])
    assert final.probs is rounds[2] and histories == ["history", "history"]


def test_with_pseudo_labels_appends_the_surest_images_and_keeps_the_rest():
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(3), size=12)
    pool = rng.integers(0, 255, (12, 4, 4, 1), dtype=np.uint8)
    train = data.Images(pool[:2] + 1, np.array([2, 0]))
    query = data.Images(pool[:1], np.array([1]))
    split = data.Split("cnnh", 0, train, data.Images(pool[:0], np.zeros(0, int)), query, query)
    taught, rows, labels = with_pseudo_labels(split, FixedClassifier(probs), pool, per_class=2)
    expected = confident_by_sorting(probs, 2)
    assert list(zip(rows.tolist(), labels.tolist())) == expected
    np.testing.assert_array_equal(taught.train.images[:2], train.images)
    np.testing.assert_array_equal(taught.train.images[2:], pool[[i for i, _ in expected]])
    np.testing.assert_array_equal(taught.train.labels, [2, 0] + [c for _, c in expected])
    assert taught.query is split.query and taught.database is split.database
    assert split.train is train and len(train) == 2  # the input split is left as it was


def test_flip_averaged_pseudo_labels_rank_by_the_mean_of_image_and_mirror():
    rng = np.random.default_rng(5)
    pool = rng.integers(0, 255, (40, 4, 4, 1), dtype=np.uint8)
    inputs = keras.Input((4, 4, 1))
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(inputs))
    classifier = keras.Model(inputs, outputs)
    classifier.set_weights([rng.normal(size=(16, 3)) / 40, np.zeros(3)])
    mean = (classifier.predict(pool, verbose=0)
            + classifier.predict(pool[:, :, ::-1], verbose=0)) / 2  # numpy's mirror
    expected = confident_by_sorting(mean, 3)
    assert expected != confident_by_sorting(classifier.predict(pool, verbose=0), 3)
    split = data.Split("cnnh", 0, data.Images(pool[:0], np.zeros(0, int)), None, None, None)
    _, rows, labels = with_pseudo_labels(split, classifier, pool, per_class=3,
                                         flip_average=True, verbose=0)
    assert list(zip(rows.tolist(), labels.tolist())) == expected
    with pytest.raises(TfhashError, match="`flip_average`"):
        with_pseudo_labels(split, classifier, pool, per_class=3, flip_average="yes")


def test_self_train_labels_every_round_with_its_keep_and_flip_options(monkeypatch):
    import tfhash.self_training as self_training

    asked = []

    def fake_labels(split, classifier, unlabelled, per_class, keep, flip_average, verbose):
        asked.append((keep, flip_average))
        return split, np.arange(2), np.zeros(2, int)

    monkeypatch.setattr(self_training, "with_pseudo_labels", fake_labels)
    monkeypatch.setattr(model, "pretrain", lambda *a, **k: (FixedClassifier(np.eye(3)), "h"))
    images = np.zeros((3, 4, 4, 1), np.uint8)
    small = data.Split("cnnh", 0, data.Images(images, np.arange(3)), None, None, None)
    for keep, flip_average in ((1.0, True), (0.5, False)):
        self_train(FixedClassifier(np.eye(3)), small, images, model.TrainConfig(), per_class=1,
                   epochs=1, rounds=3, keep=keep, flip_average=flip_average)
    assert asked == [(1.0, True)] * 3 + [(0.5, False)] * 3


def test_a_fresh_student_is_a_new_backbone_each_round(monkeypatch):
    fitted = []

    def fake_pretrain(backbone, split, num_classes, config, verbose="auto"):
        fitted.append(backbone)
        return FixedClassifier(np.eye(3)), "history"

    monkeypatch.setattr(model, "pretrain", fake_pretrain)
    images = np.zeros((3, 8, 8, 1), np.uint8)
    small = data.Split("cnnh", 0, data.Images(images, np.arange(3)), None, None, None)
    config = model.TrainConfig(backbone="mnist_cnn", backbone_width=4)
    self_train(FixedClassifier(np.eye(3)), small, images, config, per_class=1, epochs=1,
               rounds=2, fresh_student=True)
    assert len(fitted) == 2 and fitted[0] is not fitted[1]
    assert all(isinstance(b, keras.Model) and b.input_shape[1:] == (8, 8, 1) for b in fitted)
    fitted.clear()
    self_train(FixedClassifier(np.eye(3)), small, images, config, per_class=1, epochs=1,
               rounds=2)
    assert fitted == ["backbone", "backbone"]  # without: the teacher's backbone trains on
    with pytest.raises(TfhashError, match="`fresh_student`"):
        self_train(FixedClassifier(np.eye(3)), small, images, config, per_class=1, epochs=1,
                   fresh_student="yes")


def test_unlabelled_rows_are_the_database_images_not_in_training():
    split = data.make_split(data.load_dataset("mnist-5k"), "cnnh", seed=3, val_fraction=0.0)
    rows = unlabelled_rows(split)
    train = split.train.images.reshape(len(split.train), -1)
    expected = [i for i, image in enumerate(split.database.images.reshape(
        len(split.database), -1)) if not (train == image).all(axis=1).any()]
    assert rows == expected
    assert len(rows) == len(split.database) - len(split.train)  # cnnh: training in database
