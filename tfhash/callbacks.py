"""Keras callbacks for hash learning."""

import keras
import numpy as np

from tfhash.codes import binarize
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
