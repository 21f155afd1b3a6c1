"""The pipeline end to end on the existing system's database (built from empty by its own route, with
its kind of rows), after `db migrate --adopt`: nothing of its own changes until cut-over; cut-over
and undo."""

from __future__ import annotations

import sqlalchemy as sa

from deer_reid_assets.core.store import adopt, db
from deer_reid_assets.defs.resources import ComputeResource, DatabaseResource, ImageStoreResource, ModelWeightsResource
from deer_reid_assets_tests import existing_system
from deer_reid_assets_tests.helpers import run_pipeline


def test_their_rows_are_untouched_until_cutover_and_undo_restores_them(empty_db_url, tmp_path):
    from deer_reid_assets.core import coexistence

    engine = db.make_engine(empty_db_url)
    existing_system.build_schema(engine)
    counts = existing_system.populate(engine, tmp_path / "photos", n_images=24)
    adopt.adopt(engine)
    before = existing_system.fingerprint(engine)
    (tmp_path / "uploads").mkdir()
    resources = {
        "database": DatabaseResource(url=engine.url.render_as_string(hide_password=False)),
        "image_store": ImageStoreResource(root=str(tmp_path / "store"), upload_dir=str(tmp_path / "uploads")),
        "compute": ComputeResource(device="cpu", batch_size=16),
        "model_weights": ModelWeightsResource(weights="random", seed=0, image_size=64),
    }
    assert run_pipeline(resources).success  # the whole graph, on its database, with no upload folder
    assert existing_system.fingerprint(engine) == before  # vectors, assignments, scores, keypoints
    with engine.connect() as conn:
        n = lambda sql: conn.execute(sa.text(sql)).scalar()  # noqa: E731
        assert n("SELECT count(*) FROM reid_crops WHERE status = 'ok'") == counts["detections"] + counts["duplicates"]
        version = n("SELECT version FROM reid_published_embeddings WHERE model_family = 'resnet50'")
        labelled_deer = n("SELECT count(DISTINCT deer_id) FROM detections WHERE is_reviewed AND deer_id IS NOT NULL")
        assert n(f"SELECT count(*) FROM reid_deer_profiles WHERE version = '{version}'") == labelled_deer
        assert n("SELECT count(*) FROM reid_match_proposals") == n(
            "SELECT count(*) FROM detections WHERE NOT is_reviewed AND NOT is_duplicate")
        q = lambda sql: conn.execute(sa.text(sql)).all()  # noqa: E731
        proposals = q("SELECT detection_id::text, proposed_deer_id::text FROM reid_match_proposals")
        worker_auto = dict(q("SELECT id::text, deer_id::text FROM detections WHERE NOT is_reviewed AND deer_id IS NOT NULL"))
        reviewed = dict(q("SELECT id::text, deer_id::text FROM detections WHERE is_reviewed"))
    assert proposals and worker_auto and reviewed
    from deer_reid_assets.core.review import queue

    with engine.connect() as conn:  # before cut-over the review queue reads the proposals, not the worker's scores
        items = queue.pending(conn)
        stored = {d: (p, c) for d, p, c in conn.execute(sa.text(
            "SELECT detection_id::text, proposed_deer_id::text, candidates FROM reid_match_proposals")).all()}
    assert items and all(i.detection_id in stored for i in items)
    for item in items:
        proposed, candidates = stored[item.detection_id]
        assert candidates and item.candidates == candidates[:3]
        assert item.proposed_deer_id == (proposed or candidates[0]["deer_id"])
        assert item.current_deer_id == worker_auto.get(item.detection_id)
    from deer_reid_assets.core import matching

    with engine.connect() as conn:
        run_id = conn.execute(sa.text("SELECT run_id FROM reid_assignment_runs LIMIT 1")).scalar()
    assert matching.rollback_assignment_run(engine, run_id) == 0  # a run that only proposed changed nothing
    assert existing_system.fingerprint(engine) == before

    report = coexistence.cutover(engine)
    assert report.kept_worker_assignments == len(worker_auto)
    after = existing_system.fingerprint(engine)
    assert after["deer_vectors"] != before["deer_vectors"]  # our profiles are in its columns now
    with engine.connect() as conn:
        q = lambda sql: dict(conn.execute(sa.text(sql)).all())  # noqa: E731
        now = q("SELECT id::text, deer_id::text FROM detections")
        assert {d: now[d] for d in reviewed} == reviewed  # reviewed and manual: never changed
        assert {d: now[d] for d in worker_auto} == worker_auto  # the worker's: only with --reassign
        wanted = {d: p for d, p in proposals if d not in worker_auto and d not in reviewed}
        assert {d: now[d] for d in wanted} == wanted and report.assignments_written == sum(
            p is not None for p in wanted.values())
        assert conn.execute(sa.text("SELECT owner FROM reid_live_matching")).scalar() == "deer_reid"

    coexistence.undo_cutover(engine)
    restored = existing_system.fingerprint(engine)
    assert (restored["deer_vectors"], restored["assignments"]) == (before["deer_vectors"], before["assignments"])
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT owner FROM reid_live_matching")).scalar() == "existing_system"
    engine.dispose()
