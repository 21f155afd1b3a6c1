"""Deer profiles and the matcher (core/matching.py) on hand-made vectors, against real PostgreSQL.

The vectors use only the values 1, 0.75, 0.5 and 0.25 on orthogonal axes, so every cosine
similarity below is exact in float32 (e.g. 0.75*e0 + 0.25*(7 other axes) has norm exactly 1 and
similarity exactly 0.75 with e0) and "exactly at the threshold" means exactly.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import pytest
import sqlalchemy as sa

from deer_reid_assets.core import matching
from deer_reid_assets.core.store import schema as t

DIM = t.EMBEDDING_DIM
VERSION = "r50-test"
FAMILY = "resnet50"
T0 = datetime(2026, 10, 1, 6, 0, tzinfo=UTC)
_serial = itertools.count()


# --- building a tiny world -----------------------------------------------------------------------
def vec(*parts: tuple[float, list[int] | int]) -> np.ndarray:
    """sum of value * e_axis over the given (value, axis or axes) pairs."""
    v = np.zeros(DIM, dtype=np.float32)
    for value, axes in parts:
        for axis in [axes] if isinstance(axes, int) else axes:
            v[axis] += value
    return v


def e(axis: int) -> np.ndarray:
    return vec((1.0, axis))


def add_version(conn, version: str = VERSION, family: str = FAMILY) -> None:
    conn.execute(sa.insert(t.reid_embedding_versions).values(
        version=version, model_family=family, weights_source="test", weights_id="hand-made",
        weights_description="hand-made vectors", config={}, status="complete", n_embeddings=0))


def add_deer(conn, name: str, sex: str, deer_id: str | None = None, feature_vector=None) -> str:
    values = dict(name=name, sex=sex)
    if deer_id:
        values["id"] = deer_id
    if feature_vector is not None:
        values["feature_vector"] = feature_vector
    return conn.execute(sa.insert(t.deer).values(**values).returning(t.deer.c.id)).scalar_one()


def add_detection(conn, classification: str, vector=None, *, deer_id=None, reviewed=False, valid=True,
                  version: str = VERSION) -> str:
    n = next(_serial)
    image_id = conn.execute(sa.insert(t.images).values(
        filename=f"p{n}.jpg", path=f"/photos/p{n}.jpg", timestamp=T0 + timedelta(hours=n),
        processing_status="completed").returning(t.images.c.id)).scalar_one()
    det = conn.execute(sa.insert(t.detections).values(
        image_id=image_id, bbox={"x": 0, "y": 0, "width": 50, "height": 50}, confidence=0.9,
        classification=classification, deer_id=deer_id, is_reviewed=reviewed, is_valid=valid,
    ).returning(t.detections.c.id)).scalar_one()
    if vector is not None:
        conn.execute(sa.insert(t.reid_embeddings).values(version=version, detection_id=det, embedding=vector))
    return det


def deer_of(engine) -> dict[str, str | None]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(t.detections.c.id, t.detections.c.deer_id)).all())


def profiles(engine, version: str = VERSION) -> dict[str, np.ndarray]:
    p = t.reid_deer_profiles
    with engine.connect() as conn:
        rows = conn.execute(sa.select(p.c.deer_id, p.c.vector).where(p.c.version == version)).all()
    return {r[0]: np.asarray(r[1], dtype=np.float32) for r in rows}


def normalised(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


# --- profiles ------------------------------------------------------------------------------------
def test_build_profiles_normalised_mean_mirror_and_legacy(engine):
    rng = np.random.default_rng(0)
    r = [normalised(rng.normal(size=DIM)).astype(np.float32) for _ in range(8)]
    with engine.begin() as conn:
        add_version(conn)
        add_version(conn, "r50-other")
        a = add_deer(conn, "Buck-A", "buck")
        b = add_deer(conn, "Doe-B", "doe")
        c = add_deer(conn, "Buck-C", "buck", feature_vector=r[5])  # a vector from before this pipeline
        d = add_deer(conn, "Doe-D", "doe", feature_vector=r[6])    # ... on a deer nobody labelled
        e_ = add_deer(conn, "Fawn-E", "fawn")
        a1 = add_detection(conn, "buck", r[0], deer_id=a, reviewed=True)
        add_detection(conn, "buck", r[1], deer_id=a, reviewed=True)
        conn.execute(sa.insert(t.reid_embeddings).values(version="r50-other", detection_id=a1, embedding=r[7]))
        add_detection(conn, "buck", r[7], deer_id=a, reviewed=False)             # matcher's, not a label
        add_detection(conn, "buck", r[7], deer_id=a, reviewed=True, valid=False)  # reviewed as not a deer
        add_detection(conn, "doe", r[2], deer_id=b, reviewed=True)
        add_detection(conn, "buck", r[3], deer_id=c, reviewed=True)
        add_detection(conn, "fawn", None, deer_id=e_, reviewed=True)               # labelled, no embedding
        add_detection(conn, "buck", r[4], reviewed=False)                          # unlabelled

    report = matching.build_profiles(engine, VERSION, FAMILY)

    assert (report.version, report.profiles, report.labelled_detections) == (VERSION, 3, 5)
    assert report.deer_without_embeddings == 1
    assert report.legacy_vectors_saved == 2
    expected = {a: normalised(r[0] + r[1]), b: r[2], c: r[3]}
    got = profiles(engine)
    assert set(got) == set(expected)
    for deer_id, v in expected.items():
        np.testing.assert_allclose(got[deer_id], v, atol=1e-6)
        assert np.linalg.norm(got[deer_id]) == pytest.approx(1.0, abs=1e-6)
    legacy = profiles(engine, matching.legacy_version(FAMILY))
    assert set(legacy) == {c, d}
    np.testing.assert_allclose(legacy[c], r[5], atol=1e-7)
    np.testing.assert_allclose(legacy[d], r[6], atol=1e-7)

    with engine.connect() as conn:
        rows = {row.id: row for row in conn.execute(sa.select(t.deer))}
        sizes = dict(conn.execute(sa.select(t.reid_deer_profiles.c.deer_id, t.reid_deer_profiles.c.n_detections)
                                  .where(t.reid_deer_profiles.c.version == VERSION)).all())
    assert sizes == {a: 2, b: 1, c: 1}
    for deer_id, v in expected.items():  # mirrored onto the deer table for the existing system
        np.testing.assert_allclose(np.asarray(rows[deer_id].feature_vector), v, atol=1e-6)
        assert rows[deer_id].embedding_version == VERSION
    np.testing.assert_allclose(np.asarray(rows[d].feature_vector), r[6], atol=1e-7)  # untouched
    assert rows[d].embedding_version == "v1_resnet50" and rows[e_].feature_vector is None

    # rebuilding: same profiles, the mirrored vectors are not mistaken for legacy ones
    again = matching.build_profiles(engine, VERSION, FAMILY)
    assert (again.profiles, again.legacy_vectors_saved) == (3, 0)
    legacy_again = profiles(engine, matching.legacy_version(FAMILY))
    assert set(legacy_again) == {c, d}
    np.testing.assert_allclose(legacy_again[c], r[5], atol=1e-7)

    # another version without mirroring leaves the deer table alone
    other = matching.build_profiles(engine, "r50-other", FAMILY, mirror_to_deer_table=False)
    assert other.profiles == 1
    np.testing.assert_allclose(profiles(engine, "r50-other")[a], r[7], atol=1e-6)
    with engine.connect() as conn:
        fv, ver = conn.execute(sa.select(t.deer.c.feature_vector, t.deer.c.embedding_version).where(t.deer.c.id == a)).one()
    np.testing.assert_allclose(np.asarray(fv), expected[a], atol=1e-6)
    assert ver == VERSION


# --- the matcher ---------------------------------------------------------------------------------
# Tie-break documented by the candidate query: ORDER BY cosine distance, then deer_id (uuid order).
# T_FIRST is inserted first and owns the lower axis, but T_SECOND has the smaller uuid: it wins.
T_FIRST = "f0000000-0000-4000-8000-000000000001"
T_SECOND = "0f000000-0000-4000-8000-000000000002"


@pytest.fixture
def world(engine):
    w = {}
    with engine.begin() as conn:
        add_version(conn)
        w["B1"] = add_deer(conn, "Buck-1", "buck")
        w["B2"] = add_deer(conn, "Buck-2", "buck")
        w["D1"] = add_deer(conn, "Doe-1", "doe")
        w["T_FIRST"] = add_deer(conn, "Twin-first", "buck", deer_id=T_FIRST)
        w["T_SECOND"] = add_deer(conn, "Twin-second", "buck", deer_id=T_SECOND)
        # labelled detections: each profile is exactly one axis
        for name, axis in (("B1", 0), ("B2", 1), ("D1", 2), ("T_FIRST", 3), ("T_SECOND", 4)):
            sex = "doe" if name == "D1" else "buck"
            w[f"label_{name}"] = add_detection(conn, sex, e(axis), deer_id=w[name], reviewed=True)
        w["above"] = add_detection(conn, "buck", vec((0.75, 0), (0.25, list(range(10, 17)))))           # 0.75 B1
        w["at"] = add_detection(conn, "buck", vec((0.5, [1, 20, 21, 22])))                                # 0.50 B2
        w["below"] = add_detection(conn, "buck", vec((0.25, [0] + list(range(30, 45)))))                  # 0.25 B1
        near_doe = vec((0.75, 2), (0.5, 1), (0.25, [50, 51, 52]))                                         # D1 .75, B2 .5
        w["sex_buck"] = add_detection(conn, "buck", near_doe)
        w["sex_unknown"] = add_detection(conn, "unknown", near_doe)
        w["sex_doe"] = add_detection(conn, "doe", vec((0.75, 0), (0.5, 2), (0.25, [53, 54, 55])))         # B1 .75, D1 .5
        w["tie"] = add_detection(conn, "unknown", vec((0.5, [3, 4, 60, 61])))                             # .5 and .5
        w["prev"] = add_detection(conn, "buck", vec((0.25, list(range(70, 86)))), deer_id=w["D1"])        # 0 to all
        w["reviewed_none"] = add_detection(conn, "buck", e(0), reviewed=True)      # reviewed: no deer
        w["invalid"] = add_detection(conn, "buck", e(0), valid=False)             # not a deer
        w["no_embedding"] = add_detection(conn, "buck", None)
    report = matching.build_profiles(engine, VERSION, FAMILY)
    assert report.profiles == 5
    return w


CONSIDERED = ["above", "at", "below", "sex_buck", "sex_unknown", "sex_doe", "tie", "prev"]


def test_assign_threshold_sex_rule_and_tie(engine, world):
    w = world
    before = deer_of(engine)
    for v in profiles(engine).values():
        assert np.count_nonzero(v) == 1  # exact one-axis profiles, so the similarities above are exact

    report = matching.assign_detections(engine, VERSION, threshold=0.5)

    assert (report.considered, report.assigned, report.changed, report.no_candidate) == (8, 6, 7, 0)
    assert report.assignment_rate == pytest.approx(6 / 8)
    after = deer_of(engine)
    assert after[w["above"]] == w["B1"]
    assert after[w["at"]] == w["B2"]              # similarity exactly 0.5 >= threshold 0.5
    assert after[w["below"]] is None
    assert after[w["sex_buck"]] == w["B2"]        # a buck never goes to a doe, however near
    assert after[w["sex_unknown"]] == w["D1"]     # unknown compares with every profile
    assert after[w["sex_doe"]] == w["D1"]         # a doe never goes to a buck
    assert after[w["tie"]] == T_SECOND            # equal distance: smaller deer_id
    assert after[w["prev"]] is None               # an unreviewed assignment below threshold is cleared
    for key in ("reviewed_none", "invalid", "no_embedding") + tuple(k for k in w if k.startswith("label_")):
        assert after[w[key]] == before[w[key]]    # reviewed / invalid / unembedded: never touched

    with engine.connect() as conn:
        run = conn.execute(sa.select(t.reid_assignment_runs)).one()
        log = {r.detection_id: r for r in conn.execute(sa.select(t.reid_assignment_log))}
        scores = {(r.detection_id, r.deer_id): r for r in conn.execute(sa.select(t.reid_similarity_scores))}
        counts = dict(conn.execute(sa.select(t.deer.c.id, t.deer.c.sighting_count)).all())
    assert (run.run_id, run.threshold, run.n_considered, run.n_assigned) == (report.run_id, 0.5, 8, 6)
    assert run.versions == {"embeddings": {VERSION: 1.0}} and run.method == "single-model"
    assert run.config == {"top_k": 5, "search": "exact", "rescored_against_all_profiles": 0,
                          "antler_constraint": {"tolerance": 0, "changed": []}}

    assert set(log) == {w[k] for k in CONSIDERED}
    assert log[w["below"]].previous_deer_id is None and log[w["below"]].new_deer_id is None
    assert log[w["below"]].best_deer_id == w["B1"] and log[w["below"]].similarity == 0.25
    assert log[w["at"]].similarity == 0.5 and log[w["at"]].new_deer_id == w["B2"]
    assert log[w["prev"]].previous_deer_id == w["D1"] and log[w["prev"]].new_deer_id is None
    assert log[w["sex_buck"]].best_deer_id == w["B2"]

    # scores: the compatible candidates (top 5), with the flags of the existing system's table
    bucks = {w[k] for k in ("B1", "B2", "T_FIRST", "T_SECOND")}
    assert {d for (q, d) in scores if q == w["above"]} == bucks
    assert {d for (q, d) in scores if q == w["sex_buck"]} == bucks           # no row for the doe
    assert {d for (q, d) in scores if q == w["sex_doe"]} == {w["D1"]}        # only doe (no unknown-sex deer)
    assert {d for (q, d) in scores if q == w["sex_unknown"]} == bucks | {w["D1"]}
    top = scores[(w["above"], w["B1"])]
    assert (top.similarity_score, top.matched, top.sex_match, top.threshold_used) == \
        (Decimal("0.7500"), True, True, Decimal("0.5000"))
    assert (top.detection_classification, top.deer_sex) == ("buck", "buck")
    assert scores[(w["above"], w["B2"])].matched is False and scores[(w["above"], w["B2"])].similarity_score == 0
    assert scores[(w["below"], w["B1"])].similarity_score == Decimal("0.2500")
    assert not any(s.matched for (q, _), s in scores.items() if q == w["below"])
    doe = scores[(w["sex_unknown"], w["D1"])]
    assert (doe.matched, doe.sex_match, doe.similarity_score) == (True, False, Decimal("0.7500"))
    assert scores[(w["tie"], T_SECOND)].matched and not scores[(w["tie"], T_FIRST)].matched
    assert scores[(w["tie"], T_FIRST)].similarity_score == scores[(w["tie"], T_SECOND)].similarity_score == Decimal("0.5000")
    for q in CONSIDERED:  # at most one match per detection, and exactly the assigned deer
        matched = {d for (qq, d), s in scores.items() if qq == w[q] and s.matched}
        assert matched == ({after[w[q]]} if after[w[q]] else set())

    # sighting counts follow the detections now assigned (labelled ones included)
    assert counts[w["B1"]] == 2 and counts[w["B2"]] == 3 and counts[w["D1"]] == 3
    assert counts[T_FIRST] == 1 and counts[T_SECOND] == 2


def test_threshold_is_inclusive(engine, world):
    w = world
    report = matching.assign_detections(engine, VERSION, threshold=0.75)
    after = deer_of(engine)
    assert report.assigned == 2
    assert after[w["above"]] == w["B1"] and after[w["sex_unknown"]] == w["D1"]  # exactly 0.75
    assert after[w["at"]] is None and after[w["sex_doe"]] is None
    just_above = matching.assign_detections(engine, VERSION, threshold=0.7500001)
    assert just_above.assigned == 0 and just_above.changed == 2
    assert all(deer_of(engine)[w[k]] is None for k in CONSIDERED)


def test_tie_break_is_stable_across_runs_and_top_k(engine, world):
    for top_k in (1, 2, 5):
        matching.assign_detections(engine, VERSION, threshold=0.4, top_k=top_k)
        assert deer_of(engine)[world["tie"]] == T_SECOND
    with engine.connect() as conn:
        n_scores = conn.execute(sa.select(sa.func.count()).select_from(t.reid_similarity_scores)
                                .where(t.reid_similarity_scores.c.detection_id == world["tie"])).scalar_one()
    assert n_scores == 5  # one row per (detection, deer): upserted, not duplicated


def test_rerun_changes_nothing_and_rollback_restores_exactly(engine, world):
    w = world
    before = deer_of(engine)
    first = matching.assign_detections(engine, VERSION, threshold=0.5)
    after_first = deer_of(engine)
    second = matching.assign_detections(engine, VERSION, threshold=0.5)
    assert (second.assigned, second.changed) == (6, 0)
    assert deer_of(engine) == after_first

    assert matching.rollback_assignment_run(engine, second.run_id) == 8
    assert deer_of(engine) == after_first  # the second run changed nothing, so its rollback neither
    assert matching.rollback_assignment_run(engine, first.run_id) == 8
    assert deer_of(engine) == before
    with engine.connect() as conn:
        counts = dict(conn.execute(sa.select(t.deer.c.id, t.deer.c.sighting_count)).all())
    assert counts[w["D1"]] == 2 and counts[w["B1"]] == 1 and counts[T_SECOND] == 1  # refreshed after rollback

    with pytest.raises(ValueError, match="no assignment run"):
        matching.rollback_assignment_run(engine, "no-such-run")


def test_rollback_keeps_a_later_human_review(engine, world):
    w = world
    run = matching.assign_detections(engine, VERSION, threshold=0.5)
    assert deer_of(engine)[w["above"]] == w["B1"]
    with engine.begin() as conn:  # a person looks at it after the run and says it is Buck-2
        conn.execute(sa.update(t.detections).where(t.detections.c.id == w["above"])
                     .values(deer_id=w["B2"], is_reviewed=True, reviewed_by="alice"))
    assert matching.rollback_assignment_run(engine, run.run_id) == 7  # 8 logged, 1 reviewed since
    after = deer_of(engine)
    assert after[w["above"]] == w["B2"]          # the human's label stands
    assert after[w["at"]] is None and after[w["prev"]] == w["D1"]  # the rest is rolled back


def test_no_profiles_means_no_candidates(engine, world):
    with engine.begin() as conn:
        add_version(conn, "r50-empty")
        conn.execute(sa.insert(t.reid_embeddings).values(version="r50-empty", detection_id=world["above"], embedding=e(0)))
    report = matching.assign_detections(engine, "r50-empty", threshold=0.1)
    assert (report.considered, report.assigned, report.no_candidate) == (1, 0, 1)
    assert report.assignment_rate == 0.0
    assert deer_of(engine)[world["above"]] is None


@pytest.mark.parametrize("kwargs", [dict(threshold=-0.01), dict(threshold=1.01), dict(threshold=float("nan")),
                                    dict(top_k=0), dict(top_k=-3)])
def test_bad_parameters_raise_and_write_nothing(engine, world, kwargs):
    with pytest.raises(ValueError, match="threshold|top_k"):
        matching.assign_detections(engine, VERSION, **kwargs)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.reid_assignment_runs)).scalar_one() == 0


def test_matched_flag_follows_the_latest_run(engine, world):
    w = world
    matching.assign_detections(engine, VERSION, threshold=0.5)
    with engine.begin() as conn:  # a new deer is labelled whose profile is exactly 'above'
        b3 = add_deer(conn, "Buck-3", "buck")
        add_detection(conn, "buck", vec((0.75, 0), (0.25, list(range(10, 17)))), deer_id=b3, reviewed=True)
    matching.build_profiles(engine, VERSION, FAMILY)
    matching.assign_detections(engine, VERSION, threshold=0.5, top_k=1)
    assert deer_of(engine)[w["above"]] == b3
    with engine.connect() as conn:
        matched = conn.execute(sa.select(t.reid_similarity_scores.c.deer_id).where(
            t.reid_similarity_scores.c.detection_id == w["above"], t.reid_similarity_scores.c.matched)).scalars().all()
    assert matched == [b3]  # the older row for Buck-1 no longer says matched
