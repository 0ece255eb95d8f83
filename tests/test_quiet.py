import os
import subprocess
import sys
import textwrap

import pytest

from tfhash.quiet import keep_log_line

NOTICE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
INFO = "I0000 00:00:1796452601.154321   17157 port.cc:153] oneDNN custom operations are on."
WARN = "W1205 06:35:29.000001    4242 env.cc:7] a native warning"
ERROR = "E0000 00:00:1796452601.154321   17157 x.cc:1] a native error"
PYTHON = "UserWarning: a Python warning, not the native logger's"


@pytest.mark.parametrize("level, kept", [
    (0, [NOTICE, INFO, WARN, ERROR, PYTHON]),
    (1, [WARN, ERROR, PYTHON]),
    (2, [ERROR, PYTHON]),
    (3, [PYTHON]),
])
def test_native_lines_below_the_level_are_dropped(level, kept):
    lines = [NOTICE, INFO, WARN, ERROR, PYTHON]
    assert [line for line in lines if keep_log_line(line, level)] == kept


def import_fake_tensorflow(tmp_path, level, body):
    """Runs `import_tensorflow` in a fresh process whose `tensorflow` is `body`."""
    (tmp_path / "tensorflow.py").write_text(textwrap.dedent(body))
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "TF_CPP_MIN_LOG_LEVEL": str(level)}
    script = ("from tfhash.quiet import import_tensorflow\n"
              "print(import_tensorflow().__file__)\n")
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=60)


FAKE = f"""
    import os, sys
    for line in {[NOTICE, INFO, WARN, ERROR]!r}:
        os.write(2, (line + "\\n").encode())  # as the native libraries write: to the descriptor
    sys.stderr.write({PYTHON!r} + "\\n")
"""


@pytest.mark.parametrize("level, kept", [(2, [ERROR, PYTHON]),
                                         (0, [NOTICE, INFO, WARN, ERROR, PYTHON])])
def test_import_filters_what_the_libraries_write_to_stderr(tmp_path, level, kept):
    proc = import_fake_tensorflow(tmp_path, level, FAKE)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(tmp_path / "tensorflow.py")
    assert proc.stderr.splitlines() == kept


def test_a_failed_import_still_shows_its_kept_lines_and_error(tmp_path):
    proc = import_fake_tensorflow(tmp_path, 2, FAKE + "    raise ImportError('no libcuda')\n")
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert lines[:2] == [ERROR, PYTHON] and INFO not in proc.stderr
    assert lines[-1] == "ImportError: no libcuda"


def test_tensorflow_loads_quietly_and_stderr_works_after():
    script = ("import os, sys\nfrom tfhash.quiet import import_tensorflow\n"
              "import_tensorflow()\nprint('python', file=sys.stderr)\nos.write(2, b'native\\n')")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, timeout=300)
    assert proc.returncode == 0
    assert proc.stderr.splitlines() == ["python", "native"]


RETRACING = """
import sys
import keras
import numpy as np
import tensorflow as tf
from tfhash.quiet import drop_retracing_warnings
if sys.argv[1] == "drop":
    drop_retracing_warnings()
    drop_retracing_warnings()
x = np.zeros((2, 4), "float32")
for _ in range(8):  # a new model each time: each predict traces its own function
    inputs = keras.Input((4,))
    keras.Model(inputs, keras.layers.Dense(2)(inputs)).predict(x, verbose=0)
tf.get_logger().warning("another warning")
"""


@pytest.mark.parametrize("mode", ["keep", "drop"])
def test_retracing_warnings_are_dropped_and_nothing_else(mode):
    proc = subprocess.run([sys.executable, "-c", RETRACING, mode], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert ("triggered tf.function retracing" in proc.stderr) == (mode == "keep"), proc.stderr
    assert "another warning" in proc.stderr
