"""One ResNet50 forward pass for both ResNet50 families (core.embed.shared_trunk): the family that
runs second takes the other's pooled stages instead of running the trunk, and gets the features it
would have computed itself; a rewritten file, other weights or the same family run the trunk again."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deer_reid_assets.core.embed import shared_trunk
from deer_reid_assets.core.embed.embedder import Embedder
from deer_reid_assets.core.embed.shared_trunk import StageMemo

SIZE = 64


def _write(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (70, 50, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture()
def crop_files(tmp_path: Path) -> list[Path]:
    return [_write(tmp_path / f"c{i}.png", i) for i in range(7)]


def _embedder(family: str, memo: StageMemo, seed: int = 0) -> Embedder:
    embedder = Embedder(family, "random", seed=seed, image_size=SIZE, batch_size=3)
    embedder.memo = memo
    return embedder


def _count_images(embedder: Embedder) -> list[int]:
    """Images that went through the trunk, per forward call (a hook on ``conv1``)."""
    seen: list[int] = []
    embedder.backbone.conv1.register_forward_hook(lambda module, args, out: seen.append(int(args[0].shape[0])))
    return seen


def test_the_second_family_takes_the_first_ones_stages(crop_files: list[Path]) -> None:
    memo = StageMemo()
    multiscale = _embedder("multiscale", memo)
    stages = multiscale.raw_features_files(crop_files, workers=0)
    assert stages.shape == (7, 3840) and len(memo) == 7

    baseline = _embedder("resnet50", memo)
    passes = _count_images(baseline)
    batches = list(baseline.raw_feature_batches(crop_files, workers=0))
    assert passes == [] and memo.served == 7 and len(memo) == 0  # no trunk pass; nothing left behind
    assert baseline.shared_crops == 7 and multiscale.shared_crops == 0
    assert [b.shape for b in batches] == [(3, 2048), (3, 2048), (1, 2048)]

    alone = _embedder("resnet50", StageMemo(max_bytes=0)).raw_features_files(crop_files, workers=0)
    np.testing.assert_allclose(np.concatenate(batches), alone, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.concatenate(batches), stages[:, -2048:])


def test_only_the_missing_files_run_the_trunk_and_the_order_holds(crop_files: list[Path]) -> None:
    memo = StageMemo()
    _embedder("resnet50", memo).raw_features_files(crop_files[1::2], workers=0)  # files 1, 3, 5
    multiscale = _embedder("multiscale", memo)
    passes = _count_images(multiscale)
    mixed = multiscale.raw_features_files(crop_files, workers=0)
    assert sum(passes) == 4 and memo.served == 3  # files 0, 2, 4, 6 through the trunk
    alone = _embedder("multiscale", StageMemo(max_bytes=0)).raw_features_files(crop_files, workers=0)
    np.testing.assert_allclose(mixed, alone, rtol=1e-4, atol=1e-5)  # other batches: float order only


def test_a_rewritten_file_other_weights_and_the_same_family_miss(crop_files: list[Path]) -> None:
    memo = StageMemo()
    _embedder("multiscale", memo).raw_features_files(crop_files, workers=0)
    _write(crop_files[0], seed=99)
    stat = os.stat(crop_files[0])
    os.utime(crop_files[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))

    again = _embedder("multiscale", memo)
    own = _count_images(again)
    again.raw_features_files(crop_files[1:3], workers=0)
    assert sum(own) == 2 and memo.served == 0  # a family never takes its own entries

    other_weights = _embedder("resnet50", memo, seed=1)
    passes = _count_images(other_weights)
    other_weights.raw_features_files(crop_files[1:3], workers=0)
    assert sum(passes) == 2 and memo.served == 0

    baseline = _embedder("resnet50", memo)
    passes = _count_images(baseline)
    rewritten = baseline.raw_features_files(crop_files[:1], workers=0)
    assert sum(passes) == 1 and memo.served == 0  # the old entry of file 0 no longer fits the file
    fresh = _embedder("resnet50", StageMemo(max_bytes=0)).raw_features_files(crop_files[:1], workers=0)
    np.testing.assert_allclose(rewritten, fresh, rtol=1e-5, atol=1e-6)


def test_the_budget_bounds_what_is_kept(crop_files: list[Path]) -> None:
    memo = StageMemo(max_bytes=2 * 3840 * 4)
    _embedder("multiscale", memo).raw_features_files(crop_files, workers=0)
    assert len(memo) == 2
    baseline = _embedder("resnet50", memo)
    passes = _count_images(baseline)
    baseline.raw_features_files(crop_files, workers=0)
    assert sum(passes) == 5 and memo.served == 2


def test_only_resnet_families_share_and_the_budget_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _embedder("efficientnet", StageMemo()).trunk_key is None
    with pytest.raises(ValueError, match="efficientnet"):
        shared_trunk.family_columns("efficientnet")
    monkeypatch.setenv("DEER_REID_SHARED_TRUNK_MB", "lots")
    with pytest.raises(ValueError, match="DEER_REID_SHARED_TRUNK_MB"):
        shared_trunk._budget()
    monkeypatch.setenv("DEER_REID_SHARED_TRUNK_MB", "0")
    assert shared_trunk._budget() == 0
