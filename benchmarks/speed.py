"""Training and encoding throughput, side by side in one run on the same data.

Measures images/s (median of timed epochs after a warm-up epoch) of:
  * ``keras_naive``: the plain Keras classifier of the backbone, `fit` on float numpy arrays,
    default compile settings (the baseline every ratio is taken against);
  * ``tfhash_phase1``: tfhash's phase-1 classifier (tf.data, uint8 until the batch), also
    with XLA (``_xla``), in bfloat16 mixed precision (``_bf16``) and with the patch-whitening
    stem (``_whitening``, `tfhash.whitening`) in place of the first convolution;
    and at batch sizes 64 and 256 (``_b64``, ``_b256``, ``_bf16_b256``);
  * ``tfhash_phase2_<method>``: phase 2 with each loss (exponentiated and peers), and the
    exponentiated loss in bfloat16 (``_bf16``, step time against phase-1 bf16), and each
    loss alone (``loss_only_<method>``: forward + gradient on a batch of codes, as a fraction
    of a phase-1 step, a bound on what the loss adds that the noise of whole-step timings hides);
  * encoding: Keras predict, the exported SavedModel, ONNX Runtime;
and the machine's float32 matmul GFLOP/s, to state each model's achieved fraction of it.

    python benchmarks/speed.py [--backbone cifar_resnet] [--width 16] [--steps 20] [--epochs 3]
"""

import argparse
import os
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from tfhash import model
from tfhash.backbones import BACKBONES
from tfhash.pipeline import make_dataset
from tfhash.whitening import PatchWhitening, adapt_whitening

from common import write_results


def matmul_gflops(n=2048, repeats=10, dtype="float32"):
    a = tf.cast(tf.random.normal((n, n)), dtype)
    b = tf.cast(tf.random.normal((n, n)), dtype)
    fn = tf.function(lambda: tf.matmul(a, b))
    fn().numpy()
    start = time.perf_counter()
    for _ in range(repeats):
        fn().numpy()
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def forward_flops(net):
    """Multiply-adds x 2 of the conv and dense layers for one image (nested models too)."""
    total = 0
    for layer in net.layers:
        if isinstance(layer, keras.Model):
            total += forward_flops(layer)
        elif isinstance(layer, keras.layers.Conv2D):
            h, w, c_out = layer.output.shape[1:]
            k = np.prod(layer.kernel_size)
            total += 2 * h * w * c_out * k * layer.input.shape[-1]
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * layer.input.shape[-1] * layer.units
        elif isinstance(layer, PatchWhitening):
            total += 2 * np.prod(layer.output.shape[1:]) * np.prod(layer.kernel.shape[:3])
    return int(total)


