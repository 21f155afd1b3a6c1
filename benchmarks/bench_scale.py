"""The cost curve: matching, profile rebuild and evaluation at 1k / 10k / 100k detections.

    .venv/bin/python benchmarks/bench_scale.py [--sizes 1000,10000,100000] [--profiles 200,2000]

Synthetic unit vectors clustered per individual (`scale_world.py`: no images, no model) are
written into the real database through the store layer: a throw-away embedded PostgreSQL, or
the server of ``DATABASE_URL`` (a fresh database per grid point is created there and dropped).
Half the detections are labelled (profiles are built from them), the other half is matched.
For each (detections, profiles) it times, each step in a fresh child process:

* profile rebuild: ``core.matching.build_profiles`` (one transaction, written to the database);
* matching, exact and HNSW: ``core.matching.assign_detections`` with ``search="exact"`` and
  ``"hnsw"`` (retrieval, decisions and every write), per matched detection; recall@1 is the share
  of matched detections whose HNSW best profile is the exact scan's;
* evaluation: ``core.evaluation.protocol.evaluate_version`` (what ``reid_evaluation`` runs per model:
  labelled set, stored split, then profiles, matching, sweep and rank-1/mAP with the vectors read
  1,024 at a time, ``core/evaluation/streamed.py``).

Peak memory is the child's RSS high-water mark (Linux ``VmHWM``, reset just before the step) above
its RSS before the step: the Python side only (the PostgreSQL server's memory is not included). Not a test.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import scale_world
import sqlalchemy as sa
from figures import emit

from deer_reid_assets.core.store import db, migrations

STEPS = ("profiles", "match_exact", "match_hnsw", "evaluation")


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    """Linux: reset this process's RSS high-water mark (VmHWM) to its current RSS."""
    Path("/proc/self/clear_refs").write_text("5")


def _step(url: str, step: str, out) -> None:
    """Run one step in this (child) process; send back seconds, peak MB above start, and extras."""
    from deer_reid_assets.core import matching
    from deer_reid_assets.core.evaluation import protocol

    engine = db.make_engine(url)
    extra: dict = {}
    _reset_peak()
    start_mb = _status_mb("VmRSS")
    t0 = time.perf_counter()
    if step == "profiles":
        report = matching.build_profiles(engine, scale_world.VERSION, scale_world.FAMILY)
        extra["count"] = report.labelled_detections
    elif step.startswith("match_"):
        report = matching.assign_detections(engine, scale_world.VERSION, search=step.removeprefix("match_"),
                                            antler_tolerance=None)
        extra.update(count=report.considered, run_id=report.run_id, rescored=report.rescored)
    else:
        report = protocol.evaluate_version(engine, scale_world.VERSION)
        extra.update(count=report.split_sizes["n_gallery"] + report.split_sizes["n_test_query"]
                     + report.split_sizes["n_val_query"], rank1=report.retrieval["rank1"])
    seconds = time.perf_counter() - t0
    peak_mb = _status_mb("VmHWM")
    engine.dispose()
    out.send({"seconds": seconds, "peak_mb": max(0.0, peak_mb - start_mb), **extra})


def run_step(url: str, step: str) -> dict:
    ctx = mp.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_step, args=(url, step, send))
    child.start()
    result = receive.recv()
    child.join()
    return result


def recall_at_1(engine: sa.Engine, exact_run: str, hnsw_run: str) -> float:
    with engine.connect() as conn:
        row = conn.execute(sa.text(
            "SELECT count(*), count(*) FILTER (WHERE a.best_deer_id IS NOT DISTINCT FROM b.best_deer_id) "
            "FROM reid_assignment_log a JOIN reid_assignment_log b ON b.detection_id = a.detection_id "
            "AND b.run_id = :h WHERE a.run_id = :e"), {"e": exact_run, "h": hnsw_run}).one()
    return row[1] / row[0] if row[0] else float("nan")


