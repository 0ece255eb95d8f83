"""Encode a protocol's queries and database with a trained encoder and score the ranking.

Example:

>>> report = evaluate_encoder(hasher, split)
>>> report["map"], report["precision_r2"]
"""

from tfhash.metrics import retrieval_report
from tfhash.model import encode, encode_heads  # noqa: F401 (public here too)


def evaluate_encoder(model, split, batch_size=256, verbose="auto", query_model=None):
    """mAP (both tie modes), precision/recall at radius 2 and the PR curve on ``split``.

    ``query_model`` codes the queries when the codes are asymmetric (e.g.
    `tfhash.model.build_query_hasher` of ``model``); ``None``: ``model`` codes both.
    Returns the `retrieval_report` dict plus ``query_codes`` and ``database_codes``.
    """
    q_codes = encode(query_model or model, split.query.images, batch_size, verbose)
    db_codes = encode(model, split.database.images, batch_size, verbose)
    return evaluate_codes(q_codes, db_codes, split)


def evaluate_codes(q_codes, db_codes, split):
    """The report of `evaluate_encoder` from codes already computed."""
    report = retrieval_report(q_codes, split.query.labels, db_codes, split.database.labels)
    report["query_codes"] = q_codes
    report["database_codes"] = db_codes
    return report


def summary_row(report, **fields):
    """A results row (DESIGN.md shape) from a report: headline figures only."""
    row = dict(fields)
    row.update({k: round(float(report[k]), 6) for k in ("map", "map_index", "precision_r2",
                                                         "recall_r2")})
    return row


def format_table(rows, columns):
    """A plain-text table of ``rows`` (dicts) over ``columns``."""
    cells = [[str(c) for c in columns]]
    for row in rows:
        cells.append([_fmt(row.get(c, "")) for c in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
