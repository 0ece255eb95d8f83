"""Whether this machine computes bfloat16 natively, and the training precision that follows.

Mixed bfloat16 precision pays where the hardware multiplies bfloat16 itself: GPUs of
compute capability 8.0 and newer, x86 CPUs with AVX512-BF16 or AMX, Arm CPUs with the BF16
extension. Elsewhere TensorFlow emulates it: on an AVX2-only CPU here the CIFAR-10 recipe's
backbone trained 5.9 to 6.9 times slower in mixed bfloat16 than in float32, phase 1 and
phase 2 alike (`benchmarks/results/speed-avx2.json`), where a CPU with AVX512-BF16 had
trained the default-width backbone 1.3 times faster (`speed.json`).
`resolve_precision("auto")` picks accordingly.

Example:

>>> resolve_precision("float32")
'float32'
>>> cpu_has_bfloat16("flags : fpu sse2 avx2 avx512f avx512_bf16 amx_tile")
True
"""

import functools
from pathlib import Path

from tfhash.errors import TfhashError, check, check_int

PRECISIONS = ("auto", "float32", "mixed_bfloat16")
X86_BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = Path("/proc/cpuinfo")


def cpu_has_bfloat16(cpuinfo):
    """Whether a ``/proc/cpuinfo`` text lists a bfloat16 instruction set: ``avx512_bf16``
    or ``amx_bf16`` among an x86 CPU's ``flags``, ``bf16`` among an Arm CPU's ``Features``.
    """
    check(isinstance(cpuinfo, str), f"`cpuinfo` must be a str, got {type(cpuinfo).__name__}")
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        words = set(value.split())
        if key.strip() == "flags" and words & set(X86_BFLOAT16_FLAGS):
            return True
        if key.strip() == "Features" and "bf16" in words:
            return True
    return False


@functools.cache
def native_bfloat16():
    """Whether training here would run bfloat16 natively: on the GPUs TensorFlow sees, if
    any (all of compute capability 8.0 or newer), else on the CPU (Linux's
    ``/proc/cpuinfo``; ``False`` where it cannot be read)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return all(tf.config.experimental.get_device_details(gpu).get("compute_capability",
                                                                       (0, 0)) >= (8, 0)
                   for gpu in gpus)
    try:
        return cpu_has_bfloat16(CPUINFO.read_text())
    except OSError:
        return False


def resolve_precision(precision):
    """The Keras dtype policy name ``precision`` stands for: ``"auto"`` is
    ``"mixed_bfloat16"`` where `native_bfloat16` holds and ``"float32"`` elsewhere; the
    others stand for themselves."""
    check(precision in PRECISIONS,
          f"`precision` must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    return "mixed_bfloat16" if native_bfloat16() else "float32"


def use_threads(threads):
    """Gives TensorFlow's intra- and inter-op thread pools ``threads`` threads each.

    Call it before TensorFlow runs anything: its pools are fixed at the first operation. On
    a small CPU several trainings side by side, one thread each, can train more epochs an
    hour than one training on every core: on a 2-core AMD EPYC two one-thread phase-1
    trainings of the CIFAR-10 width-24 recipe trained 1.22 times the epochs of one
    (`benchmarks/results/side_by_side.json`). CLI: ``tfhash --threads N <command>``.

    Example:

    >>> use_threads(1)  # first thing in each of two training scripts run at once
    """
    threads = check_int(threads, "threads", low=1)
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        raise TfhashError("use_threads: TensorFlow has already run an operation, so its "
                          "thread pools are fixed; call it before building any model") from None
