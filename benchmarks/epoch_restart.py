"""Epoch time with a fresh tf.data iterator per epoch vs one repeated iterator, A/B interleaved.

On the 4,500-image cnnh training split an epoch is a few seconds, so restarting the input
pipeline every epoch (shuffle buffer refill, parallel augmentation warm-up) is visible. Both
ways fit the same model in alternating rounds, so machine load affects them alike; the
ratio of median epoch times is the result.

    TFHASH_DATA_DIR=../shared/datasets python benchmarks/epoch_restart.py --rounds 3
"""

import argparse

import keras
import numpy as np

from tfhash import data, model
from tfhash.pipeline import make_dataset

from common import write_results
from speed import EpochTimer


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per fit and round")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--precision", default="mixed_bfloat16")
    args = parser.parse_args()
    if args.rounds < 1 or args.epochs < 2:
        parser.error("--rounds must be >= 1 and --epochs >= 2")
    split = data.make_split(data.load_dataset("cifar10"), "cnnh", seed=0, val_fraction=0.0)
    config = model.TrainConfig(backbone_width=args.width, precision=args.precision,
                               augment="crop_flip_cutout")
    keras.utils.set_random_seed(0)
    net = model.build_classifier(config.make_backbone(split.train.images.shape[1:]), 10)
    net.compile(optimizer="adamw", loss="sparse_categorical_crossentropy")
    train = make_dataset(split.train.images, split.train.labels, config.batch_size,
                         training=True, augment=config.augment)
    steps = config.steps(len(split.train), 1)
    times = {"restart_each_epoch": [], "one_repeated_iterator": []}
    for _ in range(args.rounds):
        for way, seconds in times.items():
            timer = EpochTimer()
            if way == "restart_each_epoch":
                net.fit(train, shuffle=False, epochs=args.epochs, verbose=0, callbacks=[timer])
            else:
                net.fit(train.repeat(), steps_per_epoch=steps, shuffle=False, epochs=args.epochs,
                        verbose=0, callbacks=[timer])
            seconds.extend(timer.seconds[1:])  # the first epoch of a fit is warm-up
    medians = {way: float(np.median(s)) for way, s in times.items()}
    rows = [{"way": way, "median_epoch_s": round(m, 3), "epochs_timed": len(times[way]),
             "speedup": round(medians["restart_each_epoch"] / m, 3)}
            for way, m in medians.items()]
    for row in rows:
        print(row)
    write_results("epoch_restart", rows, width=args.width, precision=args.precision,
                  train_images=len(split.train), batch_size=config.batch_size)


if __name__ == "__main__":
    main()
