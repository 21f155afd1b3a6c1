"""A folder of labelled crops to the before/after report in one command, without the Dagster UI:
`deer-reid import-crops DIR --report` on a tiny folder of generated crops, real database, real runs."""

import json

import dagster as dg
import numpy as np
from click.testing import CliRunner
from PIL import Image, ImageDraw

from deer_reid_assets.cli import main
from deer_reid_assets.core.store import migrations


def _crop(identity: int, shot: int, size: int = 56) -> Image.Image:
    """A noisy coloured background with an ellipse whose colour and position identify the 'deer'."""
    rng = np.random.default_rng([identity, shot])
    base = np.array([(identity * 53) % 256, (identity * 97) % 256, (identity * 151) % 256], dtype=float)
    image = Image.fromarray(np.clip(base + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8))
    x0 = 4 + 4 * identity + int(rng.integers(-3, 4))
    ImageDraw.Draw(image).ellipse([x0, 12, x0 + 24, 40], fill=tuple(int(255 - c) for c in base))
    return image


def test_import_crops_then_report_reaches_the_before_after_table(engine, reid_home, tmp_path):
    migrations.migrate(engine)
    folder = tmp_path / "crops"
    for identity in range(6):
        (folder / f"Deer-{identity}").mkdir(parents=True)
        for shot in range(5):
            _crop(identity, shot).save(folder / f"Deer-{identity}" / f"{shot}.png")
    env = {"DATABASE_URL": engine.url.render_as_string(hide_password=False)}

    result = CliRunner().invoke(main, ["import-crops", str(folder), "--report", "--weights", "random",
                                       "--image-size", "48"], env=env, catch_exceptions=False)

    assert result.exit_code == 0, result.output
    assert "30 crops imported" in result.output and "6 new deer" in result.output
    assert "NOT pretrained" in result.output  # random weights say so
    assert "Before/after on the same test queries (embedding_report):" in result.output
    # where the time went: every step of the run with its wall time, slowest first
    timing = result.output.split("time per step (", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    seconds = {line.split()[0]: float(line.split()[1]) for line in timing}
    assert {"crops", "baseline_embeddings", "deer_assignments", "embedding_report"} <= set(seconds)
    assert list(seconds.values()) == sorted(seconds.values(), reverse=True) and min(seconds.values()) >= 0
    report = json.loads((reid_home / "store" / "reports" / "embedding_report.json").read_text())
    assert len(report["rows"]) >= 5 and report["versions"]["baseline"] in result.output
    # recorded in the Dagster instance like any run of the graph
    instance = dg.DagsterInstance.get()
    for key in ("crops", "published_embeddings", "ensemble_weights", "deer_assignments", "embedding_report"):
        assert instance.get_latest_materialization_event(dg.AssetKey(key)) is not None, key
    # ... as a named job, not __ephemeral_asset_job__
    assert {r.job_name for r in instance.get_runs()} == {"report_from_crops"}
