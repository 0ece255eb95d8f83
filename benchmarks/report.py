"""Writes benchmarks/RESULTS.md from the JSON files in benchmarks/results/ (no hand-typed numbers).

    python benchmarks/report.py
"""

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, adopted_members, row_encoding, row_method  # noqa: E402  (also puts tfhash on the path)

HERE = Path(__file__).parent
# The paper's abstract gives only these headline figures (Hamming-ranking mAP, 12 bits).
PAPER = {("mnist", "cnnh", 12): 0.99, ("cifar10", "cnnh", 12): 0.74}


def load(path):
    return json.loads(path.read_text())


def header(doc):
    m = doc["machine"]
    v = doc["versions"]
    cpu = f" ({m['cpu_model']})" if m.get("cpu_model") else ""
    bf16 = ("" if "native_bfloat16" not in m else
            ", native bfloat16" if m["native_bfloat16"] else ", no native bfloat16")
    return (f"_{doc['benchmark']}: {doc['created']}, {m.get('cpus')} CPUs{cpu}, "
            f"{m.get('gpus', 0)} GPUs{bf16}, TF {v.get('tensorflow', '?')}, "
            f"Keras {v.get('keras', '?')}._\n")


def mean_std(values):
    values = np.asarray(values, float)
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{values.mean():.4f} ± {values.std(ddof=1):.4f}"


# options left out of a recipe when off
UNUSED = {"backbone_stem": "conv", "ema_momentum": None, "sam_radius": None, "soup_size": 1,
          "ensemble_size": 1, "classification_head": "dense"}


OVERVIEW_MIN_SEEDS = 3
# tfhash's own hash functions: the paper's loss, and codes graded from the classifier with no
# phase 2 (reproduce.py --methods graded, graded-arranged, graded-asymmetric,
# fitted-asymmetric, fitted-capped-asymmetric); every other method is a peer loss
OURS = {"exponentiated": "exponentiated loss", "graded": "graded class codes",
        "graded-arranged": "graded class codes, arranged codebook",
        "graded-asymmetric": "graded class codes, arranged codebook, queries on their class's "
                             "codeword",
        "fitted-asymmetric": "fitted class codes, arranged codebook, queries on their class's "
                             "codeword",
        "fitted-capped-asymmetric": "fitted class codes, arranged capped codebook, queries on "
                                    "their class's codeword"}


class OverviewRow(NamedTuple):
    """One run's mean mAP in one encoding; ``unlabelled``: its phase 1 also saw database
    images without their labels (self-training)."""

    dataset: str
    protocol: str
    run: str
    unlabelled: bool
    encoding: str
    seeds: list
    means: dict  # bits -> mean mAP over the seeds
    peers_ahead: list | None  # `peers_ahead` of the run in this encoding
    method: str = "exponentiated"  # a key of `OURS`


def is_reproduction(doc):
    """Whether a results file holds `reproduce.py` rows (a dataset under a protocol)."""
    return bool(doc["rows"]) and "protocol" in doc["rows"][0]


class PeerLead(NamedTuple):
    """A peer loss whose mean mAP at one length is above the exponentiated loss's."""

    peer: str
    bits: int
    lead: float  # the peer's mean minus the exponentiated loss's
    seeds: list  # the seeds both ran, the only ones compared


def peers_ahead(rows, encoding):
    """Where the peer goal fails: `PeerLead`s of every peer ahead of the exponentiated loss
    (pre-trained rows of one encoding), each pair compared on the seeds both ran, at the six
    places rows hold (a tie is not a lead). ``None`` when no peer ran on a seed the
    exponentiated loss ran."""
    by_method = defaultdict(list)
    for r in rows:
        if r["pretrain"] and row_encoding(r) == encoding:
            by_method[r["method"]].append(r)
    ours = by_method["exponentiated"]
    peers = {method: rs for method, rs in by_method.items() if method not in OURS}
    ahead, compared = [], False
    for peer, theirs in sorted(peers.items()):
        seeds = sorted({r["seed"] for r in ours} & {r["seed"] for r in theirs})
        compared = compared or bool(seeds)
        for bits in sorted({r["bits"] for r in theirs} & {r["bits"] for r in ours}):
            mine, other = ([r["map"] for r in rs if r["bits"] == bits and r["seed"] in seeds]
                           for rs in (ours, theirs))
            if mine and round(np.mean(other), 6) > round(np.mean(mine), 6):
                ahead.append(PeerLead(peer, bits, float(np.mean(other) - np.mean(mine)), seeds))
    return ahead if compared else None


