"""Keeping TensorFlow's log noise out of the command line's output.

TensorFlow's C++ libraries log a few lines when they load (oneDNN, CPU features), and
they do so before their logger has read ``TF_CPP_MIN_LOG_LEVEL``, so that variable cannot
silence them (abseil/abseil-cpp#1718); `import_tensorflow` holds them to it, so that an
error the command line reports is the one line it prints. `drop_retracing_warnings` drops
TensorFlow's warning that ``predict`` traced a new function, which every new encoder (one
per code length, a query encoder beside each) triggers by design.

Example:

>>> from tfhash.quiet import keep_log_line
>>> keep_log_line("I0000 00:00:1.5 123 port.cc:153] oneDNN custom operations are on.", 2)
False
>>> keep_log_line("E0000 00:00:1.5 123 cuda.cc:12] no device", 2)
True
>>> keep_log_line("DeprecationWarning: this is Python's, not the native logger's", 3)
True
"""

import logging
import os
import re
import sys
import tempfile

# abseil's line prefix: severity letter, month and day, then the time
_NATIVE_LOG_LINE = re.compile(r"^([IWEF])\d{4} \d{2}:\d{2}:\S+\s+\d+ \S+:\d+\] ")
_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}
_UNINITIALIZED_NOTICE = "WARNING: All log messages before absl::InitializeLog() is called"


def log_level():
    """The minimum native log level asked for: ``TF_CPP_MIN_LOG_LEVEL``, 0 if unset."""
    value = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0").strip() or "0"
    return int(value) if value.isdigit() else 0


def keep_log_line(line, level):
    """Whether a line written to stderr passes the minimum native log level `level`.

    Native log lines below `level` (0 info, 1 warning, 2 error, 3 fatal) and abseil's
    notice that it is not initialized are dropped; every other line (Python warnings,
    tracebacks, anything else) is kept.

    Args:
        line: one line of stderr.
        level: int, as ``TF_CPP_MIN_LOG_LEVEL``.
    """
    if level < 1:
        return True
    if line.startswith(_UNINITIALIZED_NOTICE):
        return False
    native = _NATIVE_LOG_LINE.match(line)
    return native is None or _SEVERITY[native.group(1)] >= level


def import_tensorflow():
    """Imports TensorFlow with its load-time native log lines held to `log_level()`.

    The process's stderr (file descriptor 2) goes to a temporary file while TensorFlow
    loads; the lines that pass `keep_log_line` are written back to stderr afterwards, also
    when the import fails. Does nothing more than ``import tensorflow`` when TensorFlow is
    already loaded or ``TF_CPP_MIN_LOG_LEVEL`` is 0.

    Returns:
        The ``tensorflow`` module.
    """
    level = log_level()
    if "tensorflow" in sys.modules or level < 1:
        import tensorflow

        return tensorflow
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", errors="replace")
            sys.stderr.write("".join(line for line in text.splitlines(keepends=True)
                                     if keep_log_line(line, level)))
    return tensorflow


class _RetracingFilter(logging.Filter):
    def filter(self, record):
        return "triggered tf.function retracing" not in record.getMessage()


def drop_retracing_warnings():
    """Drops TensorFlow's "triggered tf.function retracing" warnings from its Python logger.

    Each Keras model traces its own ``predict`` function, so encoding with several models
    (the code lengths' encoders, the query encoders, the view-averaged ones) is retracing
    by design, not the bug the warning looks for. Every other log record passes. Idempotent.
    """
    logger = logging.getLogger("tensorflow")
    if not any(isinstance(f, _RetracingFilter) for f in logger.filters):
        logger.addFilter(_RetracingFilter())
