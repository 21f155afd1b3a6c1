"""Steps on two Celery workers over a real Redis broker (the distribution's redis-server on a free local
port): the GPU steps on the worker of the `gpu` queue, the others on the default queue's worker, and the
database left as an in-process run leaves it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import sqlalchemy as sa
import yaml

from deer_reid_assets.core.store import db
from deer_reid_assets.defs.ingest import camera_images, upload_batches
from deer_reid_assets.defs.instance import INSTANCE_TEMPLATE, REPO_ROOT
from deer_reid_assets.defs.placement import GPU_POOL, queue_of
from deer_reid_assets.defs.resources import ComputeResource, DatabaseResource, ImageStoreResource, ModelWeightsResource
from deer_reid_assets.demo.synthetic import SyntheticConfig, generate_dataset

SELECTION = ["detections", "crops", "baseline_embeddings", "published_embeddings", "deer_profiles"]
SETTINGS = {"compute": {"device": "cpu", "batch_size": 16}, "model_weights": {"weights": "random", "image_size": 64}}
PARTITION = "celery-batch"
WORKERS = {"gpu": "gpu-worker", "dagster": "cpu-worker"}  # queue -> worker name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group (worker.sh's dagster-celery, its celery and the pool's children), then SIGKILL."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    try:  # children that outlived their leader
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture
def redis_url(tmp_path):
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run installs it)")
    port = _free_port()
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        import redis

        client = redis.Redis(port=port)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {port} did not answer") from None
                time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}"
    finally:
        _stop(proc)


def _world(url: str, home: Path, data: Path) -> dict:
    """A migrated database with a tiny synthetic batch imported (camera_images, in-process) and its resources."""
    resources = {
        "database": DatabaseResource(url=url),
        "image_store": ImageStoreResource(root=str(home / "store"), upload_dir=str(data)),
        "compute": ComputeResource(**SETTINGS["compute"]),
        "model_weights": ModelWeightsResource(**SETTINGS["model_weights"]),
    }
    from deer_reid_assets.core.store import migrations

    migrations.migrate(db.make_engine(url))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(upload_batches.name, [PARTITION])
    assert dg.materialize([camera_images], resources=resources, instance=instance, partition_key=PARTITION).success
    return resources


def _vector(value) -> np.ndarray:
    return np.asarray(json.loads(value) if isinstance(value, str) else value, dtype=float)


def _table(url: str) -> tuple[dict, dict]:
    """What the selection leaves in the database, keyed by content (never by generated ids or version names:
    a projection fitted on the same crops in another order differs in its last bits, so does its fingerprint),
    and the vectors: each detection's embedding and each deer's profile."""
    with db.make_engine(url).connect() as conn:
        q = lambda sql: conn.execute(sa.text(sql)).all()  # noqa: E731
        counts = {
            "crops": q("SELECT status, count(*) FROM reid_crops GROUP BY status ORDER BY status"),
            "published": q("SELECT model_family FROM reid_published_embeddings ORDER BY 1"),
            "profiles": q("SELECT d.name, p.n_detections FROM reid_deer_profiles p JOIN deer d ON d.id = p.deer_id "
                          "ORDER BY 1"),
        }
        vectors = {(r[0], r[1]): _vector(r[2]) for r in q(
            """SELECT i.filename, d.bbox::text, e.embedding FROM reid_embeddings e JOIN detections d ON d.id = e.detection_id
               JOIN images i ON i.id = d.image_id""")}
        vectors |= {r[0]: _vector(r[1]) for r in q(
            "SELECT d.name, p.vector FROM reid_deer_profiles p JOIN deer d ON d.id = p.deer_id")}
    return counts, vectors


@contextmanager
def _workers(env: dict, logs: Path) -> Iterator[Callable[[], dict]]:
    """One worker per queue, started by deploy/celery/worker.sh as the README starts them, each in a session
    of its own (stopped as a group, whatever happens); yields a wait until both answer (their queues)."""
    procs = {}
    try:
        for queue, name in WORKERS.items():
            with (logs / f"{name}.log").open("w") as out:
                procs[name] = subprocess.Popen([str(REPO_ROOT / "deploy" / "celery" / "worker.sh"), queue, name, "1"],
                                               env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        yield lambda: _wait_for_workers(env["DEER_REID_CELERY_BROKER"], procs, logs)
    finally:
        for proc in procs.values():
            _stop(proc)


def _wait_for_workers(broker: str, procs: dict, logs: Path, timeout: float = 120) -> dict:
    from celery import Celery

    app = Celery(broker=broker)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = [name for name, proc in procs.items() if proc.poll() is not None]
        assert not dead, f"worker {dead[0]} exited: {(logs / f'{dead[0]}.log').read_text()[-2000:]}"
        queues = app.control.inspect(timeout=1).active_queues() or {}
        if len(queues) == len(procs):
            return {name.split("@")[0]: sorted(q["name"] for q in qs) for name, qs in queues.items()}
    raise AssertionError(f"workers did not answer in {timeout:.0f} s: "
                         + " | ".join((logs / f"{name}.log").read_text()[-800:] for name in procs))


def test_gpu_steps_run_on_the_gpu_queue_worker_and_the_rest_elsewhere(pg_server, redis_url, tmp_path, monkeypatch):
    data = tmp_path / "data"
    generate_dataset(data, SyntheticConfig(n_images=12, n_bucks=3, n_does=2, image_width=320, image_height=240,
                                           seed=5))
    tag = f"{os.getpid()}_{time.time_ns() % 10**9}"
    urls = {}
    for name in ("celery", "in_process", "dagster"):
        db.ensure_database(pg_server, f"{name}_{tag}")
        urls[name] = db.with_database(pg_server, f"{name}_{tag}")
    home = tmp_path / "celery_home"
    _world(urls["celery"], home, data)
    reference = _world(urls["in_process"], tmp_path / "in_process_home", data)
    dagster_home = tmp_path / "dagster_home"  # the project's instance file, on a Dagster database of this test's
    dagster_home.mkdir()
    shutil.copyfile(INSTANCE_TEMPLATE, dagster_home / "dagster.yaml")
    env = dict(os.environ, DAGSTER_HOME=str(dagster_home), DAGSTER_PG_URL=urls["dagster"],
               DATABASE_URL=urls["celery"], DEER_REID_HOME=str(home), DEER_REID_CELERY_BROKER=f"{redis_url}/0",
               DEER_REID_CELERY_BACKEND=f"{redis_url}/1", OMP_NUM_THREADS="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    run_config = tmp_path / "run_config.yaml"
    run_config.write_text(yaml.safe_dump({"resources": {k: {"config": v} for k, v in SETTINGS.items()}}))

    from deer_reid_assets.definitions import defs

    with _workers(env, tmp_path) as wait_until_ready:
        # meanwhile, the reference: the same selection in this process, on a database of its own
        selected = [a for a in defs.assets if a.key.to_user_string() in SELECTION]
        checks = [c for c in defs.asset_checks if all(k.asset_key.to_user_string() in SELECTION for k in c.check_keys)]
        assert dg.materialize(selected + checks, resources=reference, instance=dg.DagsterInstance.ephemeral()).success
        assert wait_until_ready() == {name: [queue] for queue, name in WORKERS.items()}
        # the same selection through the Celery code location, its steps on the two workers
        done = subprocess.run([str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m",
                               "deer_reid_assets.celery_definitions", "--select", ",".join(SELECTION),
                               "-c", str(run_config)], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    monkeypatch.setenv("DAGSTER_PG_URL", env["DAGSTER_PG_URL"])  # what the instance file reads
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        (run,) = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.SUCCESS
        ran_on, sent_to = {}, {}
        for record in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
            metadata = record.dagster_event.engine_event_data.metadata
            if "Celery worker" in metadata:
                ran_on[record.step_key] = metadata["Celery worker"].value.split("@")[0]
            if record.message.startswith("Submitting celery task"):
                sent_to[record.step_key] = record.message.rsplit('"', 2)[1]
    job = defs.get_repository_def().get_implicit_global_asset_job_def()
    pools = {step: job.graph.node_named(step).definition.pool for step in ran_on}
    assert {s for s, pool in pools.items() if pool == GPU_POOL} == {"detections", "baseline_embeddings"}
    assert len(ran_on) == len(SELECTION) + 1  # the embedding's audit check is a step of its own
    for step, pool in pools.items():
        assert sent_to[step] == queue_of(pool), step
        assert ran_on[step] == WORKERS[queue_of(pool)], step

    (counts, vectors), (expected_counts, expected_vectors) = _table(urls["celery"]), _table(urls["in_process"])
    assert counts == expected_counts and counts["profiles"]
    assert vectors.keys() == expected_vectors.keys()
    # the two databases list the crops in other orders, so other batches: float sums differ in the 5th
    # decimal (1.1e-5 seen), a wrong vector of unit length in the 1st
    for key, vector in vectors.items():
        np.testing.assert_allclose(vector, expected_vectors[key], atol=1e-4, err_msg=str(key))


def test_the_worker_script_names_what_is_missing(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "DEER_REID_CELERY"))}
    done = subprocess.run([str(REPO_ROOT / "deploy" / "celery" / "worker.sh"), "gpu"], env=env, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr.strip() == "worker.sh: DAGSTER_HOME is not set (see deploy/celery/env.example)"