def classifier_source(name, runs):
    """The run that trained the phase-1 classifiers run ``name`` hashed from: its
    ``phase1_from`` chain followed to its end (``runs``: results files by run name)."""
    seen = set()
    while name in runs and name not in seen:
        seen.add(name)
        sources = {r.get("phase1_from") for r in runs[name]["rows"]}
        if len(sources) != 1 or None in sources:
            break
        name = sources.pop()
    return name


def sibling_peer_rows(doc, runs):
    """The peer rows of other runs in ``runs`` (results files by run name) trained on the
    classifiers ``doc``'s exponentiated loss was: the same `classifier_source`, and on that
    seed the same query accuracy and phase-2 epochs. Each is renamed 'method (run)', so
    `peers_ahead` counts it as a peer of its own."""
    mine = {(r["seed"], r.get("query_accuracy"), r.get("hash_epochs")) for r in doc["rows"]
            if r["method"] == "exponentiated" and r.get("query_accuracy") is not None}
    source = classifier_source(doc["benchmark"], runs)
    return [{**r, "method": f"{r['method']} ({name})"}
            for name, other in runs.items()
            if name != doc["benchmark"] and classifier_source(name, runs) == source
            for r in other["rows"] if r["method"] not in OURS
            and (r["seed"], r.get("query_accuracy"), r.get("hash_epochs")) in mine]


def seeds_words(seeds):
    return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"


def describe_leads(ahead, brief=False):
    """`peers_ahead`'s answer in words ('' when no peer ran); ``brief``: the lengths per
    peer, without the margins."""
    if ahead is None:
        return ""
    if not ahead:
        return "none"
    if brief:
        by_peer = defaultdict(list)
        for a in ahead:
            by_peer[(a.peer, tuple(a.seeds))].append(str(a.bits))
        return "; ".join(f"{peer} at {', '.join(bits)} bits ({seeds_words(seeds)})"
                         for (peer, seeds), bits in by_peer.items())
    return "; ".join(f"{a.peer} at {a.bits} bits by "
                     f"{f'{a.lead:.4f}' if a.lead >= 0.00005 else 'under 0.0001'} "
                     f"({seeds_words(a.seeds)})" for a in ahead)


def overview_rows(docs):
    """The pre-trained rows of tfhash's own methods (`OURS`) in every reproduction run with
    at least `OVERVIEW_MIN_SEEDS` seeds, as `OverviewRow`s, one per run, method and
    encoding, with the peers of the run and of its `sibling_peer_rows`. Sorted by dataset
    and protocol, runs on the labelled images first, then by mean mAP at the shortest
    length, highest first."""
    found = []
    runs = {doc["benchmark"]: doc for doc in docs}
    for doc in docs:
        compared = doc["rows"] + sibling_peer_rows(doc, runs)
        by_encoding = defaultdict(list)
        for r in doc["rows"]:
            if r["method"] in OURS and r["pretrain"]:
                by_encoding[(r["method"], row_encoding(r))].append(r)
        for (method, encoding), rs in by_encoding.items():
            seeds = sorted({r["seed"] for r in rs})
            if len(seeds) < OVERVIEW_MIN_SEEDS:
                continue
            means = {b: float(np.mean([r["map"] for r in rs if r["bits"] == b]))
                     for b in sorted({r["bits"] for r in rs})}
            found.append(OverviewRow(rs[0]["dataset"], rs[0]["protocol"], doc["benchmark"],
                                     any("n_pseudo" in r for r in rs), encoding, seeds, means,
                                     peers_ahead(compared, encoding), method))
    return sorted(found, key=lambda f: (f.dataset, f.protocol, f.unlabelled,
                                        -f.means[min(f.means)], f.run, f.method, f.encoding))


