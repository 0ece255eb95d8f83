"""Where a phase-1 epoch's time goes: the input pipeline against the training step, A/B interleaved.

On the 5,000-image cnnh training split an epoch is a few seconds, so restarting the input
pipeline every epoch (shuffle buffer refill, parallel augmentation warm-up) is visible. Four
ways are timed in alternating rounds, so machine load affects them alike:

  * ``restart_each_epoch``: `fit` on the batches with a fresh iterator per epoch;
  * ``one_repeated_iterator``: `fit` on one repeated iterator with ``steps_per_epoch``
    (what tfhash does in both phases and in tuning);
  * ``no_input_pipeline``: `fit` on one augmented batch repeated: the training step alone,
    a bound on what any faster input pipeline could give;
  * ``input_pipeline_only``: drawing an epoch of batches without training.

The ratio of each median epoch time to ``one_repeated_iterator``'s is the result.

    TFHASH_DATA_DIR=../shared/datasets python benchmarks/epoch_restart.py --rounds 3 --mix mixup
"""

import argparse
import time

import keras
import numpy as np
import tensorflow as tf

from tfhash import data, model
from tfhash.pipeline import MIXES

from common import write_results
from speed import EpochTimer


def drawing_seconds(iterator, steps):
    """Seconds to draw ``steps`` batches from ``iterator``."""
    start = time.perf_counter()
    for _ in range(steps):
        next(iterator)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per fit and round")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--precision", default="mixed_bfloat16")
    parser.add_argument("--mix", default="none", choices=MIXES,
                        help="phase-1 batch mixing on top of crop, flip and cutout")
    args = parser.parse_args()
    if args.rounds < 1 or args.epochs < 2:
        parser.error("--rounds must be >= 1 and --epochs >= 2")
    split = data.make_split(data.load_dataset("cifar10"), "cnnh", seed=0, val_fraction=0.0)
    config = model.TrainConfig(backbone_width=args.width, precision=args.precision,
                               augment="crop_flip_cutout", mix=args.mix)
    keras.utils.set_random_seed(0)
    net = model.build_classifier(config.make_backbone(split.train.images.shape[1:]), 10)
    net.compile(optimizer="adamw", loss="categorical_crossentropy")
    train = model.training_batches(split.train, config, 10, config.mix)
    steps = config.steps(len(split.train), 1)
    one_batch = tf.data.Dataset.from_tensors(next(iter(train))).repeat()
    drawn = iter(train.repeat())
    times = {"restart_each_epoch": [], "one_repeated_iterator": [], "no_input_pipeline": [],
             "input_pipeline_only": []}
    for _ in range(args.rounds):
        for way, seconds in times.items():
            if way == "input_pipeline_only":
                seconds.extend(drawing_seconds(drawn, steps) for _ in range(args.epochs - 1))
                continue
            timer = EpochTimer()
            if way == "restart_each_epoch":
                net.fit(train, shuffle=False, epochs=args.epochs, verbose=0, callbacks=[timer])
            else:
                batches = train.repeat() if way == "one_repeated_iterator" else one_batch
                net.fit(batches, steps_per_epoch=steps, shuffle=False, epochs=args.epochs,
                        verbose=0, callbacks=[timer])
            seconds.extend(timer.seconds[1:])  # the first epoch of a fit is warm-up
    medians = {way: float(np.median(s)) for way, s in times.items()}
    rows = [{"way": way, "median_epoch_s": round(m, 3), "epochs_timed": len(times[way]),
             "time_vs_repeated": round(m / medians["one_repeated_iterator"], 3)}
            for way, m in medians.items()]
    for row in rows:
        print(row)
    write_results("epoch_restart", rows, width=args.width, precision=args.precision,
                  mix=args.mix, train_images=len(split.train), batch_size=config.batch_size)


if __name__ == "__main__":
    main()
