"""`tf.distribute` strategies by name, and where each worker may write.

``default`` is one device; ``mirrored`` is all devices of one machine; ``multiworker``
reads the cluster from ``TF_CONFIG`` (one process per worker, same command everywhere).

Known limit: Keras 3's ``Model.fit`` fails under ``MultiWorkerMirroredStrategy``
(keras-team/keras#20585: the first batch and the step logs are reduced across workers in
ways the collective ops reject), so ``multiworker`` runs stop with that upstream error until
Keras fixes it; ``mirrored`` (several GPUs or CPU devices of one machine) works.
In a multi-worker run only the chief writes final artifacts; the other workers write to
a private temporary folder beside them, as TensorFlow requires for checkpoints.

Example:

>>> strategy = get_strategy("mirrored")
>>> result = fit_two_phase(split, config, strategy=strategy)
"""

from pathlib import Path

import tensorflow as tf

from tfhash.errors import check

STRATEGIES = ("default", "mirrored", "multiworker")


def get_strategy(name="default"):
    """The strategy called ``name`` (see the module docstring)."""
    check(name in STRATEGIES, f"`strategy` must be one of {STRATEGIES}, got {name!r}")
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief(strategy=None):
    """Whether this process writes final artifacts (always, outside multi-worker runs)."""
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or resolver.task_type is None:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def writable_dir(path, strategy=None):
    """``path`` for the chief; a per-worker temporary folder inside it for the others."""
    path = Path(path)
    if is_chief(strategy):
        return path
    resolver = strategy.cluster_resolver
    return path / f".worker-{resolver.task_type}-{resolver.task_id}"