def overview_section(docs):
    """A table of `overview_rows`, beside the paper's figures, to find the headline rows."""
    found = overview_rows(docs)
    if not found:
        return ""
    bits = sorted({b for f in found for b in f.means})
    lines = ["### Overview\n",
             f"Every run below with at least {OVERVIEW_MIN_SEEDS} seeds: the exponentiated "
             "loss with pre-training, or graded class codes (the pre-trained, or in "
             "'labelled + database' rows self-trained, classifier's probabilities placed "
             "between class codewords, no phase 2: "
             "`tfhash.model.build_graded_hasher`; 'arranged codebook': the classes the "
             "classifier mixes up on the training images get the nearer codewords; "
             "'queries on their class's codeword': asymmetric codes, the database graded "
             "and each query coded as its likeliest class's codeword, "
             "`tfhash.model.build_query_hasher`; 'fitted class codes': each image where its "
             "Hamming distances to all the codewords best explain its class probabilities, "
             "`tfhash.layers.FittedClassCodes`; 'capped codebook': codewords nearly equally "
             "apart (at 12 bits all 6 to 8), `tfhash.codebooks.capped_codebook`); "
             "'asymmetric' codes of a learned loss: "
             "the database coded as it is, each query as the class centre of the training "
             "images' codes nearest its own (`tfhash.model.build_query_hasher` with "
             "`tfhash.model.training_centres`), "
             "mean mAP@all over the seeds (each run's "
             "own section has the spread, the peers and the ablation); '>= paper' compares the "
             "unrounded 12-bit mean with the paper's figure. 'labelled + database' runs "
             "also used the database images without their labels (self-training): "
             "separate rows, not the protocol followed strictly. 'Peers ahead': the peer "
             "losses whose mean mAP is above the exponentiated loss's, of the same run or, "
             "named 'method (run)', of another run that trained on the same classifiers "
             "(`--phase1-from`; the same query accuracy and phase-2 epochs on each seed "
             "compared), for graded rows too, whose runs usually hold no peer; "
             "compared on the seeds both ran (empty: no peer ran; none: the peer goal "
             "holds).\n",
             "| dataset | protocol | run | images used | hash function | codes | seeds | "
             + " | ".join(f"{b} bits" for b in bits) + f" | >= paper at {bits[0]} bits | "
             "peers ahead |",
             "|---|---|---|---|---|---|---|" + "---|" * (len(bits) + 2)]
    group = None
    for dataset, protocol, run, unlabelled, encoding, seeds, means, ahead, method in found:
        paper = PAPER.get((dataset, protocol, bits[0]))
        if (dataset, protocol) != group and paper is not None:
            lines.append(f"| {dataset} | {protocol} | Mu & Liu 2017 (paper, abstract) | "
                         f"labelled | | | | {paper:.2f} |" + " |" * (len(bits) + 1))
        group = (dataset, protocol)
        reached = "" if paper is None or bits[0] not in means else (
            "yes" if round(means[bits[0]], 6) >= paper else "no")  # rows hold 6 places
        lines.append(f"| {dataset} | {protocol} | {run} | "
                     f"{'labelled + database' if unlabelled else 'labelled'} | {OURS[method]} | "
                     f"{encoding} | "
                     f"{len(seeds)} | "
                     + " | ".join(f"{means[b]:.4f}" if b in means else "" for b in bits)
                     + f" | {reached} | {describe_leads(ahead, brief=True)} |")
    return "\n".join(lines) + "\n"


