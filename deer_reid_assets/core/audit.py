"""The audit of a staged embedding version, before it may replace the published one.

Checks, each reported with what it measured:

* **complete**: the version finished (every chunk written);
* **coverage**: every usable crop has a vector in it;
* **finite, unit norm**: every stored vector has norm 1 (pgvector's ``vector_norm``);
* **no regression**: on the validation queries of the stored split, rank-1, mAP and the assignment
  rate at FMR <= budget are not worse than the published version's by more than ``tolerance``
  (passes trivially when nothing of the family is published yet, or it *is* the published one).

It also says which assignments would change if the version replaced the published one (a count
and a sample of crops: the detection, an example of the deer it is assigned now, and of the deer
it would be assigned), so a person can judge before anything is published.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from deer_reid_assets.core import families
from deer_reid_assets.core.embed.versions import coverage, published_version
from deer_reid_assets.core.evaluation.profiles import match_to_profiles
from deer_reid_assets.core.evaluation.protocol import evaluate_version
from deer_reid_assets.core.evaluation.streamed import ProfileSums, unit_rows
from deer_reid_assets.core.store import audits
from deer_reid_assets.core.store import vectors as stored_vectors

REGRESSION_METRICS = ("rank1", "mAP", "best_assignment_rate")


@dataclass
class AuditResult:
    version: str
    family: str
    against: str | None
    checks: list[dict] = field(default_factory=list)  # {"check", "passed", "detail"}
    comparison: pd.DataFrame = field(default_factory=pd.DataFrame)
    changed: int = 0
    compared: int = 0
    sample: list[dict] = field(default_factory=list)  # {"detection", "crop", "now", "now_crop", "then", "then_crop"}
    ab_table: pd.DataFrame = field(default_factory=pd.DataFrame)  # fine-tuned vs the published configuration
    beats_published: bool | None = None  # the A/B verdict (fine-tuned only); None = no A/B was needed
    ab_detail: str = ""
    ab_configurations: dict = field(default_factory=dict)  # {name: {"models": {version: w}, "threshold": t}}

    @property
    def promotable(self) -> bool:
        """Sound (every check passed) and, where an A/B applies, better than what is published.
        A sound model that is not better passes its check (it is a valid version, and a failed
        blocking check would hold back everything downstream) but is not published."""
        return self.passed and self.beats_published is not False

    @property
    def passed(self) -> bool:
        return all(c["passed"] for c in self.checks)

    def markdown(self) -> str:
        lines = [f"**{self.version}** ({self.family}) against published **{self.against or 'nothing'}**: "
                 + ("PASSED" if self.passed else "FAILED"), "", "| check | result | detail |", "| --- | --- | --- |"]
        lines += [f"| {c['check']} | {'pass' if c['passed'] else 'FAIL'} | {c['detail']} |" for c in self.checks]
        if not self.comparison.empty:
            lines += ["", self.comparison.to_markdown(index=False, floatfmt=".3f")]
        if not self.ab_table.empty:
            verdict = "publish" if self.beats_published else "do NOT publish"
            lines += ["", f"A/B on the test queries ({self.ab_detail}): **{verdict}**", "",
                      self.ab_table.to_markdown(index=False, floatfmt=".3f")]
        lines += ["", f"Assignments that would change: **{self.changed}** of {self.compared} unreviewed detections."]
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"version": self.version, "family": self.family, "against": self.against, "passed": self.passed,
                "promotable": self.promotable, "beats_published": self.beats_published, "ab_detail": self.ab_detail,
                "checks": self.checks, "comparison": self.comparison.to_dict(orient="records"),
                "ab": self.ab_table.to_dict(orient="records"), "ab_configurations": self.ab_configurations,
                "changed": self.changed, "compared": self.compared, "sample": self.sample}


def _val_summary(engine: sa.Engine, version: str, threshold: float, max_fmr: float, seed: int) -> dict:
    report = evaluate_version(engine, version, threshold=threshold, query_set="val", seed=seed,
                              max_false_match_rate=max_fmr)
    summary = report.summary()
    summary["best_assignment_rate"] = summary["best_assignment_rate"] or 0.0
    return summary


def audit_version(engine: sa.Engine, version: str, *, tolerance: float = 0.02, threshold: float = 0.40,
                  max_false_match_rate: float = 0.05, seed: int = 0, sample_size: int = 6) -> AuditResult:
    """Audit ``version`` against the published version of its family (see the module docstring)."""
    with engine.connect() as conn:
        row = audits.version_family_status(conn, version)
        if row is None:
            raise ValueError(f"no embedding version {version!r}")
        family, status = row
        against = published_version(conn, family)
        embedded, total = coverage(conn, version)
        bad_norms = audits.norm_violations(conn, version)
    result = AuditResult(version=version, family=family, against=against)
    result.checks.append({"check": "complete", "passed": status in ("complete", "published"), "detail": status})
    result.checks.append({"check": "coverage", "passed": embedded == total and total > 0,
                          "detail": f"{embedded} of {total} usable crops embedded"})
    result.checks.append({"check": "finite, unit norm", "passed": bad_norms == 0,
                          "detail": f"{bad_norms} vectors off unit norm"})
    if family in families.FAMILIES and families.get(family).ab_test and against != version:
        _ab_against_published_configuration(engine, version, result, threshold, max_false_match_rate, seed)
    if against is None or against == version:
        result.checks.append({"check": "no regression", "passed": True,
                              "detail": "nothing else published to compare with" if against is None
                              else "this is the published version"})
        return result
    candidate = _val_summary(engine, version, threshold, max_false_match_rate, seed)
    current = _val_summary(engine, against, threshold, max_false_match_rate, seed)
    rows = []
    for key in REGRESSION_METRICS:
        delta = candidate[key] - current[key]
        rows.append({"metric (val queries)": key, "candidate": candidate[key], "published": current[key],
                     "delta": delta, "ok": delta >= -tolerance})
    result.comparison = pd.DataFrame(rows)
    worse = [r["metric (val queries)"] for r in rows if not r["ok"]]
    result.checks.append({"check": "no regression", "passed": not worse,
                          "detail": f"worse by more than {tolerance} in {', '.join(worse)}" if worse
                          else f"within {tolerance} of the published version on every metric"})
    result.changed, result.compared, result.sample = _would_change(engine, version, against, threshold, sample_size)
    return result


AB_METRICS = ("rank1", "mAP", "best_assignment_rate", "mean_true_match_similarity")


def _ab_against_published_configuration(engine: sa.Engine, version: str, result: AuditResult, threshold: float,
                                        max_false_match_rate: float, seed: int) -> None:
    """A/B on the TEST queries: the fine-tuned model is published only if it beats what the matcher
    uses now (the tuned ensemble, else the baseline): higher mAP and rank-1 not lower."""
    from deer_reid_assets.core.embed.versions import latest_version
    from deer_reid_assets.core.evaluation.protocol import evaluate_configurations
    from deer_reid_assets.core.matcher_setup import matcher_setup

    try:
        models, current_threshold, method = matcher_setup(engine, "auto", threshold, include_finetuned=False)
    except ValueError:  # nothing published yet (first run): compare with the newest baseline version
        with engine.connect() as conn:
            baseline = latest_version(conn, families.BASELINE)
        if baseline is None:
            result.beats_published = False
            result.ab_detail = "nothing to compare with yet: re-run finetuned_embeddings once a baseline exists"
            return
        models, current_threshold, method = {baseline.version: 1.0}, threshold, "baseline (newest, unpublished)"
    result.ab_configurations = {"fine-tuned": {"models": {version: 1.0}, "threshold": threshold},
                                f"published {method}": {"models": dict(models), "threshold": current_threshold}}
    reports = evaluate_configurations(engine, {"fine-tuned": {version: 1.0}, f"published {method}": models},
                                      thresholds={f"published {method}": current_threshold}, threshold=threshold,
                                      query_set="test", max_false_match_rate=max_false_match_rate, seed=seed)
    rows = []
    for key in AB_METRICS:
        values = {name: (r.summary()[key] or 0.0) for name, r in reports.items()}
        rows.append({"metric (test queries)": key, **values})
    result.ab_table = pd.DataFrame(rows)
    new, old = (reports[n].summary() for n in ("fine-tuned", f"published {method}"))
    better = new["mAP"] > old["mAP"] and new["rank1"] >= old["rank1"]
    result.beats_published = better
    result.ab_detail = (f"test mAP {new['mAP']:.3f} vs {old['mAP']:.3f}, rank-1 {new['rank1']:.3f} vs "
                        f"{old['rank1']:.3f} ({method})")


def _assign_streamed(conn: sa.Connection, version: str, threshold: float, chunk: int = 2000) -> dict[str, str | None]:
    """What the single-model matcher would assign with ``version`` (profiles from the labels),
    reading the vectors ``chunk`` at a time: labelled ones for the profiles, then the queries."""
    rows = audits.valid_detections(conn)
    ids = [r[0] for r in rows]
    embedded = stored_vectors.embedded(conn, version, ids)
    labelled = [r for r, e in zip(rows, embedded) if e and r[2] and r[1]]
    queries = [r for r, e in zip(rows, embedded) if e and not r[2]]
    del rows, ids
    if not labelled or not queries:
        return {r[0]: None for r in queries}
    sums = ProfileSums([r[1] for r in labelled], [r[4] or "unknown" for r in labelled])
    for start in range(0, len(labelled), chunk):
        _, matrix = stored_vectors.read_chunk(conn, version, [r[0] for r in labelled[start:start + chunk]])
        sums.add(start, unit_rows(matrix))
    profiles = sums.profiles()
    out: dict[str, str | None] = {}
    for start in range(0, len(queries), chunk):
        part = queries[start:start + chunk]
        _, matrix = stored_vectors.read_chunk(conn, version, [r[0] for r in part])
        matches = match_to_profiles(matrix, profiles, [r[3] for r in part])
        out.update((r[0], name if sim is not None and np.isfinite(sim) and sim >= threshold else None)
                   for r, name, sim in zip(part, matches.best_name, matches.best_similarity))
    return out


def _would_change(engine: sa.Engine, version: str, against: str, threshold: float, sample_size: int):
    with engine.connect() as conn:
        new, old = _assign_streamed(conn, version, threshold), _assign_streamed(conn, against, threshold)
        common = [d for d in new if d in old]
        changed = sorted(d for d in common if new[d] != old[d])
        shown = changed[:sample_size]
        crops, example, names = audits.crop_paths(conn, shown), audits.example_crops(conn), audits.deer_names(conn)
    sample = [{"detection": d, "crop": crops.get(d), "now": names.get(old[d]) if old[d] else None,
               "now_crop": example.get(old[d]) if old[d] else None,
               "then": names.get(new[d]) if new[d] else None, "then_crop": example.get(new[d]) if new[d] else None}
              for d in shown]
    return len(changed), len(common), sample


def sample_image(sample: list[dict], size: int = 96) -> bytes | None:
    """Rows of crops side by side: the detection | the deer it is assigned now | the deer it would be."""
    if not sample:
        return None
    import io

    from PIL import Image, ImageDraw

    sheet = Image.new("RGB", (3 * size + 20, len(sample) * (size + 16) + 16), "white")
    draw = ImageDraw.Draw(sheet)
    for col, title in enumerate(("detection", "assigned now", "would be")):
        draw.text((col * (size + 10) + 2, 2), title, fill="black")
    for row, item in enumerate(sample):
        y = 16 + row * (size + 16)
        for col, (path, label) in enumerate(((item["crop"], ""), (item["now_crop"], item["now"] or "unassigned"),
                                             (item["then_crop"], item["then"] or "unassigned"))):
            x = col * (size + 10)
            if path and Path(path).is_file():
                with Image.open(path) as img:
                    sheet.paste(img.convert("RGB").resize((size, size)), (x, y))
            draw.text((x + 2, y + size + 1), label[:16], fill="black")
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()
