"""PNG figures: precision-recall curves, mAP against code length, a retrieval grid.

Example:

>>> plot_pr_curves({"12 bits": (precision, recall)}, "pr_curve.png")
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tfhash.io import atomic_path  # noqa: E402


def _save(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)


def plot_pr_curves(curves, path, title="Precision-recall (Hamming radius sweep)"):
    """One curve per entry of ``curves``: ``{label: (precision, recall)}``."""
    fig, ax = plt.subplots(figsize=(5, 4))
    for label, (precision, recall) in curves.items():
        ax.plot(recall, precision, marker=".", label=label)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)


def plot_map_vs_bits(series, path, title="mAP against code length"):
    """One line per entry of ``series``: ``{label: (bits, map_values)}``."""
    fig, ax = plt.subplots(figsize=(5, 4))
    for label, (bits, values) in series.items():
        ax.plot(bits, values, marker="o", label=label)
    ax.set_xticks(sorted({b for bits, _ in series.values() for b in bits}))
    ax.set(xlabel="bits", ylabel="mAP", ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)


def plot_tuning(rows, names, path, objective="val_map"):
    """Objective against each hyperparameter in ``names``, one panel each (log x if wide)."""
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.5), squeeze=False)
    scores = np.array([row[objective] for row in rows])
    for ax, name in zip(axes[0], names):
        values = np.array([row[name] for row in rows])
        ax.scatter(values, scores, c=scores, cmap="viridis")
        if values.min() > 0 and values.max() / values.min() > 20:
            ax.set_xscale("log")
        ax.set(xlabel=name, ylabel=objective)
        ax.grid(alpha=0.3)
    _save(fig, path)


def plot_retrieval_grid(query_images, hit_images, relevant, path, distances=None, n_hits=None):
    """A row per query: the query, then its hits (green frame: relevant, red: not).

    With ``relevant=None`` (labels unknown) the hits get neutral frames.
    """
    n_rows = len(query_images)
    n_hits = n_hits if relevant is None else relevant.shape[1]
    fig, axes = plt.subplots(n_rows, n_hits + 1, figsize=(1.1 * (n_hits + 1), 1.2 * n_rows),
                             squeeze=False)
    for r in range(n_rows):
        _show(axes[r, 0], query_images[r], "black", "query" if r == 0 else None)
        for c in range(n_hits):
            if relevant is None:
                colour = "tab:gray"
            else:
                colour = "tab:green" if relevant[r, c] else "tab:red"
            label = None if distances is None else f"d={int(distances[r, c])}"
            _show(axes[r, c + 1], hit_images[r][c], colour, label)
    _save(fig, path)


def _show(ax, image, colour, label):
    image = np.asarray(image)
    ax.imshow(image.squeeze(), cmap="gray" if image.shape[-1] == 1 else None)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_color(colour)
        spine.set_linewidth(2.5)
    if label:
        ax.set_title(label, fontsize=7)