def reproduction_section(doc, ensemble_sizes=None):
    """The section of one reproduce.py results file; ``ensemble_sizes`` maps run names to
    their ensemble size (for the runs phase 1 was taken from)."""
    rows = doc["rows"]
    dataset, protocol = rows[0]["dataset"], rows[0]["protocol"]
    bits = sorted({r["bits"] for r in rows})
    groups = defaultdict(list)
    for r in rows:  # rows from before flip-averaging existed are plain
        groups[(r["method"], r["pretrain"], row_encoding(r))].append(r)
    seeds = sorted({r["seed"] for r in rows})
    lines = [f"### {dataset}, {protocol} protocol ({doc['benchmark']})\n", header(doc),
             f"mAP@all (ties: expected), mean ± std over each row's seeds (all: {seeds}); "
             "`map_index` = ties by index; P@r2 = precision within Hamming radius 2.\n",
             "| method | pre-training | seeds | " + " | ".join(f"{b} bits" for b in bits)
             + " | mAP (index ties) | P@r2 |",
             "|---|---|---|" + "---|" * len(bits) + "---|---|"]
    paper = [PAPER.get((dataset, protocol, b)) for b in bits]
    if any(p is not None for p in paper):
        lines.append("| Mu & Liu 2017 (paper, abstract) | yes | | "
                     + " | ".join("" if p is None else f"{p:.2f}" for p in paper) + " | | |")
    order = sorted(groups, key=lambda k: (k[0] != "exponentiated", not k[1], k[0], k[2] != "plain"))
    for method, pre, encoding in order:
        rs = groups[(method, pre, encoding)]
        cells = [mean_std([r["map"] for r in rs if r["bits"] == b]) for b in bits]
        idx = " / ".join(f"{np.mean([r['map_index'] for r in rs if r['bits'] == b]):.3f}"
                         for b in bits)
        pr2 = " / ".join(f"{np.mean([r['precision_r2'] for r in rs if r['bits'] == b]):.3f}"
                         for b in bits)
        row_seeds = ", ".join(str(x) for x in sorted({r["seed"] for r in rs}))
        lines.append(f"| {row_label(method, encoding)} | {'yes' if pre else 'no'} | {row_seeds} | "
                     + " | ".join(cells)
                     + f" | {idx} | {pr2} |")
    lines += same_seeds_lines(groups, bits)
    lines += peer_goal_lines(rows)
    acc = sorted({(r["seed"], r["query_accuracy"]) for r in rows})
    walls = defaultdict(list)
    for r in rows:
        no_phase2 = r.get("hash_epochs") == 0  # graded codes: none trained
        walls[(r["method"], r["pretrain"])].append((r["seed"], r["wall_s_pretrain"],
                                                   None if no_phase2 else r["wall_s_hash"]))
    lines.append("")
    config = doc.get("config", {})
    recipe = ", ".join(f"{k}={config[k]}" for k in (
        "backbone", "backbone_width", "backbone_stem", "pretrain_epochs", "hash_epochs",
        "batch_size", "margin", "negative_margin", "temperature", "classification_weight",
        "classification_head", "augment", "label_smoothing", "mix", "hash_mix", "precision",
        "ema_momentum", "sam_radius", "soup_size", "ensemble_size", "self_train",
        "self_train_epochs", "self_train_rounds", "self_train_keep", "pseudo_phase2",
        "flip_pseudo_labels", "fresh_student")
        if k in config and not (k in UNUSED and config[k] == UNUSED[k]))
    lines.append(f"Recipe: {recipe}.")
    taught = sorted({(r["seed"], r["teacher_query_accuracy"], r["query_accuracy"], r["n_pseudo"],
                      r["pseudo_label_accuracy"]) for r in rows if "n_pseudo" in r})
    members = config.get("ensemble_size", 1)
    if taught:
        teacher = (f"the {members} members' averaged classifier labels the first round and "
                   "member 0 trains on alone, the rows start from it; " if members > 1 else "")
        lines.append(f"Self-training per seed ({teacher}query accuracy before -> after; "
                     "pseudo-labelled database images, share correct): " + ", ".join(
                         f"seed {s}: {t:.4f} -> {a:.4f}, {n} images, {c:.3f}"
                         for s, t, a, n, c in taught) + ".")
    alone = {r["seed"]: r["member_query_accuracy"] for r in rows
             if "member_query_accuracy" in r}
    lines.append("Phase-1 classifier accuracy on the queries, per seed: " + ", ".join(
        f"seed {s}: {a:.4f}" + (f" (its members alone: {' / '.join(f'{m:.4f}' for m in alone[s])})"
                                if s in alone else "") for s, a in acc) + ".")
    lines += trained_on_lines(rows)
    lines += phase1_from_lines(rows, members, ensemble_sizes)
    lines += mixed_ensemble_lines(config, ensemble_sizes)
    lines += correct_queries_lines(rows, bits)
    pre_s = sorted({(s, p) for v in walls.values() for s, p, _ in v if p})
    resumed = {r["seed"] for r in rows if r.get("phase1_resumed")}
    lines.append("Wall time of phase 1 per seed (s"
                 + ("; *: resumed from its per-epoch backup, the resumed part only" if resumed
                    else "") + "): "
                 + ", ".join(f"{p:.0f}{'*' if s in resumed else ''}" for s, p in pre_s)
                 + "; phase 2 (all lengths at once) per method, first seed (s): "
                 + ", ".join(f"{m}{'' if pre else ' (no pre-training)'} "
                             + ("none (codes from the classifier)" if v[0][2] is None
                                else f"{v[0][2]:.0f}")
                             for (m, pre), v in walls.items()) + ".")
    links = reproduction_plots(doc, groups, bits)
    lines.append("\n" + " ".join(f"![{alt}]({png})" for alt, png in links))
    return "\n".join(lines) + "\n"


def trained_on_lines(rows):
    """The line naming where phase 1 was trained, for seeds whose classifiers were trained
    on another machine (`accelerated_phase1.py`); no line when all were trained here."""
    places = sorted({(r["seed"], r["phase1_trained_on"]) for r in rows
                     if r.get("phase1_trained_on")})
    if not places:
        return []
    return ["Phase 1 (with any self-training) trained on another machine, per seed: "
            + ", ".join(f"seed {s}: {p}" for s, p in places)
            + "; phase 2 and the evaluation ran on the machine named above."]


