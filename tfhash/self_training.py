"""Self-training: the phase-1 classifier labels the unlabelled images it is surest of, and
phase 1 continues on the labelled and the pseudo-labelled images together.

This uses images outside the training set (e.g. the retrieval database, without its
labels), so results made with it belong in a row of their own, apart from a protocol's
supervised rows. The selection (`select_confident`, `unlabelled_rows`) is numpy alone, so
it serves classifiers trained under any Keras backend; `self_train` trains with
`tfhash.model` (TensorFlow).

Example:

>>> classifier, _ = model.pretrain(backbone, split, 10, config)
>>> unlabelled = split.database.images[~in_training_set]
>>> classifier, _, rows, labels = self_train(classifier, split, unlabelled, config,
...                                          per_class=2000, epochs=20, rounds=2)

An ensemble teaches one of its members' backbones (it labels the first round):

>>> ensemble = model.average_classifiers([classifier, other_classifier])
>>> student, *_ = self_train(ensemble, split, unlabelled, config, per_class=2000,
...                          epochs=20, student=classifier.layers[1])
"""

import dataclasses

import numpy as np

from tfhash.data import Images
from tfhash.errors import check, check_int, check_unit_interval


def unlabelled_rows(split):
    """Indices of the database images that are not training images: what self-training may
    label (cnnh's database holds the training set; no image is compared with a label).

    >>> unlabelled = split.database.take(unlabelled_rows(split))
    """
    seen = {image.tobytes() for image in split.train.images}
    return [i for i, image in enumerate(split.database.images) if image.tobytes() not in seen]


def select_confident(probs, per_class, keep=1.0):
    """The ``per_class`` most confident rows of each predicted class.

    Args:
        probs: ``(n, classes)`` class probabilities.
        per_class: how many rows to keep per predicted class at most (a class predicted
            for fewer rows keeps them all).
        keep: the fraction of each predicted class's rows to keep at most, its most
            confident (rounded down), before the ``per_class`` cap: ``keep=0.98`` leaves the
            least confident 2% of every class unlabelled, where a teacher's mistakes gather.

    Returns:
        ``(indices, labels)``: sorted row indices and their predicted classes.

    >>> select_confident(np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]]), per_class=1)
    (array([0, 2]), array([0, 1]))
    """
    probs = np.asarray(probs)
    check(probs.ndim == 2 and len(probs), f"`probs` must be (n, classes), got {probs.shape}")
    per_class = check_int(per_class, "per_class", 1)
    check_unit_interval(keep, "keep")
    predicted = probs.argmax(axis=1)
    confidence = probs.max(axis=1)
    kept = []
    for c in range(probs.shape[1]):
        members = np.flatnonzero(predicted == c)
        count = min(per_class, int(keep * len(members)))
        kept.append(members[np.argsort(-confidence[members], kind="stable")[:count]])
    indices = np.sort(np.concatenate(kept))
    return indices, predicted[indices]


