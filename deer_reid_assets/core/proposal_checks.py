"""A warning for degenerate proposals: a matcher that sends most detections to one deer, or whose
similarities are bunched near 1, is not telling deer apart (random features do that)."""

from __future__ import annotations

from collections import Counter

import numpy as np


def degenerate_proposals(proposals: list[tuple[str | None, float | None]], *, max_share: float = 0.5,
                         min_spread: float = 0.02, high: float = 0.95, min_n: int = 10) -> str | None:
    """One line saying why the (best deer, similarity) proposals look degenerate; None when they do not
    (or when there are fewer than ``min_n`` to judge)."""
    deer = [d for d, _ in proposals if d]
    sims = np.array([s for _, s in proposals if s is not None], dtype=float)
    if len(deer) < min_n:
        return None
    reasons = []
    top, count = Counter(deer).most_common(1)[0]
    if count / len(deer) > max_share:
        reasons.append(f"{100 * count / len(deer):.3g}% of the proposals go to one deer ({top[:8]})")
    if len(sims) and float(np.median(sims)) >= high and float(np.percentile(sims, 90) - np.percentile(sims, 10)) < min_spread:
        reasons.append(f"similarities are bunched near 1 (median {np.median(sims):.3g}, "
                       f"10-90% spread {np.percentile(sims, 90) - np.percentile(sims, 10):.3g})")
    return ("degenerate proposals: " + "; ".join(reasons) + " - the features do not tell these deer apart") \
        if reasons else None