def phase1_from_lines(rows, members=1, source_members=None):
    """The line naming the runs whose classifiers phase 2 started from (``reproduce.py
    --phase1-from``) and, for an ensemble of ``members``, how many members each gave
    (``source_members``: each source run's ensemble size, default 1; the rest trained in
    this run) and the seeds that trained their own (``--append`` of seeds the source run
    lacks); no line when every seed trained its own."""
    seeds = defaultdict(set)
    for r in rows:
        if r.get("phase1_from"):
            seeds[r["phase1_from"]].add(r["seed"])
    if not seeds:
        return []
    own = sorted({r["seed"] for r in rows if r.get("pretrain", True)}
                 - set().union(*seeds.values()))
    source_members = source_members or {}
    parts = []
    for run, run_seeds in sorted(seeds.items()):
        taken = adopted_members(source_members.get(run, 1), members)
        part = f"{run} ({seeds_words(sorted(run_seeds))}"
        if members > 1:
            part += (f"; all {members} ensemble members" if taken == members else
                     f"; {taken} of the {members} ensemble members, the rest trained in "
                     "this run")
        parts.append(part + ")")
    trained_here = f" {seeds_words(own).capitalize()}: phase 1 trained in this run." if own else ""
    return ["Phase 1 taken from another run's cached classifiers (its wall time is that "
            "run's): " + "; ".join(parts) + "." + trained_here]


def mixed_ensemble_lines(config, source_members=None):
    """The line naming the runs whose cached classifiers a mixed ensemble (``reproduce.py
    --ensemble-with``) averaged with the run's own members, and how many each gave
    (``source_members``: each run's ensemble size, default 1); none for other runs."""
    runs = config.get("ensemble_with")
    if not runs:
        return []
    own = config.get("ensemble_size", 1)
    sizes = {run: (source_members or {}).get(run, 1) for run in runs}
    parts = [f"{run} ({n} member{'s' if n > 1 else ''})" for run, n in sizes.items()]
    return [f"Mixed ensemble: each seed's classifier averages this run's {own} "
            f"member{'s' if own > 1 else ''} with the cached phase-1 classifiers of "
            + ", ".join(parts) + ", all weighted alike; the phase-1 wall time below is all "
            "of theirs."]


def correct_queries_lines(rows, bits):
    """mAP over the queries the classifier labels right, for rows that recorded it."""
    by_run = defaultdict(dict)
    for r in rows:
        if (r.get("map_correct_queries") is not None and row_encoding(r) == "plain"
                and r["pretrain"]):
            by_run[(r["method"], r["seed"])][r["bits"]] = r["map_correct_queries"]
    if not by_run:
        return []
    return ["mAP over only the queries the classifier phase 2 starts from labels right "
            "(plain codes), at "
            f"{'/'.join(str(b) for b in bits)} bits: " + "; ".join(
                f"{m} seed {s}: " + "/".join(f"{v[b]:.4f}" for b in bits if b in v)
                for (m, s), v in sorted(by_run.items())) + "."]


def same_seeds_lines(groups, bits):
    """When rows ran on different seeds, every row's mean on the seeds all of them share."""
    seed_sets = [{r["seed"] for r in rs} for rs in groups.values()]
    shared = set.intersection(*seed_sets)
    if not shared or all(s == shared for s in seed_sets):
        return []
    cells = []
    for (method, pre, encoding), rs in groups.items():
        means = [np.mean([r["map"] for r in rs if r["bits"] == b and r["seed"] in shared])
                 for b in bits]
        label = row_label(method, encoding) + ("" if pre else " (no pre-training)")
        cells.append(f"{label} " + "/".join(f"{m:.4f}" for m in means))
    return ["", f"On the seeds every row ran ({', '.join(str(x) for x in sorted(shared))}), "
            f"mAP at {'/'.join(str(b) for b in bits)} bits: " + "; ".join(cells) + "."]


def peer_goal_lines(rows):
    """One line per encoding on whether the exponentiated loss is at or above every peer at
    every length (`peers_ahead`); none when no peer ran."""
    lines = []
    encodings = dict.fromkeys(row_encoding(r) for r in rows)  # first-seen order
    for encoding in sorted(encodings, key=lambda e: e != "plain"):
        ahead = peers_ahead(rows, encoding)
        if ahead is not None:
            lines.append(f"Peer goal, {encoding} codes (each peer against the exponentiated "
                         "loss, both pre-trained, on the seeds both ran): "
                         + ("met at every length." if not ahead
                            else "peers ahead: " + describe_leads(ahead) + "."))
    return [""] + lines if lines else []


