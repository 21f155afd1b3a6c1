"""The embedding data path from crop files (core.embed.loading): the same vectors as the in-memory
path, in order, with loader workers or without; a bad file named in the error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deer_reid_assets.core.embed.embedder import Embedder
from deer_reid_assets.core.embed.loading import default_workers, file_batches
from deer_reid_assets.core.ingest.imaging import ImageError, load_image

SIZE = 64


@pytest.fixture(scope="module")
def crop_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("crops")
    rng = np.random.default_rng(1)
    paths = []
    for i, (h, w) in enumerate([(80, 60), (64, 64), (50, 90), (70, 70), (96, 72), (40, 120), (66, 66)]):
        path = folder / f"c{i}.png" if i % 2 else folder / f"c{i}.jpg"
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        (image.convert("L") if i == 3 else image).save(path)  # one greyscale file: converted to RGB
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder("resnet50", "random", seed=0, image_size=SIZE, batch_size=3)


def test_files_give_the_in_memory_features_in_order(embedder: Embedder, crop_files: list[Path]) -> None:
    expected = embedder.raw_features([load_image(p) for p in crop_files])
    batches = list(embedder.raw_feature_batches(crop_files, workers=0))
    assert [len(b) for b in batches] == [3, 3, 1]
    np.testing.assert_allclose(np.concatenate(batches), expected, rtol=1e-5, atol=1e-6)
    # a different order gives the rows in that order (no reordering by the loader); other batches
    # change the float summation order a little, a wrong row changes everything
    reordered = embedder.raw_features_files(crop_files[::-1], workers=0)
    np.testing.assert_allclose(reordered, expected[::-1], rtol=1e-3, atol=1e-4)


def test_loader_workers_give_the_same_features(embedder: Embedder, crop_files: list[Path]) -> None:
    expected = embedder.raw_features_files(crop_files, workers=0)
    np.testing.assert_allclose(embedder.raw_features_files(crop_files, workers=2), expected, rtol=1e-5, atol=1e-6)


def test_embed_files_matches_embed(embedder: Embedder, crop_files: list[Path]) -> None:
    embedder.fit_projection(embedder.raw_features([load_image(p) for p in crop_files]))
    vectors = embedder.embed_files(crop_files)
    np.testing.assert_allclose(vectors, embedder.embed([load_image(p) for p in crop_files]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.embed_files([]).shape == (0, vectors.shape[1])


def test_a_bad_file_is_named(crop_files: list[Path], tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(ImageError, match="broken.jpg"):
        list(file_batches([crop_files[0], broken], SIZE, 2, workers=0))


def test_default_workers_and_bad_settings() -> None:
    assert default_workers("cpu") == 0
    assert default_workers("cuda") >= 1
    with pytest.raises(ValueError, match="batch_size"):
        list(file_batches([], SIZE, 0))
    with pytest.raises(ValueError, match="workers"):
        list(file_batches([], SIZE, 2, workers=-1))


def test_finetuned_embedder_streams_batches_equal_to_the_whole(crop_files: list[Path], tmp_path: Path) -> None:
    from deer_reid_assets.core.embed.finetuned import FinetunedEmbedder
    from deer_reid_assets.core.reid.checkpoints import atomic_save
    from deer_reid_assets.core.reid.config import TrainConfig
    from deer_reid_assets.core.reid.network import CHECKPOINT_FORMAT, ReIDNet

    model = ReIDNet("random", arch="resnet18", seed=0)
    config = TrainConfig(image_size=SIZE, arch="resnet18", backbone_weights="random")
    atomic_save({"format": CHECKPOINT_FORMAT, "config": config.to_json(), "dim": model.dim, "arch": model.arch,
                 "last_stride": model.last_stride, "model": model.state_dict(), "epoch": 1, "val_mAP": 0.5, "val_rank1": 0.5,
                 "backbone_weights": {"source": "random", "weights_id": "r", "description": "random"}},
                tmp_path / "m.pt")
    embedder = FinetunedEmbedder(tmp_path / "m.pt", batch_size=3)
    batches = list(embedder.embed_batches(crop_files))
    assert [len(b) for b in batches] == [3, 3, 1]  # one array per batch, one loader
    np.testing.assert_allclose(np.concatenate(batches), embedder.embed_files(crop_files), rtol=1e-5, atol=1e-6)


def test_bf16_forward_on_a_cpu_agrees_with_fp32(crop_files: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """On a CPU with bf16 units the pretrained embedders run their forward pass in bf16 autocast
    (``DEER_REID_CPU_BF16`` forces either way; elsewhere bf16 is emulated, slower but the same maths):
    the features keep their direction (cosine >= 0.999 per crop) while the numbers do differ."""
    images = [load_image(p) for p in crop_files]
    features = {}
    for flag, precision in (("0", "fp32"), ("1", "bf16")):
        monkeypatch.setenv("DEER_REID_CPU_BF16", flag)
        embedder = Embedder("efficientnet", "random", seed=0, image_size=SIZE, batch_size=4)
        assert embedder.precision == precision
        features[precision] = embedder.raw_features(images)
    a, b = features["fp32"], features["bf16"]
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() >= 0.999
    assert not np.allclose(a, b, rtol=1e-6, atol=1e-7)  # it really ran in another precision


def test_the_fine_tuned_network_embeds_in_bf16_on_such_a_cpu(crop_files: list[Path],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The deer re-ID network's inference (its validation while training, its embeddings) takes the
    same bf16 path; ``amp=False`` keeps fp32. The unit vectors agree to a cosine >= 0.999."""
    from deer_reid_assets.core.reid.data import Images, embed_dataset, eval_transform
    from deer_reid_assets.core.reid.network import ReIDNet

    net = ReIDNet("random", arch="resnet18", last_stride=2, seed=0)
    data = Images(crop_files, [0] * len(crop_files), eval_transform(SIZE))
    monkeypatch.setenv("DEER_REID_CPU_BF16", "1")
    bf16 = embed_dataset(net, data, "cpu", batch_size=4)
    fp32 = embed_dataset(net, data, "cpu", batch_size=4, amp=False)
    monkeypatch.setenv("DEER_REID_CPU_BF16", "0")
    np.testing.assert_array_equal(embed_dataset(net, data, "cpu", batch_size=4), fp32)
    assert (bf16 * fp32).sum(1).min() >= 0.999
    assert not np.allclose(bf16, fp32, rtol=1e-6, atol=1e-7)
