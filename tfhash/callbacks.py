"""Keras callbacks for hash learning."""

import keras
import numpy as np
import tensorflow as tf

from tfhash.codes import binarize
from tfhash.errors import check_number
from tfhash.metrics import mean_average_precision


class RetrievalMAP(keras.callbacks.Callback):
    """Reports Hamming-ranking mAP on a validation split as ``logs["val_map"]`` each epoch.

    The validation images query a database (by default the validation images themselves,
    each query excluded from nothing: a query finds itself at distance 0, as any database
    hit would). Use images carved from the training data, never the test queries.

    Args:
        query: ``(images, labels)`` of the validation queries.
        database: ``(images, labels)`` searched; defaults to ``query``.
        output: for a multi-output model, the index of the codes output.
        every: compute every ``every`` epochs (and always on the last one).
        batch_size: encoding batch size.

    Example:

    >>> hasher.fit(train_ds, epochs=10,
    ...            callbacks=[RetrievalMAP((x_val, y_val), (x_train, y_train))])
    """

    def __init__(self, query, database=None, output=None, every=1, batch_size=256):
        super().__init__()
        self.query = query
        self.database = database
        self.output = output
        self.every = int(every)
        self.batch_size = int(batch_size)

    def _codes(self, images):
        out = self.model.predict(images, batch_size=self.batch_size, verbose=0)
        if self.output is not None:
            out = out[self.output]
        return binarize(out)

    def compute(self):
        q_images, q_labels = self.query
        q_codes = self._codes(q_images)
        if self.database is None:
            db_codes, db_labels = q_codes, q_labels
        else:
            db_codes, db_labels = self._codes(self.database[0]), self.database[1]
        return mean_average_precision(q_codes, np.asarray(q_labels), db_codes,
                                      np.asarray(db_labels))

    def on_epoch_end(self, epoch, logs=None):
        last = self.params.get("epochs", epoch + 1) == epoch + 1
        if logs is not None and ((epoch + 1) % self.every == 0 or last):
            logs["val_map"] = self.compute()


class WeightAveraging(keras.callbacks.Callback):
    """Keeps a moving average of a model's weights during `fit` and ends with it.

    After each training batch every floating-point weight, batch-norm statistics included,
    moves into its average: ``average = m * average + (1 - m) * weight``, where at step
    ``t`` (from 0) ``m = min(momentum, (1 + t) / (10 + t))``. The momentum warms up, so
    the first weights fade out even from a short training. When training ends the model's
    weights are set to the averages. Each `fit` starts a new average (a run resumed by
    `keras.callbacks.BackupAndRestore` averages from where it resumed).

    Args:
        momentum: the momentum the average settles at, in (0, 1); its window is about
            ``1 / (1 - momentum)`` steps.

    Example:

    >>> classifier.fit(train_ds, epochs=100, callbacks=[WeightAveraging(0.999)])
    """

    def __init__(self, momentum=0.999):
        super().__init__()
        self.momentum = check_number(momentum, "momentum", 0, 1, low_open=True, high_open=True)

    def on_train_begin(self, logs=None):
        self._weights = [w for w in self.model.weights if "float" in str(w.dtype)]
        self._averages = [tf.Variable(w.value, trainable=False) for w in self._weights]
        self._step = tf.Variable(0.0, trainable=False)
        self._update = tf.function(self._update_averages)  # traced anew for each fit

    def _update_averages(self):
        step = self._step
        momentum = tf.minimum(self.momentum, (1.0 + step) / (10.0 + step))
        for average, weight in zip(self._averages, self._weights):
            average.assign(momentum * average + (1.0 - momentum) * tf.cast(weight.value,
                                                                          average.dtype))
        step.assign_add(1.0)

    def on_train_batch_end(self, batch, logs=None):
        self._update()

    def on_train_end(self, logs=None):
        for average, weight in zip(self._averages, self._weights):
            weight.assign(average)
