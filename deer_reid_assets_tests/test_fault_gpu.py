"""Fault suite, GPU: `kill -9` of a run while it holds the GPU (pool slot + advisory lock), on a real
Dagster instance with PostgreSQL storage. The lock goes with the dead process's connection at once; the
pool slot stays claimed by the dead run until run monitoring marks the run failed and frees its slots
(`free_slots_after_run_end_seconds`, 60 s in deploy/dagster.yaml, 1 s here); then the next GPU run goes."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pytest
import sqlalchemy as sa

from deer_reid_assets.core.store import db
from deer_reid_assets.defs.instance import REPO_ROOT, set_gpu_pool_limit
from deer_reid_assets.defs.resources import GPU_POOL, ComputeResource, DatabaseResource
from deer_reid_assets_tests.test_gpu_pool import _run_in_process

pytestmark = pytest.mark.fault


def _hold_the_gpu(dagster_home: str, storage_url: str, app_url: str, started: str) -> None:
    """Child process: a GPU-pooled step that takes the GPU and then hangs (until killed)."""
    os.environ["DAGSTER_HOME"] = dagster_home
    os.environ["DAGSTER_PG_URL"] = storage_url

    @dg.asset(name="gpu_hog", pool=GPU_POOL)
    def gpu_hog(database: DatabaseResource, compute: ComputeResource) -> None:
        with compute.exclusive(database.get_engine()):
            Path(started).write_text("holding")
            time.sleep(300)

    resources = {"database": DatabaseResource(url=app_url), "compute": ComputeResource(device="cpu", lock_on_cpu=True)}
    with dg.DagsterInstance.get() as instance:
        dg.materialize([gpu_hog], instance=instance, resources=resources)


def test_kill_9_of_a_run_holding_the_gpu_frees_lock_and_slot(pg_server, empty_db_url, tmp_path, monkeypatch):
    name = f"dagster_kill_{time.time_ns() % 10**9}"
    db.ensure_database(pg_server, name)
    storage = db.with_database(pg_server, name)
    home = tmp_path / "dagster_home"
    home.mkdir()
    config = (REPO_ROOT / "deploy" / "dagster.yaml").read_text()
    assert "free_slots_after_run_end_seconds: 60" in config
    (home / "dagster.yaml").write_text(config.replace("free_slots_after_run_end_seconds: 60",
                                                      "free_slots_after_run_end_seconds: 1"))
    monkeypatch.setenv("DAGSTER_PG_URL", storage)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        set_gpu_pool_limit(instance, 1)
    ctx = multiprocessing.get_context("spawn")
    started = tmp_path / "started"
    hog = ctx.Process(target=_hold_the_gpu, args=(str(home), storage, empty_db_url, str(started)))
    hog.start()
    deadline = time.monotonic() + 120
    while not started.exists() and time.monotonic() < deadline and hog.is_alive():
        time.sleep(0.1)
    assert started.exists(), "the GPU step never started"
    os.kill(hog.pid, signal.SIGKILL)
    hog.join(timeout=30)

    engine = db.make_engine(empty_db_url)
    try:  # the advisory GPU lock went with the killed process's connection
        deadline, free = time.monotonic() + 15, False
        while not free and time.monotonic() < deadline:
            with engine.connect() as conn:
                free = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": db.GPU_LOCK_KEY}).scalar()
                if free:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": db.GPU_LOCK_KEY})
            time.sleep(0.2)
        assert free, "the GPU advisory lock outlived the killed run"
    finally:
        engine.dispose()

    from dagster._daemon.monitoring.concurrency import execute_concurrency_slots_iteration

    with dg.DagsterInstance.from_config(str(home)) as instance:
        (dead,) = instance.get_runs()
        claimed = instance.event_log_storage.get_concurrency_info(GPU_POOL).claimed_slots
        assert [s.run_id for s in claimed] == [dead.run_id]  # the dead run still holds the one slot ...
        instance.report_run_failed(dead)  # ... until run monitoring finds its worker gone and fails it,
        time.sleep(1.2)
        list(execute_concurrency_slots_iteration(SimpleNamespace(instance=instance), logging.getLogger("test")))
        assert instance.event_log_storage.get_concurrency_info(GPU_POOL).claimed_slots == []  # ... and frees it
    nxt = ctx.Process(target=_run_in_process, args=(str(home), storage, empty_db_url, True, "gpu_step_next",
                                                   str(tmp_path / "next.json")))
    nxt.start()
    nxt.join(timeout=180)
    assert nxt.exitcode == 0 and (tmp_path / "next.json").exists()
