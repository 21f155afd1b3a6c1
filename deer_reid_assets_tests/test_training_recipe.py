"""The re-ID recipe: loss terms and heads, learning beyond the untrained network, the collapse guard,
warm starts (a saved random torchvision ResNet50 state dict), the real-data check on a generated
folder, and collapsed models never reaching the embedder. CPU, random weights, small inputs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from click.testing import CliRunner
from PIL import Image, ImageDraw

from deer_reid_assets.cli import main
from deer_reid_assets.core.reid import crops_check, guard
from deer_reid_assets.core.reid import training as T
from deer_reid_assets.core.store import migrations, reid_models


def _deer(identity: int, shot: int, size: int = 64) -> Image.Image:
    """A learnable toy identity: body colour, a mark whose place and shape are the animal's, per-shot
    position jitter, brightness and noise."""
    rng = np.random.default_rng([identity, shot])
    ident = np.random.default_rng([identity, 999])
    sky = rng.uniform(60, 200, 3)
    pixels = np.clip(sky + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    body = tuple(int(c) for c in ident.uniform(40, 220, 3))
    dx, dy = int(rng.integers(-4, 5)), int(rng.integers(-4, 5))
    draw.ellipse([12 + dx, 20 + dy, 52 + dx, 44 + dy], fill=body)
    mx, my = int(ident.integers(16, 44)), int(ident.integers(24, 38))
    mark = (255, 255, 255) if identity % 2 else (0, 0, 0)
    if identity % 3 == 0:
        draw.rectangle([mx + dx, my + dy, mx + dx + 6, my + dy + 4], fill=mark)
    else:
        draw.ellipse([mx + dx, my + dy, mx + dx + 6, my + dy + 6], fill=mark)
    return image


def _items(n_ids: int, shots: range) -> list[tuple[Image.Image, str]]:
    return [(_deer(i, s), f"deer{i}") for i in range(n_ids) for s in shots]


# ----------------------------------------------------------------------------------------- loss terms


def test_id_loss_heads_and_shapes():
    torch.manual_seed(0)
    feature, labels = torch.randn(6, 16), torch.tensor([0, 0, 1, 1, 2, 2])
    linear = T.LinearHead(16, 3)
    assert linear(feature).shape == (6, 3) and linear.fc.bias is None  # bias-free classifier
    smooth, hard = T.id_loss(linear(feature), labels, 0.1), T.id_loss(linear(feature), labels, 0.0)
    assert smooth.ndim == 0 and smooth.item() > 0 and smooth.item() != pytest.approx(hard.item())
    arc = T.SubCenterArcFace(16, 3, subcenters=2, margin=0.3, scale=10.0)
    assert arc.weight.shape == (6, 16)
    plain, margined = arc(feature), arc(feature, labels)
    assert plain.shape == margined.shape == (6, 3)
    true = torch.arange(6), labels
    assert (margined[true] < plain[true]).all()  # the margin makes the true class harder
    other = torch.ones(6, 3, dtype=torch.bool)
    other[true] = False
    assert torch.allclose(margined[other], plain[other])
    loss = T.id_loss(margined, labels)
    loss.backward()
    assert torch.isfinite(arc.weight.grad).all() and arc.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        T.id_loss(torch.randn(6), labels)


def test_reidnet_features_and_options():
    model = T.ReIDNet("random", arch="resnet18", seed=0)
    pre, neck = model.features(torch.randn(3, 3, 64, 64))
    assert pre.shape == neck.shape == (3, 512) and not model.neck.bias.requires_grad
    wide = T.ReIDNet("random", arch="resnet50", last_stride=2, seed=0)
    assert wide.reduce.weight.shape == (512, 2048) and wide.trunk.layer4[0].conv2.stride == (2, 2)
    assert T.ReIDNet("random", arch="resnet50", seed=0).trunk.layer4[0].conv2.stride == (1, 1)  # last stride 1


def test_sampler_hook_puts_confused_deer_in_one_batch():
    labels = [name for name in "abcdefgh" for _ in range(3)]
    sampler = T.PKSampler(labels, p=2, k=2, batches=40, seed=0, confusers={"a": ["h"], "zz": ["a"]})
    together = [{labels[i] for i in batch} for batch in sampler]
    with_a = [s for s in together if "a" in s]
    assert with_a and all(len(s) == 2 for s in together)
    assert sum(s == {"a", "h"} for s in with_a) >= len(with_a) // 2  # drawn after a whenever a is drawn first
    plain = [{labels[i] for i in batch} for batch in T.PKSampler(labels, p=2, k=2, batches=40, seed=0)]
    assert sum(s == {"a", "h"} for s in plain) < sum(s == {"a", "h"} for s in together)


# -------------------------------------------------------------------------------------------- learning


def test_training_beats_the_untrained_network(tmp_path):
    train_items, val_items = _items(8, range(6)), _items(8, range(100, 104))
    config = T.TrainConfig.cpu_profile(epochs=8, image_size=48, batches_per_epoch=4, p=4, k=4, warmup_epochs=1,
                                       backbone_weights="random", seed=1)
    result = T.train(train_items, val_items, config, tmp_path)
    untrained = result.history[0]
    assert untrained.epoch == 0 and np.isnan(untrained.loss)
    assert result.best_val_rank1 > untrained.val_rank1 and result.best_val_mAP > untrained.val_mAP
    assert result.status == "ok" and result.guard_message.startswith("learned")
    payload = torch.load(result.checkpoint, weights_only=True)
    assert payload["guard"]["status"] == "ok" and payload["arch"] == "resnet18"


def test_guard_flags_a_constant_output_model():
    identities = [f"d{i // 3}" for i in range(12)]
    split = guard.validation_split(identities)
    rng = np.random.default_rng(0)
    untrained = guard.validation_figures(rng.normal(size=(12, 8)), identities, split)
    constant = guard.validation_figures(np.ones((12, 8)) + 1e-9 * rng.normal(size=(12, 8)), identities, split)
    assert constant["different_cosine"] > 0.99 and constant["same_cosine"] > 0.99
    status, message = guard.verdict(untrained, {**constant, "val_rank1": 1.0})
    assert status == "collapsed" and "different deer look alike" in message and "not published" in message
    assert guard.top_component_share(np.outer(rng.normal(size=12), rng.normal(size=8))) == pytest.approx(1.0)
    healthy = {**untrained, "val_rank1": untrained["val_rank1"] + 0.1, "different_cosine": 0.1}
    assert guard.verdict(untrained, healthy)[0] == "ok"


def test_validation_against_a_gallery_scores_queries_only():
    """With a gallery (the training crops), queries are retrieved from it; the collapse diagnostics
    look at the queries alone, since the gallery was trained on."""
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(3, 16))
    queries = np.repeat(centres, 2, axis=0) + 0.05 * rng.normal(size=(6, 16))
    gallery = np.repeat(centres, 3, axis=0)
    q_ids, g_ids = [f"d{i // 2}" for i in range(6)], [f"d{i // 3}" for i in range(9)]
    split = guard.gallery_split(6, 9)
    figures = guard.validation_figures(np.vstack([queries, gallery]), q_ids + g_ids, split)
    assert figures["val_rank1"] == 1.0 and figures["val_mAP"] == pytest.approx(1.0)
    assert figures["different_cosine"] == pytest.approx(guard.pair_cosines(queries, q_ids)[1])
    swapped = guard.validation_figures(np.vstack([queries, gallery[::-1]]), q_ids + g_ids, split)
    assert swapped["val_rank1"] < 1.0  # the gallery's labels matter: retrieval, not a constant


def test_train_validates_on_queries_retrieved_from_the_gallery(tmp_path):
    train_items, val_items = _items(6, range(4)), _items(6, range(100, 102))
    config = T.TrainConfig.cpu_profile(epochs=1, image_size=32, batches_per_epoch=1, p=3, k=2, warmup_epochs=0,
                                       backbone_weights="random", seed=2)
    result = T.train(train_items, val_items, config, tmp_path / "a", val_gallery=train_items)
    net = T.ReIDNet("random", arch=config.arch, last_stride=config.last_stride, seed=config.seed)
    emb = T.embed_images(net, [img for img, _ in val_items + train_items], config.image_size)
    labels = [i for _, i in val_items + train_items]
    by_hand = guard.validation_figures(emb, labels, guard.gallery_split(len(val_items), len(train_items)))
    assert result.history[0].val_rank1 == pytest.approx(by_hand["val_rank1"])
    assert result.history[0].val_mAP == pytest.approx(by_hand["val_mAP"], abs=1e-4)
    with pytest.raises(ValueError, match="no identity of val_items is in val_gallery"):
        T.train(train_items, _items(8, range(100, 102))[-4:], config, tmp_path / "b", val_gallery=train_items)


class _Constant(torch.nn.Module):
    def forward(self, x):
        return torch.ones(x.shape[0], 4)


def test_guard_on_a_constant_output_network():
    identities = ["a", "a", "b", "b", "c", "c"]
    emb = T.embed_images(_Constant(), [_deer(i, 0) for i in range(6)], 32)
    figures = guard.validation_figures(emb, identities, guard.validation_split(identities))
    assert figures["different_cosine"] == pytest.approx(1.0)
    assert guard.verdict(figures, figures)[0] == "collapsed"


# ------------------------------------------------------------------------------------------ warm start


def test_warm_start_from_a_torchvision_resnet50_state_dict(tmp_path):
    torch.manual_seed(7)
    reference = torchvision.models.resnet50(weights=None)
    path = tmp_path / "resnet50.pth"
    torch.save(reference.state_dict(), path)  # torchvision format, fc.* included
    model = T.ReIDNet(path, arch="resnet50", seed=0)
    assert model.weights.source == "checkpoint" and "torchvision state dict" in model.weights.description
    for name, tensor in reference.state_dict().items():
        if not name.startswith("fc."):
            assert torch.equal(model.trunk.state_dict()[name], tensor), name
    torch.save({f"module.{k}": v for k, v in reference.state_dict().items()}, tmp_path / "dp.pth")
    assert torch.equal(T.ReIDNet(tmp_path / "dp.pth", arch="resnet50").trunk.conv1.weight, reference.conv1.weight)
    with pytest.raises(ValueError, match="does not fit a torchvision resnet18"):
        T.ReIDNet(path, arch="resnet18")
    with pytest.raises(ValueError, match="neither one of"):
        T.ReIDNet(tmp_path / "missing.pth")


def test_warm_start_from_an_earlier_checkpoint_continues_training(tmp_path):
    items, val = _items(4, range(3)), _items(4, range(50, 52))
    config = T.TrainConfig.cpu_profile(epochs=1, image_size=32, p=2, k=2, batches_per_epoch=1, warmup_epochs=0,
                                       backbone_weights="random")
    first = T.train(items, val, config, tmp_path / "a")
    again = T.train(items + _items(5, range(3))[-3:], val, dataclasses.replace(config, backbone_weights=str(first.checkpoint)),
                    tmp_path / "b")
    start, _ = T.load_reid_model(first.checkpoint)
    assert again.backbone_weights["source"] == "checkpoint"
    assert again.history[0].val_mAP == pytest.approx(first.best_val_mAP, abs=1e-6)  # epoch 0 = where it left off
    assert T.ReIDNet(first.checkpoint).trunk.conv1.weight.equal(start.trunk.conv1.weight)


# ---------------------------------------------------------------------------------- real-data check


def _crops_folder(root: Path, n_animals: int = 8, shots: int = 6) -> Path:
    for i in range(n_animals):
        folder = root / f"animal{i:02d}"
        folder.mkdir(parents=True)
        for s in range(shots):
            _deer(i, s).save(folder / f"{s:03d}.jpg")
    return root


def test_crops_check_holds_out_whole_animals(tmp_path):
    folder = _crops_folder(tmp_path / "crops")
    items = crops_check.read_crops(folder)
    parts = crops_check.split_animals(items, 0.4, seed=0)
    test_animals = {a for _, a in parts["test"]}
    assert test_animals and not test_animals & {a for _, a in parts["train"] + parts["val"]}
    config = T.TrainConfig.cpu_profile(epochs=2, image_size=32, p=2, k=2, batches_per_epoch=2, warmup_epochs=0,
                                       backbone_weights="random")
    check = crops_check.run(folder, config, tmp_path / "run", holdout=0.4)
    for figures in (check.untrained, check.trained):
        assert 0 <= figures["rank1"] <= 1 and 0 <= figures["mAP"] <= 1 and 0 <= figures["assignment_rate"] <= 1
    assert check.test_animals == len(test_animals) and check.n_test == len(parts["test"])
    text = check.report()
    assert "| untrained (starting weights) |" in text and "| trained |" in text and "guard:" in text
    with pytest.raises(ValueError, match="at least 4 animals"):
        crops_check.read_crops(_crops_folder(tmp_path / "few", n_animals=2))


def test_cli_train_crops(tmp_path):
    folder = _crops_folder(tmp_path / "crops", n_animals=6, shots=5)
    result = CliRunner().invoke(main, ["train", "--crops", str(folder), "--profile", "cpu", "--epochs", "1",
                                       "--image-size", "32", "--weights", "random"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "epoch 1/1" in result.output and "assignment rate at FMR <= 5%" in result.output
    assert "NOT pretrained" in result.output
    bad = CliRunner().invoke(main, ["train", "--crops", str(tmp_path / "nope")])
    assert bad.exit_code != 0 and "does not exist" in bad.output


# ------------------------------------------------------------------------------------------- storage


def test_a_collapsed_model_is_never_handed_to_the_embedder(engine, tmp_path):
    migrations.migrate(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO reid_training_manifests (version, config, stats) VALUES ('tm-x', '{}', '{}')")
    good, bad = tmp_path / "good.pt", tmp_path / "bad.pt"
    good.write_bytes(b"good")
    bad.write_bytes(b"bad")
    reid_models.register_model(engine, manifest_version="tm-x", checkpoint=good, config={}, history=[{"loss": float("nan")}],
                               best_val_map=0.5, device="cpu", status="ok", guard={"status": "ok"})
    version = reid_models.register_model(engine, manifest_version="tm-x", checkpoint=bad, config={}, history=[],
                                         best_val_map=0.1, device="cpu", status="collapsed",
                                         guard={"status": "collapsed", "best": {"same_cosine": float("nan")}})
    assert reid_models.latest_model(engine)["checkpoint_path"] == str(good)
    newest = reid_models.latest_model(engine, include_collapsed=True)
    assert newest["version"] == version and newest["status"] == "collapsed"
    assert newest["guard"]["best"]["same_cosine"] is None
