"""The dashboard's figures, computed from the database, and a small inline SVG bar chart."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

import sqlalchemy as sa

from deer_reid_assets.core.evaluation.protocol import live_assignment_stats
from deer_reid_assets.core.store import review as store


@dataclass
class Dashboard:
    valid_detections: int
    assigned: int
    backlog: int
    reviewed: int
    audited: int              # audit samples a person decided
    audited_wrong: int        # ... where the matcher's deer was wrong (another deer, a new deer, not a deer)
    corrections_per_week: list[tuple[str, int]]
    evaluations: list[dict]   # each reid_evaluation run: when, versions, its test-query figures
    bucks_assigned: int = 0       # bucks the matcher gave a deer, where ground truth or a review says who
    bucks_misidentified: int = 0  # ... given another buck

    @property
    def assignment_rate(self) -> float | None:
        return self.assigned / self.valid_detections if self.valid_detections else None

    @property
    def false_match_rate(self) -> float | None:
        """Wrong among the audited assignments; None before any audit sample is reviewed."""
        return self.audited_wrong / self.audited if self.audited else None

    @property
    def buck_misid_rate(self) -> float | None:
        """Bucks assigned to a wrong buck / bucks assigned; None before any is known."""
        return self.bucks_misidentified / self.bucks_assigned if self.bucks_assigned else None


def compute(conn: sa.Connection) -> Dashboard:
    counts = store.dashboard_counts(conn)
    audits = [d for d in store.latest_decisions(conn) if d["queue_reason"] == "audit" and d["proposed_deer_id"]]
    wrong = sum(1 for d in audits if d["action"] == "not_deer" or d["final_deer_id"] != d["proposed_deer_id"])
    # live: unreviewed assignments against hidden ground truth, plus reviewed ones against the person's decision
    live = live_assignment_stats(conn)
    reviewed = store.reviewed_buck_assignments(conn)
    return Dashboard(valid_detections=counts["valid"], assigned=counts["with_deer"], backlog=counts["backlog"],
                     reviewed=counts["reviewed"], audited=len(audits), audited_wrong=wrong,
                     corrections_per_week=store.corrections_per_week(conn),
                     bucks_assigned=live["bucks_assigned"] + reviewed["bucks_assigned"],
                     bucks_misidentified=live["bucks_misidentified"] + reviewed["bucks_misidentified"],
                     evaluations=[{"when": e["created_at"].strftime("%Y-%m-%d %H:%M"),
                                   "versions": ", ".join(f"{k}={v}" for k, v in sorted(e["versions"].items())),
                                   **{k: e["summary"].get(k) for k in ("rank1", "mAP", "assignment_rate",
                                                                       "false_match_rate")},
                                   "buck_misid_rate": e["buck_misid_rate"],
                                   "live_buck_misid_rate": e["live_buck_misid_rate"]}
                                  for e in store.evaluation_history(conn)])


def percent(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.3g}%"


def bar_svg(values: list[tuple[str, float]], *, title: str, width: int = 420, height: int = 160) -> str:
    """An inline SVG bar chart of (label, value); an empty chart says 'no data yet'."""
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{escape(title)}"><title>{escape(title)}</title>']
    if not values:
        parts.append(f'<text x="{width // 2}" y="{height // 2}" text-anchor="middle">no data yet</text></svg>')
        return "".join(parts)
    top = max(v for _, v in values) or 1.0
    n = len(values)
    slot = (width - 20) / n
    for i, (label, v) in enumerate(values):
        h = (height - 40) * v / top
        x = 10 + i * slot
        parts.append(f'<rect x="{x + slot * 0.1:.1f}" y="{height - 20 - h:.1f}" width="{slot * 0.8:.1f}" '
                     f'height="{h:.1f}" fill="#4a7a3a"><title>{escape(label)}: {v:g}</title></rect>')
        parts.append(f'<text x="{x + slot / 2:.1f}" y="{height - 24 - h:.1f}" font-size="11" '
                     f'text-anchor="middle">{v:g}</text>')
        parts.append(f'<text x="{x + slot / 2:.1f}" y="{height - 6}" font-size="10" '
                     f'text-anchor="middle">{escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)
