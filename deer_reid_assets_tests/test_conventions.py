"""The existing system's conventions: class vocabulary (buck age classes), scores in [0, 1], bursts
and duplicates, sighting dates that stay NOT NULL."""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa

from deer_reid_assets.core import matching
from deer_reid_assets.core.classes import sex_of
from deer_reid_assets.core.evaluation.sex import sex_compatible
from deer_reid_assets.core.evaluation.splits import identity_split, split_roles
from deer_reid_assets.core.store import schema as t
from deer_reid_assets_tests.test_matching import VERSION, add_deer, add_detection, add_version, deer_of, e, vec


@pytest.mark.parametrize("cls,sex", [("mature", "buck"), ("mid", "buck"), ("Young", "buck"), ("buck", "buck"),
                                     ("doe", "doe"), ("fawn", "fawn"), ("unknown", "unknown"), (None, "unknown"),
                                     ("raccoon", "unknown")])
def test_class_vocabulary(cls, sex):
    assert sex_of(cls) == sex


def test_age_classes_are_matched_against_bucks_only():
    assert sex_compatible("mature", "buck") and not sex_compatible("mid", "doe")
    assert sex_compatible("young", "unknown") and sex_compatible("fawn", "doe")


@pytest.mark.parametrize("cosine,stored", [(-0.3, "0.0000"), (0.0, "0.0000"), (0.41234, "0.4123"),
                                           (0.99996, "1.0000"), (1.0000002, "1.0000"), (float("nan"), "0.0000")])
def test_scores_are_the_cosine_clamped_to_its_check(cosine, stored):
    assert str(matching.stored_score(cosine)) == stored


def test_a_burst_lands_in_one_split_role():
    ids = [f"d{i}" for i in range(40)]
    identities = ["A"] * 20 + ["B"] * 20
    groups = ["burst-1"] * 8 + [""] * 12 + ["burst-2"] * 8 + [""] * 12
    split = identity_split(ids, identities, seed=3, held_out_fraction=0.0, groups=groups)
    roles = split_roles(split, len(ids))
    assert len({str(r) for r in roles[:8]}) == 1 and len({str(r) for r in roles[20:28]}) == 1
    assert len({str(r) for r in roles[8:20]}) > 1  # detections outside bursts still spread


def test_matcher_keeps_age_classes_to_bucks_skips_duplicates_and_keeps_sighting_dates(engine):
    with engine.begin() as conn:
        add_version(conn)
        buck = add_deer(conn, "B", "buck")
        doe = add_deer(conn, "D", "doe")
        lonely = add_deer(conn, "L", "buck")  # no detections: its dates must stay set
        add_detection(conn, "buck", e(0), deer_id=buck, reviewed=True)
        add_detection(conn, "doe", e(1), deer_id=doe, reviewed=True)
        mature = add_detection(conn, "mature", vec((0.2, 0), (0.9, 1)))  # closer to the doe, but a buck
        duplicate = add_detection(conn, "buck", e(0))
        conn.execute(sa.update(t.detections).where(t.detections.c.id == duplicate).values(is_duplicate=True))
    matching.build_profiles(engine, VERSION, "resnet50")
    report = matching.assign_detections(engine, VERSION, threshold=0.1)
    assert report.considered == 1  # the duplicate is not matched
    got = deer_of(engine)
    assert got[mature] == buck and got[duplicate] is None
    with engine.connect() as conn:
        row = conn.execute(sa.select(t.deer.c.first_seen, t.deer.c.last_seen, t.deer.c.sighting_count)
                           .where(t.deer.c.id == lonely)).one()
        score = conn.execute(sa.select(t.reid_similarity_scores.c.similarity_score)
                             .where(t.reid_similarity_scores.c.detection_id == mature)).scalar()
    assert row.first_seen is not None and row.last_seen is not None and row.sighting_count == 0
    assert 0 <= score <= 1
    assert np.isclose(float(score), 0.2 / np.hypot(0.2, 0.9), atol=1e-4)
