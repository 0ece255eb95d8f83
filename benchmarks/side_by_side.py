"""Phase-1 trainings side by side: one process on every core against P processes of one thread.

A small CPU runs one phase-1 training with TensorFlow's default threads (every core), or P
trainings at once, each its own process with one intra- and inter-op thread, as
``reproduce.py --phase1-only --threads 1 --members K`` trains ensemble members. Both ways
train the recipe of a results file (``--recipe-from``) on the cnnh split of seed 0 for
``--epochs`` epochs; each way's throughput is the epochs an hour all its processes train
together, from each process's median epoch time after the first. The result is the ratio
of the side-by-side throughput to the single process's.

    TFHASH_DATA_DIR=../shared/datasets python benchmarks/side_by_side.py \\
        --recipe-from cifar10-cnnh-w24-p300-mixup-wd1-graded --processes 2
"""

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from common import RESULTS, write_results

WORKER = "--worker-threads"
DEFAULT_THREADS = "default"


def worker(args):
    """One training on ``--worker-threads`` threads (a number, or ``default``: TensorFlow's
    own), printing its epoch seconds as a JSON line."""
    from tfhash.hardware import use_threads

    if args.worker_threads != DEFAULT_THREADS:
        use_threads(int(args.worker_threads))
    from phase2_variants import recipe_config

    from tfhash import data, model

    from speed import EpochTimer

    config = dataclasses.replace(recipe_config(args.recipe_path, 0),
                                 pretrain_epochs=args.epochs)
    dataset = data.load_dataset(args.dataset)
    split = data.make_split(dataset, "cnnh", seed=0, val_fraction=0.0)
    timer = EpochTimer()
    model.pretrain(config.make_backbone(split.train.images.shape[1:]), split,
                   dataset.num_classes, config, callbacks=[timer], verbose=0)
    print(json.dumps(timer.seconds), flush=True)


def run_workers(args, processes, threads):
    """Epoch seconds of ``processes`` trainings run at once, ``threads`` threads each (a
    number, or ``DEFAULT_THREADS``)."""
    command = [sys.executable, __file__, "--recipe-from", str(args.recipe_path), "--dataset",
               args.dataset, "--epochs", str(args.epochs), WORKER, str(threads)]
    running = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
               for _ in range(processes)]
    outputs = [p.communicate()[0] for p in running]
    if any(p.returncode for p in running):
        sys.exit(f"side_by_side.py: a training process failed (exit codes "
                 f"{[p.returncode for p in running]})")
    return [json.loads(out.strip().splitlines()[-1]) for out in outputs]


def way_row(way, processes, threads, seconds):
    """A row: the median epoch seconds of each process, and the epochs an hour of all."""
    medians = [float(np.median(s[1:])) for s in seconds]
    return {"way": way, "processes": processes, "threads_each": threads,
            "median_epoch_s": [round(m, 2) for m in medians],
            "epochs_per_hour": round(sum(3600 / m for m in medians), 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe-from", required=True, metavar="RUN",
                        help="a results file stem (or path) whose phase-1 recipe to train")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--epochs", type=int, default=4,
                        help="epochs per training, the first not timed (at least 2)")
    parser.add_argument("--processes", type=int, default=2,
                        help="trainings side by side, one thread each (at least 2)")
    parser.add_argument(WORKER, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    recipe = Path(args.recipe_from)
    args.recipe_path = recipe if recipe.suffix == ".json" else RESULTS / f"{recipe}.json"
    if not args.recipe_path.is_file():
        parser.error(f"--recipe-from: no results file {args.recipe_from!r} (a stem under "
                     f"{RESULTS} or a path to a .json)")
    if args.worker_threads is not None:
        worker(args)
        return
    if args.epochs < 2 or args.processes < 2:
        parser.error(f"--epochs and --processes must be at least 2, got {args.epochs} and "
                     f"{args.processes}")
    rows = [way_row("one process", 1, DEFAULT_THREADS, run_workers(args, 1, DEFAULT_THREADS)),
            way_row("side by side", args.processes, 1, run_workers(args, args.processes, 1))]
    ratio = round(rows[1]["epochs_per_hour"] / rows[0]["epochs_per_hour"], 3)
    print(f"side by side / one process: {ratio} times the epochs an hour")
    write_results("side_by_side", rows, recipe_from=str(args.recipe_from),
                  dataset=args.dataset, epochs=args.epochs, throughput_ratio=ratio)


if __name__ == "__main__":
    main()