def row_label(method, encoding):
    return method if encoding == "plain" else f"{method}, {encoding} codes"


def reproduction_plots(doc, groups, bits):
    """Draws mAP-vs-bits (mean over seeds, every method) and the PR curves; returns links."""
    from tfhash.plots import plot_map_vs_bits, plot_pr_curves

    name = doc["benchmark"]
    dataset, protocol = doc["rows"][0]["dataset"], doc["rows"][0]["protocol"]
    series = {}
    for (method, pre, encoding), rs in groups.items():
        label = row_label(method, encoding) + ("" if pre else " (no pre-training)")
        series[label] = (bits, [np.mean([r["map"] for r in rs if r["bits"] == b]) for b in bits])
    links = [("mAP vs bits", f"results/{name}-map_vs_bits.png")]
    plot_map_vs_bits(series, HERE / links[0][1], title=f"{dataset} {protocol}: mAP against bits")
    pr = doc.get("pr_curves")
    if pr and pr["curves"]:
        curves = {f"{b} bits": (c["precision"], c["recall"]) for b, c in pr["curves"].items()}
        links.append(("PR curves", f"results/{name}-pr_curve.png"))
        plot_pr_curves(curves, HERE / links[1][1],
                       title=f"{dataset} {protocol}, {pr['method']}, seed {pr['seed']}")
    elif (HERE / f"results/{name}-pr_curve.png").exists():  # drawn by the run itself
        links.append(("PR curves", f"results/{name}-pr_curve.png"))
    return links


