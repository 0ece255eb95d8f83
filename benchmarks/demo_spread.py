"""Run-to-run spread of the quick demo recipe on mnist-5k (what the training test relies on).

Trains `DEMO_RECIPE` (and variants) several times on the test's split (cnnh, seed 0, 10%
validation) and records 12-bit mAP and the phase-1 classifier's query accuracy per run, so
the test's threshold and the recipe rest on a measured distribution, not on one lucky run.

    python benchmarks/demo_spread.py --repeats 3 --variants demo demo_cls demo_w32
"""

import argparse
import dataclasses

from tfhash import data, metrics, model

from common import query_accuracy, write_results

VARIANTS = {
    "demo": {},
    "demo_cls": {"classification_weight": 1.0},
    "demo_long": {"pretrain_epochs": 25},
    # the recipe's width before it became 16 (the results file's "demo" rows until then;
    # its "demo_w16" rows are today's "demo")
    "demo_w32": {"backbone_width": 32},
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    split = data.make_split(data.load_dataset("mnist-5k"), "cnnh", seed=0, val_fraction=0.1)
    rows = []
    for repeat in range(args.repeats):  # variants interleaved: a load change hits all alike
        for variant in args.variants:
            config = dataclasses.replace(model.TrainConfig(bits=(12,), **model.DEMO_RECIPE),
                                         seed=repeat, **VARIANTS[variant])
            result = model.fit_two_phase(split, config, verbose=0)
            q = model.encode(result.hashers[12], split.query.images, verbose=0)
            db = model.encode(result.hashers[12], split.database.images, verbose=0)
            rows.append({
                "variant": variant, "seed": repeat, **VARIANTS[variant],
                "query_accuracy": query_accuracy(result.classifier, split),
                "map_12": round(metrics.mean_average_precision(
                    q, split.query.labels, db, split.database.labels), 4),
                "wall_s": round(sum(result.wall_s.values()), 1),
            })
            print(rows[-1], flush=True)
            write_results("demo_spread", rows, recipe=model.DEMO_RECIPE)


if __name__ == "__main__":
    main()
