"""The dataset's figures in an X-ray report: what share of each kind of token is trained, rows by
trained-token count, lengths, truncation and the disagreements with the policy."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .core import XRayReport

#: Bucket edges (upper bounds, inclusive) for rows by trained-token count and by length.
TRAINED_BUCKETS = (0, 4, 16, 64, 256, 1024)
LENGTH_BUCKETS = (64, 128, 256, 512, 1024, 2048, 4096)


def bucket_label(edges: tuple[int, ...], i: int) -> str:
    """The words for bucket ``i`` of ``edges`` ("0", "1-4", "more than 1024")."""
    if i == len(edges):
        return f"more than {edges[-1]}"
    lo = edges[i - 1] + 1 if i else 0
    return str(edges[i]) if lo == edges[i] else f"{lo}-{edges[i]}"


def histogram(values: list[int], edges: tuple[int, ...]) -> list[tuple[str, int]]:
    """``(label, count)`` per bucket of ``edges`` (the last bucket holds everything above)."""
    counts = [0] * (len(edges) + 1)
    for v in values:
        counts[next((i for i, e in enumerate(edges) if v <= e), len(edges))] += 1
    return [(bucket_label(edges, i), c) for i, c in enumerate(counts)]


def dataset_stats(report: XRayReport) -> dict:
    """Figures of the whole report (see :meth:`~sftviz.xray.core.XRayReport.stats`)."""
    built = [rx for rx in report.rows if not rx.error and not rx.dropped]
    total, trained = Counter(), Counter()
    for rx in built:
        for seg, t in zip(rx.segments, rx.trained):
            total[seg] += 1
            trained[seg] += t
    by_segment = {
        seg: {"tokens": n, "trained": trained[seg], "share": trained[seg] / n} for seg, n in total.most_common()
    }
    n_trained = [sum(rx.trained) for rx in built]
    differ = [rx for rx in built if rx.disagreements]
    kinds = Counter(kind for rx in built for _, kind in rx.disagreements)
    return {
        "rows": len(report.rows),
        "built": len(built),
        "failed": sum(1 for rx in report.rows if rx.error),
        "dropped": sum(1 for rx in report.rows if rx.dropped),
        "tokens": sum(total.values()),
        "trained": sum(n_trained),
        "by_segment": by_segment,
        "rows_by_trained": histogram(n_trained, TRAINED_BUCKETS),
        "lengths": histogram([len(rx.input_ids) for rx in built], LENGTH_BUCKETS),
        "truncated": sum(1 for rx in built if any(m["trained"] for m in rx.missing)),
        "rows_differ": len(differ),
        "extra": kinds["extra"],
        "missing": kinds["missing"],
        "no_policy": sum(1 for rx in report.rows if rx.policy_error),
    }