def map_speed_section(doc):
    lines = ["### Evaluation speed: mean_average_precision\n", header(doc),
             "| implementation | ties | queries x database | bits | wall s | speed-up | mAP |",
             "|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        speed = f"{r['speedup_vs_naive']:.1f}x" if "speedup_vs_naive" in r else "1x"
        lines.append(f"| {r['method']} | {r['ties']} | {r['queries']} x {r['database']} | "
                     f"{r['bits']} | {r['wall_s']:.3f} | {speed} | {r['map']:.6f} |")
    same = [r for r in doc["rows"] if "identical" in r]
    if same:
        lines.append(f"\nIndex-mode value equals the plain argsort loop's: "
                     f"{same[0]['identical']} (|difference| = {same[0]['abs_diff']:.1e}).")
    return "\n".join(lines) + "\n"


def speed_section(doc):
    lines = [f"### Training and encoding throughput ({doc['benchmark']})\n", header(doc),
             f"Machine float32 matmul: {doc['matmul_gflops']} GFLOP/s"
             + (f" (bfloat16: {doc['matmul_bf16_gflops']} GFLOP/s)"
                if "matmul_bf16_gflops" in doc else "") + "; model forward "
             f"{doc['flops_per_image'] / 1e6:.1f} MFLOP per image (training counted as 3x); "
             f"backbone {doc['rows'][0]['backbone']}"
             + (f", width {doc['rows'][0]['width']}" if doc["rows"][0].get("width") else "")
             + ".\n",
             "| case | images/s | speed-up vs naive Keras | step time vs phase 1 | "
             "fraction of matmul peak |",
             "|---|---|---|---|---|"]
    loss_only = [r for r in doc["rows"] if "step_ms" in r]
    for r in doc["rows"]:
        if "step_ms" in r:  # a loss-only row, summarized below the table
            continue
        speed = f"{r['speedup_vs_naive']:.2f}x" if "speedup_vs_naive" in r else ""
        step = f"{r['step_time_vs_phase1']:.3f}" if "step_time_vs_phase1" in r else ""
        lines.append(f"| {r['benchmark_case']} | {r['images_per_s']:.0f} | {speed} | {step} | "
                     f"{r['fraction_of_matmul_peak']:.3f} |")
    if loss_only:
        lines.append("\nEach loss alone (forward + gradient on a batch of 48-bit codes), in ms "
                     "and as a fraction of one phase-1 step: " + ", ".join(
                         f"{r['method']} {r['step_ms']:.2f} ms ({r['fraction_of_phase1_step']:.4f})"
                         for r in loss_only) + ".")
    return "\n".join(lines) + "\n"


def spread_bits(rows):
    """The code lengths of `phase2_spread` rows' ``map_<bits>`` fields, ascending."""
    return sorted({int(k[len("map_"):]) for r in rows for k in r if k.startswith("map_")})


def spread_summary_lines(rows):
    """Per run and method (`row_method`), mean mAP over the rows of every seed: of the
    results file's phase 2, of the reruns, and of all of them (pooled, so a seed with more
    reruns weighs more)."""
    groups = defaultdict(list)
    for r in rows:
        groups[r["run"], row_method(r)].append(r)
    bits = spread_bits(rows)
    lines = ["Mean over every seed's rows of the results file's phase 2 / the reruns / all "
             "of them (plain codes):\n",
             "| run | method | seeds | reruns | " + " | ".join(f"{b} bits" for b in bits) + " |",
             "|" + "---|" * (4 + len(bits))]
    for (run, method), group in groups.items():
        reruns = [r for r in group if r["phase2"] != "results file"]
        if not reruns:
            continue
        parts = ([r for r in group if r["phase2"] == "results file"], reruns, group)
        cells = [" / ".join(f"{np.mean([r[f'map_{b}'] for r in part]):.4f}" for part in parts)
                 for b in bits]
        lines.append(f"| {run} | {method} | {len({r['seed'] for r in group})} | "
                     f"{len(reruns)} | " + " | ".join(cells) + " |")
    return lines


def spread_seed_lines(rows):
    """Per run, method and seed with reruns: the mean mAP of every phase 2 held (the results
    file's and the reruns), and for a peer its difference from the exponentiated loss's
    mean on the same run and seed."""
    groups = defaultdict(list)
    for r in rows:
        groups[r["run"], row_method(r), r["seed"]].append(r)
    bits = spread_bits(rows)
    means = {key: {b: np.mean([r[f"map_{b}"] for r in group]) for b in bits}
             for key, group in groups.items()}
    lines = ["Per seed, mean of every phase 2 held (a peer's difference from the "
             "exponentiated loss's in brackets):\n",
             "| run | method | seed | phase 2 runs | "
             + " | ".join(f"{b} bits" for b in bits) + " |",
             "|" + "---|" * (4 + len(bits))]
    for (run, method, seed), group in groups.items():
        if len(group) < 2:
            continue
        own = means[run, method, seed]
        base = means.get((run, "exponentiated", seed)) if method != "exponentiated" else None
        cells = [f"{own[b]:.4f}" + (f" ({own[b] - base[b]:+.4f})" if base else "")
                 for b in bits]
        lines.append(f"| {run} | {method} | {seed} | {len(group)} | " + " | ".join(cells)
                     + " |")
    return lines


def phase2_spread_section(doc):
    rows = [{"run": r["run"], "method": row_method(r), **r} for r in doc["rows"]]
    # reruns added later (--more) are listed beside the earlier ones of their seed
    first = {key: i for i, key in enumerate(dict.fromkeys((r["run"], r["method"])
                                                          for r in rows))}
    rows.sort(key=lambda r: (first[r["run"], r["method"]], r["seed"]))
    return generic_section({**doc, "rows": rows}) + "\n" + "\n".join(
        spread_summary_lines(rows) + [""] + spread_seed_lines(rows)) + "\n"


def classifier_bound_section(doc):
    # rows written before the encoding and method fields are of plain exponentiated codes
    rows = [{**r, "encoding": row_encoding(r), "method": row_method(r)}
            for r in doc["rows"]]
    return generic_section({**doc, "rows": rows})


def fit_temperature_section(doc):
    """`fit_temperature`'s rows, and per seed its held-out classifier: accuracy and its own
    query-class order, which the codes approach; with capped-codebook rows, first the two
    codebooks side by side at the best temperature (`codebook_summary`)."""
    lines = [f"Seed {seed}: the held-out classifier labels {facts['query_accuracy']:.3f} of "
             f"the validation queries and {facts['unseen_accuracy']:.3f} of the unseen "
             f"images right; its own query-class order scores {facts['map_query_class']:.4f} "
             f"(phase 1 {facts['wall_s_pretrain']:.0f} s)." for seed, facts in doc["seeds"].items()]
    return generic_section(doc, codebook_summary(doc)) + "\n" + "\n".join(lines) + "\n"


def codebook_summary(doc):
    """Lines comparing fitted codes on `class_codebook`'s and `capped_codebook`'s words at
    ``best_temperature``, mean ``val_map`` over the seeds by length (none without capped
    rows)."""
    temperature = doc["best_temperature"]
    means = {}
    for r in doc["rows"]:
        if r["temperature"] == temperature:
            means.setdefault((r["method"], r["bits"]), []).append(r["val_map"])
    capped = sorted(bits for method, bits in means if method == "fitted-capped-asymmetric")
    if not capped:
        return []
    lines = [f"Fitted codes at T = {temperature}, mean val_map over the seeds, by codebook:", "",
             "| bits | max-min codebook | capped codebook | capped - max-min |",
             "|---|---|---|---|"]
    for bits in capped:
        plain = np.mean(means["fitted-asymmetric", bits])
        other = np.mean(means["fitted-capped-asymmetric", bits])
        lines.append(f"| {bits} | {plain:.4f} | {other:.4f} | {other - plain:+.4f} |")
    return lines + ["", "Every row:", ""]


def code_design_section(doc):
    """`code_design`'s study: each setting of a variant with at most two, the best one
    (highest ``val_map`` averaged over the seeds) of a variant with more, beside fitted
    codes' best, then every row. Only settings scored on every seed count."""
    by_setting = {}
    for r in doc["rows"]:
        by_setting.setdefault((r["variant"], r["setting"]), {})[r["seed"]] = r["val_map"]
    seeds = sorted({r["seed"] for r in doc["rows"]})
    complete = {k: np.mean(list(v.values())) for k, v in by_setting.items()
                if len(v) == len(seeds)}
    fitted = max(v for (variant, _), v in complete.items() if variant == "fitted")
    lines = [f"Mean over seeds {seeds} (12 bits), against fitted codes:", "",
             "| variant | setting | mean val_map | vs fitted | per seed |",
             "|---|---|---|---|---|"]
    for variant in dict.fromkeys(variant for variant, _ in complete):
        settings = [(s, s, v) for (name, s), v in complete.items() if name == variant]
        if len(settings) > 2:
            setting, _, value = max(settings, key=lambda item: item[2])
            settings = [(setting, f"{setting} (best of {len(settings)})", value)]
        for setting, label, value in settings:
            per_seed = " / ".join(f"{by_setting[variant, setting][seed]:.4f}" for seed in seeds)
            lines.append(f"| {variant} | {label} | {value:.4f} | {value - fitted:+.4f} | "
                         f"{per_seed} |")
    return generic_section(doc, lines + ["", "Every row:", ""])


def generic_section(doc, summary=()):
    """Every row of ``doc`` as a table, after its header, settings and ``summary`` lines."""
    rows = doc["rows"]
    keys = list(dict.fromkeys(k for r in rows for k in r))
    settings = ", ".join(f"{k}={v}" for k, v in doc.items()
                         if k not in ("benchmark", "created", "machine", "versions", "rows")
                         and isinstance(v, (int, float, str)))
    lines = [f"### {doc['benchmark']}\n", header(doc)]
    if settings:
        lines.append(f"Settings: {settings}.\n")
    lines += [*summary, "| " + " | ".join(keys) + " |",
             "|" + "---|" * len(keys)]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(k, "")) for k in keys) + " |")
    return "\n".join(lines) + "\n"


