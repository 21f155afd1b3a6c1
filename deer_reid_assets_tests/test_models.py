"""Tests for deer_reid_assets.core.embed (backbones, projection, embedder; (seeded random weights, 64 px images, CPU)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from efficientnet_pytorch import EfficientNet
from PIL import Image
from torchvision.models import resnet50

from deer_reid_assets.core.embed import backbones as models
from deer_reid_assets.core.embed.backbones import (
    MODEL_FAMILIES,
    RAW_DIMS,
    WeightsUnavailableError,
    build_backbone,
    imagenet_weights_available,
    save_checkpoint,
)
from deer_reid_assets.core.embed.device import resolve_device
from deer_reid_assets.core.embed.embedder import MODEL_CODE_VERSION, Embedder
from deer_reid_assets.core.embed.projection import FeatureProjection
from deer_reid_assets.core.families import EMBEDDING_DIM

SIZE = 64


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    shapes = [(80, 60), (64, 64), (50, 90), (70, 70), (96, 72)]
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in shapes]


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Empty torch hub cache under tmp_path and no network; returns the hub checkpoints folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)

    def no_network(*args: object, **kwargs: object) -> socket.socket:
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket, "create_connection", no_network)
    return tmp_path / "torch" / "hub" / "checkpoints"


def _count_calls(module: torch.nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize("family", MODEL_FAMILIES)
def test_embedder_end_to_end(family: str, images: list[Image.Image]) -> None:
    embedder = Embedder(family, "random", seed=0, image_size=SIZE, batch_size=2)
    assert embedder.weights.source == "random" and embedder.weights.weights_id == "random-s0"
    raw = embedder.raw_features(images)
    assert raw.shape == (len(images), RAW_DIMS[family]) and raw.dtype == np.float32
    assert np.isfinite(raw).all() and raw.std(axis=0).max() > 0

    projection = embedder.fit_projection(raw)
    assert embedder.projection is projection
    assert projection.n_data_components == len(images) - 1  # rest of the 512 is the random complement
    emb = embedder.embed(images)
    assert emb.shape == (len(images), EMBEDDING_DIM) and emb.dtype == np.float32
    assert np.isfinite(emb).all()
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert np.abs(emb @ emb.T - np.eye(len(images))).max() > 1e-3  # not all identical / orthogonal

    assert embedder.version_key() == {
        "family": family,
        "weights_id": "random-s0",
        "projection": projection.fingerprint(),
        "image_size": SIZE,
        "code_version": MODEL_CODE_VERSION,
    }


def test_multiscale_stages_and_single_forward(images: list[Image.Image], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEER_REID_CPU_BF16", "0")  # compared with the stages in fp32 below
    embedder = Embedder("multiscale", "random", seed=0, image_size=SIZE, batch_size=4)
    trunk = embedder.backbone
    x = embedder.preprocess(images[:4])
    with torch.inference_mode():
        stages = trunk.stages(x)
        assert {k: tuple(v.shape[1:]) for k, v in stages.items()} == {
            "layer1": (256, 16, 16),
            "layer2": (512, 8, 8),
            "layer3": (1024, 4, 4),
            "layer4": (2048, 2, 2),
        }
        pooled = torch.cat([v.mean(dim=(2, 3)) for v in stages.values()], dim=1).numpy()

    calls = _count_calls(trunk.conv1)
    raw = embedder.raw_features(images[:4])
    assert calls[0] == 1  # one backbone pass for the batch, not one per stage
    np.testing.assert_allclose(raw, pooled, rtol=1e-4, atol=1e-5)

    calls[0] = 0
    embedder.batch_size = 2
    embedder.raw_features(images[:4])
    assert calls[0] == 2

    # Same seed -> same ResNet50 trunk: the baseline feature is the layer4 slice of the multiscale one.
    baseline = Embedder("resnet50", "random", seed=0, image_size=SIZE).raw_features(images[:4])
    np.testing.assert_allclose(baseline, raw[:, -2048:], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", ["resnet50", "efficientnet"])
def test_seeds(family: str, images: list[Image.Image]) -> None:
    rng_state = torch.get_rng_state()
    first = Embedder(family, "random", seed=0, image_size=SIZE)
    assert torch.equal(torch.get_rng_state(), rng_state)  # global RNG untouched
    second = Embedder(family, "random", seed=0, image_size=SIZE)
    other = Embedder(family, "random", seed=1, image_size=SIZE)
    raw = first.raw_features(images)
    for embedder in (first, second):
        embedder.fit_projection(raw)
    np.testing.assert_array_equal(first.embed(images), second.embed(images))
    assert first.version_key() == second.version_key()
    assert not np.allclose(other.raw_features(images), raw)
    assert other.weights.weights_id == "random-s1"


@pytest.mark.parametrize("family", MODEL_FAMILIES)
def test_checkpoint_round_trip(family: str, tmp_path: Path) -> None:
    backbone, _ = build_backbone(family, "random", seed=3)
    path = tmp_path / "ckpt" / f"{family}.pt"
    save_checkpoint(backbone, path, {"family": family, "note": "test"})
    loaded, weights = build_backbone(family, path)
    assert weights.source == "checkpoint" and weights.weights_id.startswith("ckpt-")
    assert str(path) in weights.description and not loaded.training
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.inference_mode():
        assert torch.equal(backbone(x), loaded(x))
    assert build_backbone(family, str(path))[1] == weights  # str path, same stable id


def test_checkpoint_errors_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pt"
    with pytest.raises(ValueError, match="nope.pt does not exist"):
        build_backbone("resnet50", missing)
    with pytest.raises(ValueError, match="imagnet"):
        build_backbone("resnet50", "imagnet")  # typo of a keyword reads as a missing checkpoint

    wrong = tmp_path / "wrong.pt"
    torch.save({"foo.weight": torch.zeros(3)}, wrong)
    with pytest.raises(ValueError, match=r"wrong\.pt.*missing keys.*unexpected keys \(e\.g\. foo\.weight\)"):
        build_backbone("efficientnet", wrong)

    other_family = tmp_path / "effnet.pt"
    save_checkpoint(build_backbone("efficientnet", "random")[0], other_family, {"family": "efficientnet"})
    with pytest.raises(ValueError, match=r"effnet\.pt was saved for family 'efficientnet'"):
        build_backbone("resnet50", other_family)

    shapes = tmp_path / "shapes.pt"
    state = build_backbone("efficientnet", "random")[0].state_dict()
    state["_conv_stem.weight"] = torch.zeros(1, 1, 1, 1)
    torch.save(state, shapes)
    with pytest.raises(ValueError, match=r"shapes\.pt.*size mismatch"):
        build_backbone("efficientnet", shapes)

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"garbage\.pt cannot be read"):
        build_backbone("resnet50", garbage)


def test_imagenet_offline_fails_fast_and_auto_falls_back(offline: Path) -> None:
    assert not imagenet_weights_available("resnet50")
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as info:
        build_backbone("resnet50", "imagenet")
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert "\n" not in message
    assert str(offline / "resnet50-11ad3fa6.pth") in message and "weights='random'" in message

    with pytest.raises(WeightsUnavailableError, match="efficientnet-b0-355c32eb.pth"):
        Embedder("efficientnet", "imagenet", image_size=SIZE)

    _, weights = build_backbone("multiscale", "auto", seed=0)
    assert weights.source == "random" and weights.weights_id == "random-s0"
    assert "NOT pretrained" in weights.description and "\n" not in weights.description


@pytest.mark.parametrize("family", ["resnet50", "efficientnet"])
def test_imagenet_loads_from_cache_without_network(family: str, offline: Path) -> None:
    # Stand-in for the real file: a full classifier state dict (head included) in the hub cache.
    with torch.random.fork_rng():
        torch.manual_seed(7)
        full = resnet50() if family == "resnet50" else EfficientNet.from_name("efficientnet-b0")
    filename = Path(models._IMAGENET_URLS[family]).name
    offline.mkdir(parents=True)
    torch.save(full.state_dict(), offline / filename)

    assert imagenet_weights_available(family)
    for choice in ("imagenet", "auto"):
        trunk, weights = build_backbone(family, choice)
        assert weights.source == "imagenet" and str(offline / filename) in weights.description
    assert weights.weights_id == ("imagenet1k_v2" if family == "resnet50" else "imagenet-355c32eb")
    conv = "conv1.weight" if family == "resnet50" else "_conv_stem.weight"
    assert torch.equal(trunk.state_dict()[conv], full.state_dict()[conv])


def test_projection_round_trip_and_fingerprint(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    raw = np.maximum(rng.standard_normal((60, 1280)), 0).astype(np.float32) + 0.5  # non-negative, like ReLU
    projection = FeatureProjection.fit(raw, seed=0)
    assert projection.components.shape == (1280, EMBEDDING_DIM) and projection.n_data_components == 59
    gram = projection.components.T @ projection.components
    np.testing.assert_allclose(gram, np.eye(EMBEDDING_DIM), atol=1e-5)  # data basis + complement orthonormal

    emb = projection.transform(raw)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    off_diag = ~np.eye(len(raw), dtype=bool)
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    assert (unit @ unit.T)[off_diag].min() > 0.6  # raw features crowd towards 1 ...
    assert np.abs((emb @ emb.T)[off_diag]).mean() < 0.1  # ... centred PCA spreads them

    path = tmp_path / "proj" / "projection.npz"
    projection.save(path)
    restored = FeatureProjection.load(path)
    assert path.is_file() and restored.fingerprint() == projection.fingerprint()
    assert len(projection.fingerprint()) == 12
    np.testing.assert_array_equal(restored.transform(raw), emb)
    assert FeatureProjection.fit(raw, seed=0).fingerprint() == projection.fingerprint()
    assert FeatureProjection.fit(raw[:-1], seed=0).fingerprint() != projection.fingerprint()

    whitened = FeatureProjection.fit(raw, seed=0, whiten=True)
    assert whitened.fingerprint() != projection.fingerprint()
    np.testing.assert_allclose(np.linalg.norm(whitened.transform(raw), axis=1), 1.0, atol=1e-5)

    with pytest.raises(ValueError, match="1280"):
        projection.transform(raw[:, :100])


def test_preprocess_modes_and_empty_batch() -> None:
    embedder = Embedder("efficientnet", "random", image_size=SIZE)
    grey = Image.fromarray(np.full((40, 30), 128, dtype=np.uint8), mode="L")
    rgba = Image.fromarray(np.full((30, 50, 4), 200, dtype=np.uint8), mode="RGBA")
    palette = grey.convert("P")
    batch = embedder.preprocess([grey, rgba, palette])
    assert batch.shape == (3, 3, SIZE, SIZE) and batch.dtype == torch.float32
    std, mean = (torch.tensor(v).view(1, 3, 1, 1) for v in (models.IMAGENET_STD, models.IMAGENET_MEAN))
    pixels = batch * std + mean
    torch.testing.assert_close(pixels[0], torch.full((3, SIZE, SIZE), 128 / 255))  # grey -> equal channels
    torch.testing.assert_close(pixels[1], torch.full((3, SIZE, SIZE), 200 / 255))
    assert embedder.preprocess([]).shape == (0, 3, SIZE, SIZE)
    assert embedder.raw_features([]).shape == (0, RAW_DIMS["efficientnet"])


def test_misuse_is_reported() -> None:
    with pytest.raises(ValueError, match="unknown model family 'vit'"):
        build_backbone("vit", "random")
    embedder = Embedder("efficientnet", "random", image_size=SIZE)
    with pytest.raises(RuntimeError, match="fit_projection"):
        embedder.embed([Image.new("RGB", (SIZE, SIZE))])
    assert embedder.version_key()["projection"] is None
    with pytest.raises(ValueError, match="1280"):
        embedder.fit_projection(np.zeros((4, 2048), dtype=np.float32))


def test_resolve_device() -> None:
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present")
def test_resolve_device_cuda_absent() -> None:
    with pytest.raises(ValueError, match="CUDA is not available.*device='cpu'"):
        resolve_device("cuda")
