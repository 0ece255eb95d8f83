"""Native bfloat16 detection and the precision "auto" resolves to."""

import subprocess
import sys
import warnings

import pytest
import tensorflow as tf

from tfhash import hardware
from tfhash.errors import TfhashError
from tfhash.model import TrainConfig

# flags lines as /proc/cpuinfo prints them (shortened): an AVX2-only AMD EPYC (the CI
# machine of this writing), a Sapphire Rapids Xeon, and two Arm cores
AVX2_ONLY = ("processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 ssse3 fma avx "
             "avx2 f16c\nbugs\t\t: sysret_ss_attrs avx512_bf16\n")
SAPPHIRE_RAPIDS = "flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
AMX_ONLY = "flags\t\t: avx2 amx_bf16 amx_tile\n"
NEOVERSE_V1 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes sve bf16 i8mm\n"
CORTEX_A72 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32\n"


@pytest.fixture
def fresh_detection():
    hardware.native_bfloat16.cache_clear()
    yield
    hardware.native_bfloat16.cache_clear()


@pytest.mark.parametrize("cpuinfo, expected", [
    (AVX2_ONLY, False),  # avx512_bf16 in another field is not a CPU flag
    (SAPPHIRE_RAPIDS, True),
    (AMX_ONLY, True),
    (NEOVERSE_V1, True),
    (CORTEX_A72, False),
    ("", False),
])
def test_cpu_bfloat16_is_read_from_the_flags_and_features_lines(cpuinfo, expected):
    assert hardware.cpu_has_bfloat16(cpuinfo) is expected


def test_cpuinfo_must_be_text():
    with pytest.raises(TfhashError, match="`cpuinfo` must be a str"):
        hardware.cpu_has_bfloat16(b"flags : avx512_bf16")


@pytest.mark.parametrize("capabilities, expected", [
    ([(8, 0)], True), ([(9, 0), (8, 6)], True), ([(7, 5)], False), ([(8, 0), (7, 0)], False),
])
def test_gpus_decide_by_compute_capability(capabilities, expected, fresh_detection,
                                           monkeypatch, tmp_path):
    gpus = [f"GPU:{i}" for i in range(len(capabilities))]
    monkeypatch.setattr(tf.config, "list_physical_devices",
                        lambda kind=None: gpus if kind == "GPU" else [])
    monkeypatch.setattr(tf.config.experimental, "get_device_details",
                        lambda gpu: {"compute_capability": capabilities[gpus.index(gpu)]})
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(SAPPHIRE_RAPIDS if not expected else AVX2_ONLY)  # the GPUs decide
    monkeypatch.setattr(hardware, "CPUINFO", cpuinfo)
    assert hardware.native_bfloat16() is expected


@pytest.mark.parametrize("cpuinfo, expected", [(SAPPHIRE_RAPIDS, True), (AVX2_ONLY, False),
                                               (None, False)])
def test_without_gpus_the_cpu_decides(cpuinfo, expected, fresh_detection, monkeypatch,
                                      tmp_path):
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])
    path = tmp_path / "cpuinfo"
    if cpuinfo is not None:  # None: unreadable, as on a system without /proc
        path.write_text(cpuinfo)
    monkeypatch.setattr(hardware, "CPUINFO", path)
    assert hardware.native_bfloat16() is expected


@pytest.mark.parametrize("native, resolved", [(True, "mixed_bfloat16"), (False, "float32")])
def test_auto_becomes_bfloat16_only_where_it_is_native(native, resolved, monkeypatch):
    monkeypatch.setattr(hardware, "native_bfloat16", lambda: native)
    assert hardware.resolve_precision("auto") == resolved
    assert TrainConfig(precision="auto").precision == resolved
    for explicit in ("float32", "mixed_bfloat16"):
        assert hardware.resolve_precision(explicit) == explicit


def test_an_unknown_precision_is_refused_naming_the_choices():
    with pytest.raises(TfhashError, match=r"`precision` must be one of \('auto', 'float32'"):
        TrainConfig(precision="float16")


@pytest.mark.parametrize("native", [True, False])
def test_asking_for_emulated_bfloat16_warns(native, monkeypatch):
    monkeypatch.setattr(hardware, "native_bfloat16", lambda: native)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = TrainConfig(precision="mixed_bfloat16")
        TrainConfig(precision="float32")
    assert config.precision == "mixed_bfloat16"  # asked for, so kept, slow or not
    emulated = [w for w in caught if "no native bfloat16" in str(w.message)]
    assert len(emulated) == (0 if native else 1)
    assert all(w.filename == __file__ for w in emulated)  # points at the caller's line


def test_use_threads_sets_both_pools_in_a_fresh_process():
    probe = ("from tfhash.hardware import use_threads; use_threads(1); import tensorflow as tf; "
             "tf.constant(1) + 1; print(tf.config.threading.get_intra_op_parallelism_threads(), "
             "tf.config.threading.get_inter_op_parallelism_threads())")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "1"]


def test_use_threads_is_checked_and_refused_once_tensorflow_has_run():
    for bad in (0, 1.0, True, "2"):
        with pytest.raises(TfhashError, match="`threads` must be an integer >= 1"):
            hardware.use_threads(bad)
    tf.constant(1) + 1  # TensorFlow has run an operation in this process now
    with pytest.raises(TfhashError, match="already run an operation.*before building any"):
        hardware.use_threads(1)