def self_train(classifier, split, unlabelled, config, per_class, epochs, rounds=1,
               keep=1.0, flip_average=False, fresh_student=False, student=None,
               verbose="auto"):
    """Continues phase 1 on ``split.train`` plus pseudo-labelled ``unlabelled`` images.

    Each round, the classifier labels ``unlabelled`` (uint8 images of the training images'
    shape); the ``per_class`` most confident images of each predicted class (and at most
    the ``keep`` fraction of its images, see `select_confident`) join the training images,
    and `tfhash.model.pretrain` runs ``epochs`` more epochs (a fresh learning-rate schedule
    and classifier layer on the same, already trained, backbone: the backbone trains on in
    place, so ``classifier`` changes too). The next round's labels
    come from the classifier this round made. With ``flip_average`` each round labels with
    the classifier's probabilities averaged over the image and its mirror (see
    `with_pseudo_labels`). With ``fresh_student`` each round's student is instead a new
    backbone (``config.make_backbone``, freshly initialized) trained from scratch on the
    same images, as in Noisy Student training: it does not start from the weights that
    made the wrong pseudo-labels, and the teacher is left as it was.

    ``student`` is the backbone that trains on, for a ``classifier`` that is not one
    backbone and a softmax layer: an ensemble's (`tfhash.networks.average_classifiers`)
    labels the first round, and the student, e.g. one member's backbone, trains on those
    labels and labels every later round itself (the ensemble distilled into one network).
    By default it is the classifier's own backbone.

    Returns:
        ``(classifier, histories, indices, labels)``: the last classifier, one history per
        round, and the rows of ``unlabelled`` the last round pseudo-labelled, with their
        labels.
    """
    unlabelled = np.asarray(unlabelled)
    check(unlabelled.ndim == 4 and unlabelled.shape[1:] == split.train.images.shape[1:],
          f"`unlabelled` must be images of shape (n, {split.train.images.shape[1:]}), "
          f"got {unlabelled.shape}")
    epochs = check_int(epochs, "epochs", 1)
    rounds = check_int(rounds, "rounds", 1)
    check(isinstance(fresh_student, bool),
          f"`fresh_student` must be True or False, got {fresh_student!r}")
    check(not (fresh_student and student is not None),
          "`student` is the backbone that trains on; with `fresh_student` each round's is "
          "new: give one or the other")
    if student is None:
        check(fresh_student or len(classifier.layers) == 3,
              f"`classifier` must be one backbone and a softmax layer (3 layers with its "
              f"input) to train on, got {len(classifier.layers)} layers (an ensemble?): pass "
              "the backbone to train as `student`")
    else:
        shape = tuple(getattr(student, "input_shape", (None,))[1:])
        check(shape == unlabelled.shape[1:],
              f"`student` must be a backbone taking images of shape {unlabelled.shape[1:]}, "
              f"got {student!r} taking {shape}")
    from tfhash import model  # TensorFlow: imported on use (the module's selection is numpy)

    backbone = classifier.layers[1] if student is None else student
    round_config = dataclasses.replace(config, pretrain_epochs=epochs)
    histories = []
    for _ in range(rounds):
        taught, indices, labels = with_pseudo_labels(split, classifier, unlabelled, per_class,
                                                     keep=keep, flip_average=flip_average,
                                                     verbose=verbose)
        if fresh_student:
            backbone = config.make_backbone(unlabelled.shape[1:])
        classifier, history = model.pretrain(backbone, taught, classifier.output_shape[-1],
                                             round_config, verbose=verbose)
        histories.append(history)
    return classifier, histories, indices, labels


def with_pseudo_labels(split, classifier, unlabelled, per_class, keep=1.0,
                       flip_average=False, verbose="auto"):
    """``split`` whose training part also holds the unlabelled images the classifier is
    surest of, ``per_class`` (and at most the ``keep`` fraction) per predicted class,
    labelled with its predictions.

    `self_train` uses it for phase 1; passing the result to `tfhash.model.train_hashers`
    lets phase 2 learn codes on the pseudo-labelled images too. ``flip_average`` predicts
    with `tfhash.model.flip_averaged` (the mean of the probabilities of each image and its
    left-right mirror): test-time augmentation for the labels, for classifiers trained with
    flips on mirror-symmetric content (natural images, not digits).

    Returns:
        ``(split, indices, labels)``: the new split (other parts unchanged), and the rows of
        ``unlabelled`` it added with their labels.

    Example:

    >>> taught, rows, labels = with_pseudo_labels(split, classifier, unlabelled, 2000)
    >>> hashers, _ = model.train_hashers(backbone, taught, (12, 48), config)
    """
    check(isinstance(flip_average, bool), f"`flip_average` must be True or False, "
          f"got {flip_average!r}")
    if flip_average:
        from tfhash.model import flip_averaged  # TensorFlow, imported on use

        classifier = flip_averaged(classifier)
    probs = classifier.predict(unlabelled, batch_size=256, verbose=verbose)
    indices, labels = select_confident(probs, per_class, keep=keep)
    train = Images(np.concatenate([split.train.images, unlabelled[indices]]),
                   np.concatenate([split.train.labels, labels.astype(split.train.labels.dtype)]))
    return dataclasses.replace(split, train=train), indices, labels
