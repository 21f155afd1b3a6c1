"""What the commands print after a run, read from the run's metadata in this one place (the keys
are those the assets in ``defs/`` write)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import click


def _value(metadata: dict[str, dict[str, Any]], asset: str, key: str, default: Any = None) -> Any:
    entry = metadata.get(asset, {}).get(key)
    return default if entry is None else entry.value


@dataclass(frozen=True)
class RunSummary:
    weights: str | None  # which weights the baseline embeddings used
    method: str | None  # how deer_assignments matched
    assigned: int | None
    considered: int | None
    threshold: float | None
    assignment_run: str | None
    live_assignment_rate: str | None  # rates as the UI shows them: '93.9%' (or why there is none)
    live_false_match_rate: str | None
    live_buck_misidentification_rate: str | None
    antler_point_counts: dict | str | None
    evaluation_table: str | None  # reid_evaluation's headline table (markdown)
    comparison_table: str | None  # embedding_report's before/after table (markdown)
    publish_table: str | None  # published_embeddings' decision per family (markdown)
    model: dict[str, Any] | None  # finetuned_reid_model: version, guard status and line, best val figures, device
    antlers: dict[str, Any] | None = None  # annotations imported, keypoint model, its predictions, the constraint
    marks: dict[str, Any] | None = None  # physical_features: recorded marks, body size classes

    @classmethod
    def from_metadata(cls, metadata: dict[str, dict[str, Any]]) -> RunSummary:
        def v(asset: str, key: str) -> Any:
            return _value(metadata, asset, key)

        model = None
        if "finetuned_reid_model" in metadata:
            model = {k: v("finetuned_reid_model", k) for k in ("model_version", "status", "guard", "best_val_rank1",
                                                               "best_val_mAP", "best_epoch", "device")}
        antlers = {
            "annotated": v("antler_annotations", "buck_detections_annotated"),
            "model_version": v("antler_detector", "model_version"),
            "started_from": v("antler_detector", "started_from"),
            "train_photos": v("antler_detector", "train_photos"),
            "train_seconds": v("antler_detector", "train_seconds"),
            "predictions": v("antler_features", "predictions"),
            "live_vetoes": v("deer_assignments", "changed_by_antler_constraint"),
            "report_constraint": v("embedding_report", "antler_constraint"),
        }
        marks = {k: v("physical_features", k) for k in ("marks_imported", "deer_with_marks", "body_size_measured",
                                                          "body_size_from_age_class", "body_size_recorded",
                                                          "body_size_classes")}
        return cls(
            marks=marks if marks["deer_with_marks"] is not None else None,
            antlers=antlers if any(x is not None for x in antlers.values()) else None,
            weights=v("baseline_embeddings", "weights"),
            method=v("deer_assignments", "method"),
            assigned=v("deer_assignments", "assigned"),
            considered=v("deer_assignments", "detections_considered"),
            threshold=v("deer_assignments", "threshold"),
            assignment_run=v("deer_assignments", "assignment_run"),
            live_assignment_rate=v("reid_evaluation", "live_assignment_rate"),
            live_false_match_rate=v("reid_evaluation", "live_false_match_rate"),
            live_buck_misidentification_rate=v("reid_evaluation", "live_buck_misidentification_rate"),
            antler_point_counts=v("reid_evaluation", "antler_point_count_accuracy"),
            evaluation_table=v("reid_evaluation", "summary"),
            comparison_table=v("embedding_report", "comparison"),
            publish_table=v("published_embeddings", "publish"),
            model=model,
        )

    def echo_metrics(self) -> None:
        """Live matching, the held-out evaluation and (when there) the before/after table."""
        if self.method is not None:
            click.echo(f"      live matching ({self.method}): assigned {self.assigned}/{self.considered} unreviewed "
                       f"detections at threshold {self.threshold:.2f}")
        if self.live_assignment_rate is not None:
            fmr = self.live_false_match_rate
            click.echo(f"      live assignment rate {self.live_assignment_rate}, live false-match rate {fmr}")
            bmr = self.live_buck_misidentification_rate
            click.echo(f"      live buck misidentification rate (bucks assigned to a wrong buck / bucks assigned) {bmr}")
        if self.model is not None and self.model.get("guard"):
            click.echo(f"      fine-tuned model {self.model['model_version']}: {self.model['guard']}")
        a = self.antlers or {}
        if a.get("annotated") is not None:
            click.echo(f"      antler annotations imported: {a['annotated']} buck detections")
        if a.get("model_version") is not None:
            click.echo(f"      antler keypoint model {a['model_version']} from {a['started_from']}, "
                       f"{a['train_photos']} training photos, trained in {a['train_seconds']:.0f} s")
        if a.get("predictions") is not None:
            click.echo(f"      antler keypoints predicted: {a['predictions']}")
        if a.get("live_vetoes") is not None:
            click.echo(f"      live matching decisions changed by the antler constraint: {a['live_vetoes']}")
        if a.get("report_constraint") is not None:
            click.echo(f"      '+ antler constraint' row: {a['report_constraint']}")
        if isinstance(self.antler_point_counts, dict):
            for source, label in (("model", "keypoint model's predictions"), ("annotations", "imported annotations")):
                pc = self.antler_point_counts.get(source) or {}
                if not pc.get("detections"):
                    click.echo(f"      antler point counts ({label}): no buck detection scored")
                    continue
                err = pc.get("keypoint_error")
                click.echo(f"      antler point counts ({label}), exact per side: left {pc['left_exact']:.3f}, right "
                           f"{pc['right_exact']:.3f}, total {pc['total_exact']:.3f} over {pc['detections']} buck "
                           "detections" + (f"; keypoint error {err:.3f} of the box diagonal" if err is not None else ""))
        elif self.antler_point_counts is not None:
            click.echo(f"      antler point counts: {self.antler_point_counts}")
        if self.marks is not None:
            m = self.marks
            classes = ", ".join(f"{n} {c}" for c, n in (m["body_size_classes"] or {}).items())
            click.echo(f"      physical features: marks recorded for {m['deer_with_marks']} deer (imported: "
                       f"{m['marks_imported']}); body size measured for {m['body_size_measured']} deer, from the age "
                       f"class for {m['body_size_from_age_class']}, recorded for {m['body_size_recorded']} ({classes})")
        if self.evaluation_table is not None:
            click.echo("\nBaseline, held-out protocol (reid_evaluation):")
            click.echo(self.evaluation_table)
        if self.comparison_table is not None:
            click.echo("\nBefore/after on the same test queries (embedding_report):")
            click.echo(self.comparison_table)
