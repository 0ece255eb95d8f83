"""The README's Python API example runs as written."""

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"


def python_blocks(text):
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_the_python_api_example_trains_and_prints_a_map():
    (example,) = python_blocks(README.read_text())
    printed = io.StringIO()
    namespace = {}
    with contextlib.redirect_stdout(printed):
        exec(compile(example, str(README), "exec"), namespace)
    value = float(printed.getvalue().strip().splitlines()[-1])
    assert 0.3 < value <= 1.0  # 32-bit codes after five epochs (0.73 seen); random: about 0.1
    bits = namespace["q"].shape[1]
    assert namespace["packed"].shape == (len(namespace["db"]), bits // 8)