def _cell(value):
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def main():
    notes = (HERE / "notes.md").read_text() if (HERE / "notes.md").exists() else ""
    docs = [load(path) for path in sorted(RESULTS.glob("*.json"))]
    reproductions = [d for d in docs if is_reproduction(d)]
    sections = [overview_section(reproductions)] if reproductions else []
    ensemble_sizes = {d["benchmark"]: d.get("config", {}).get("ensemble_size", 1)
                      for d in reproductions}
    for doc in docs:
        name = doc["benchmark"]
        if is_reproduction(doc):
            sections.append(reproduction_section(doc, ensemble_sizes))
        elif name == "map_speed":
            sections.append(map_speed_section(doc))
        elif name.startswith("speed"):
            sections.append(speed_section(doc))
        elif name == "phase2_spread":
            sections.append(phase2_spread_section(doc))
        elif name == "classifier_bound":
            sections.append(classifier_bound_section(doc))
        elif name.startswith("fit_temperature"):
            sections.append(fit_temperature_section(doc))
        elif name.startswith("code_design"):
            sections.append(code_design_section(doc))
        else:
            sections.append(generic_section(doc))
    text = ("# Benchmark results\n\nGenerated by `benchmarks/report.py` from "
            "`benchmarks/results/*.json`; do not edit by hand.\n\n" + "\n".join(sections)
            + ("\n" + notes if notes else ""))
    (HERE / "RESULTS.md").write_text(text)
    print(f"wrote {HERE / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