def grid_point(server_url: str, world: scale_world.World, steps: tuple[str, ...] = STEPS) -> dict:
    name = f"scale_{uuid.uuid4().hex[:10]}"
    db.ensure_database(server_url, name)
    url = db.with_database(server_url, name)
    engine = db.make_engine(url)
    try:
        migrations.migrate(engine)
        t0 = time.perf_counter()
        scale_world.build(engine, world, progress=lambda line: None)
        print(f"{world.detections:,} detections / {world.profiles:,} profiles written in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
        results = {}
        for step in steps:
            results[step] = run_step(url, step)
            print(f"  {step}: {results[step]['seconds']:.2f} s", flush=True)
        if {"match_exact", "match_hnsw"} <= set(steps):
            results["recall_at_1"] = recall_at_1(engine, results["match_exact"]["run_id"],
                                                 results["match_hnsw"]["run_id"])
        return results
    finally:
        engine.dispose()
        admin = sa.create_engine(db.with_database(server_url, "postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def machine() -> str:
    cpu = platform.processor() or "unknown cpu"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at start"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000", help="detections per grid point, comma-separated")
    parser.add_argument("--profiles", default="200,2000", help="deer profiles per grid point, comma-separated")
    parser.add_argument("--labelled", type=float, default=0.5, help="share of detections labelled (rest matched)")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"some of {','.join(STEPS)} (matching needs profiles)")
    args = parser.parse_args()
    steps = tuple(s for s in STEPS if s in args.steps.split(","))
    if not steps or (any(s.startswith("match_") for s in steps) and "profiles" not in steps):
        parser.error(f"--steps: give some of {', '.join(STEPS)}; matching needs profiles")
    sizes = [int(s) for s in args.sizes.split(",")]
    profile_counts = [int(p) for p in args.profiles.split(",")]
    env_url = os.environ.get("DATABASE_URL", "").strip()
    home = None
    if env_url:
        server_url = db.normalize_url(env_url)
    else:
        home = Path(tempfile.mkdtemp(prefix="deer_reid_scale_"))
        server = db.EmbeddedPostgres(home / "pg")
        server_url = server.start()
    device = machine()
    print(f"machine: {device}; PostgreSQL {'from DATABASE_URL' if env_url else 'embedded (throw-away)'}")
    rows = []
    try:
        for p in profile_counts:
            for n in sizes:
                world = scale_world.World(detections=n, profiles=p, labelled_fraction=args.labelled)
                rows.append((n, p, grid_point(server_url, world, steps)))
    finally:
        if home is not None:
            server.stop()
            shutil.rmtree(home, ignore_errors=True)
    print_table(rows, steps)
    for n, p, r in rows:
        tag = f"{n}det_{p}prof"
        for step in steps:
            s = r[step]
            if step.startswith("match_"):
                emit(f"scale_{step}_ms_per_detection_{tag}", 1000 * s["seconds"] / max(s["count"], 1), "ms", device)
            else:
                emit(f"scale_{step}_s_{tag}", s["seconds"], "s", device)
            emit(f"scale_{step}_peak_rss_{tag}", s["peak_mb"], "MiB", device)
        if "recall_at_1" in r:
            emit(f"scale_hnsw_recall_at_1_{tag}", r["recall_at_1"], "fraction", device)


def print_table(rows, steps) -> None:
    heads = {"profiles": "profiles s", "match_exact": "exact ms/det", "match_hnsw": "HNSW ms/det",
             "evaluation": "evaluation s"}
    matching = {"match_exact", "match_hnsw"} <= set(steps)
    print("\n| detections | profiles | " + " | ".join(heads[s] for s in steps) + (" | recall@1" if matching else "")
          + " | peak MiB (" + " / ".join(steps) + ") |")
    print("| ---: | ---: | " + " | ".join("---:" for _ in steps) + (" | ---:" if matching else "") + " | --- |")
    for n, p, r in rows:
        cells = []
        for step in steps:
            seconds = r[step]["seconds"]
            cells.append(f"{1000 * seconds / max(r[step]['count'], 1):.2f}" if step.startswith("match_") else f"{seconds:.2f}")
        if matching:
            cells.append(f"{r['recall_at_1']:.4f}")
        peaks = " / ".join(f"{r[s]['peak_mb']:.0f}" for s in steps)
        print(f"| {n:,} | {p:,} | " + " | ".join(cells) + f" | {peaks} |")
    matched = next((r[s]["count"] for _, _, r in rows for s in steps if s.startswith("match_")), None)
    if matched is not None:
        print("ms/det: per matched (unlabelled) detection; about half the detections are matched")
    print("peak MiB: RSS high-water of the step's child process above its RSS before the step (Python only)\n")


if __name__ == "__main__":
    main()