class EpochTimer(keras.callbacks.Callback):
    """Collects the wall seconds of every epoch of a fit in ``seconds``."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)


def timed_fit(net, data, steps, epochs):
    """Median seconds per epoch of ``steps`` batches, after one warm-up epoch."""
    timer = EpochTimer()
    kwargs = {"steps_per_epoch": steps} if isinstance(data, tf.data.Dataset) else {}
    if isinstance(data, tuple):
        x, y = data
        net.fit(x, y, batch_size=BATCH, epochs=epochs + 1, verbose=0, callbacks=[timer])
    else:
        net.fit(data.repeat(), shuffle=False, epochs=epochs + 1, verbose=0, callbacks=[timer],
                **kwargs)
    return float(np.median(timer.seconds[1:]))


BATCH = 128


def loss_step_ms(loss, bits=48, repeats=200):
    """Milliseconds of one forward + gradient of ``loss`` on a (BATCH, bits) batch of codes."""
    codes = tf.Variable(tf.tanh(tf.random.normal((BATCH, bits))))
    labels = tf.random.uniform((BATCH,), 0, 10, dtype=tf.int32)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            value = loss(labels, codes)
        return tape.gradient(value, codes)

    step()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / repeats * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="cifar_resnet")
    parser.add_argument("--width", type=int, default=None,
                        help="the backbone's base width (default: its own; 16 in the CIFAR-10 "
                             "recipes)")
    parser.add_argument("--steps", type=int, default=20, help="batches per timed epoch")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs (after warm-up)")
    parser.add_argument("--methods", nargs="+", default=["exponentiated", "dpsh", "dsh",
                                                         "orthohash"])
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    from tfhash import data

    cifar = data.load_dataset("cifar10")
    n = BATCH * args.steps
    images, labels = cifar.train.images[:n], cifar.train.labels[:n]
    shape = images.shape[1:]
    peak = matmul_gflops()
    peak_bf16 = matmul_gflops(dtype="bfloat16")
    print(f"matmul {peak:.1f} GFLOP/s (bfloat16: {peak_bf16:.1f}) on {os.cpu_count()} cpus")
    rows = []
    width = {} if args.width is None else {"width": args.width}

    def record(name, seconds, flops_per_image, train=True, **extra):
        ips = n / seconds
        achieved = ips * flops_per_image * (3 if train else 1) / 1e9
        row = {"benchmark_case": name, "backbone": args.backbone, "width": args.width,
               "batch_size": BATCH,
               **extra, "images_per_s": round(ips, 1), "gflops_per_s": round(achieved, 2),
               "fraction_of_matmul_peak": round(achieved / peak, 4)}
        rows.append(row)
        print(row, flush=True)
        return ips

    # (a) the naive Keras baseline: float arrays, default compile
    keras.utils.set_random_seed(0)
    naive = model.build_classifier(model.get_backbone(args.backbone, shape, **width), 10)
    naive.compile(optimizer="adam", loss="sparse_categorical_crossentropy", jit_compile=False)
    flops = forward_flops(naive)
    base = record("keras_naive", timed_fit(naive, (images.astype("float32"), labels), args.steps,
                                           args.epochs), flops)

    def one_hot(x, y):
        return x, tf.one_hot(y, 10)

    phase1 = {}
    for variant, jit, policy, batch, stem in (
        ("", False, "float32", BATCH, "conv"), ("_xla", True, "float32", BATCH, "conv"),
        ("_bf16", False, "mixed_bfloat16", BATCH, "conv"), ("_b64", False, "float32", 64, "conv"),
        ("_b256", False, "float32", 256, "conv"),
        ("_bf16_b256", False, "mixed_bfloat16", 256, "conv"),
        ("_whitening", False, "float32", BATCH, "whitening"),
    ):
        if stem != "conv" and args.backbone not in BACKBONES:
            continue  # only the built-in backbones have a choice of stem
        keras.utils.set_random_seed(0)
        with model.precision_policy(policy):
            net = model.get_backbone(args.backbone, shape, **width,
                                     **({} if stem == "conv" else {"stem": stem}))
            clf = model.build_classifier(net, 10)
        adapt_whitening(net, images)
        clf.compile(optimizer="adam", loss="categorical_crossentropy", jit_compile=jit)
        train = make_dataset(images, labels, batch, training=True, augment="crop_flip")
        ips = record(f"tfhash_phase1{variant}",
                     timed_fit(clf, train.map(one_hot), n // batch, args.epochs),
                     flops if stem == "conv" else forward_flops(clf),
                     batch_size=batch, precision=policy, stem=stem)
        rows[-1]["speedup_vs_naive"] = round(ips / base, 3)
        if not jit and stem == "conv":  # phase 2's step-time reference at this precision, batch
            phase1[policy, batch] = ips
    train = make_dataset(images, labels, BATCH, training=True, augment="crop_flip")
    runs = [(method, "float32") for method in args.methods] + [("exponentiated",
                                                                "mixed_bfloat16")]
    for method, policy in runs:
        keras.utils.set_random_seed(0)
        config = model.TrainConfig(bits=(48,), method=method, precision=policy,
                                   backbone=args.backbone, backbone_width=args.width)
        hasher = model.build_hasher(config.make_backbone(shape), 48)
        hasher.compile(optimizer="adam", loss=config.hash_loss(10, 48))
        suffix = "" if policy == "float32" else "_bf16"
        ips = record(f"tfhash_phase2_{method}{suffix}",
                     timed_fit(hasher, train, args.steps, args.epochs), flops, method=method,
                     bits=48, precision=policy)
        rows[-1]["speedup_vs_naive"] = round(ips / base, 3)
        rows[-1]["step_time_vs_phase1"] = round(phase1[policy, BATCH] / ips, 3)
    for method in args.methods:  # the loss alone: forward + gradient on a batch of codes
        loss_ms = loss_step_ms(model.TrainConfig(bits=(48,), method=method).hash_loss(10, 48))
        rows.append({"benchmark_case": f"loss_only_{method}", "method": method, "bits": 48,
                     "batch_size": BATCH, "step_ms": round(loss_ms, 3),
                     "fraction_of_phase1_step": round(loss_ms / 1e3 * phase1["float32", BATCH]
                                                      / BATCH, 5)})
        print(rows[-1], flush=True)

    # encoding: Keras predict vs SavedModel vs ONNX Runtime on the same batch
    from tfhash.export import export_onnx, export_savedmodel

    hasher = model.as_float32(hasher)  # the last one trained in bf16; export takes float32
    batch = images[:1024].astype("float32")
    with tempfile.TemporaryDirectory() as tmp:
        saved = export_savedmodel(hasher, tmp, name="speed")
        onnx_path = export_onnx(hasher, os.path.join(tmp, "speed.onnx"))
        import onnxruntime as ort

        serving = tf.saved_model.load(str(saved)).signatures["serving_default"]
        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        encoders = {
            "encode_keras_predict": lambda: hasher.predict(batch, batch_size=256, verbose=0),
            "encode_savedmodel": lambda: [serving(images=tf.constant(batch[i:i + 256]))
                                          for i in range(0, len(batch), 256)],
            "encode_onnxruntime": lambda: [session.run(None, {"images": batch[i:i + 256]})
                                           for i in range(0, len(batch), 256)],
        }
        for name, fn in encoders.items():
            fn()
            times = []
            for _ in range(3):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
            ips = len(batch) / float(np.median(times))
            rows.append({"benchmark_case": name, "backbone": args.backbone,
                         "images_per_s": round(ips, 1),
                         "fraction_of_matmul_peak": round(ips * flops / 1e9 / peak, 4)})
            print(rows[-1], flush=True)
    write_results(f"speed{args.tag}", rows, matmul_gflops=round(peak, 1),
                  matmul_bf16_gflops=round(peak_bf16, 1),
                  flops_per_image=flops, timed_images=n)


if __name__ == "__main__":
    main()
