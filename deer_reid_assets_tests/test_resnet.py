"""Our ResNets are torchvision's (keys, shapes, seeded weights, outputs, ImageNet files) without its
3-second import; the image transforms equal torchvision's v2 pipeline."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision.transforms import v2

from deer_reid_assets.core.embed.backbones import IMAGENET_MEAN, IMAGENET_STD
from deer_reid_assets.core.embed.resnet import IMAGENET_WEIGHTS, ResNet
from deer_reid_assets.core.reid.data import eval_transform, train_augmentations


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50"])
def test_same_network_and_seeded_weights_as_torchvision(arch: str) -> None:
    torch.manual_seed(7)
    ours = ResNet(arch).eval()
    torch.manual_seed(7)
    theirs = getattr(torchvision.models, arch)(weights=None).eval()
    a, b = ours.state_dict(), theirs.state_dict()
    assert list(a) == list(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)
    weights = {"resnet18": torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
               "resnet34": torchvision.models.ResNet34_Weights.IMAGENET1K_V1,
               "resnet50": torchvision.models.ResNet50_Weights.IMAGENET1K_V2}[arch]
    assert IMAGENET_WEIGHTS[arch] == (weights.name, weights.url)


def test_transforms_equal_torchvision_v2() -> None:
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in [(50, 90), (120, 64),
                                                                                              (80, 80)]]
    images.append(images[0].convert("L"))  # greyscale -> RGB
    reference_eval = v2.Compose([v2.ToImage(), v2.Resize((80, 80), antialias=True), v2.ToDtype(torch.float32, scale=True),
                                 v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    reference_train = v2.Compose([v2.ToImage(), v2.Resize((80, 80), antialias=True), v2.RandomHorizontalFlip(p=0.5),
                                  v2.ToDtype(torch.float32, scale=True)])
    ours_eval, ours_train = eval_transform(80), train_augmentations(80, flip=True)
    for image in images:
        rgb = image.convert("RGB")
        torch.testing.assert_close(ours_eval(image), reference_eval(rgb), rtol=0, atol=1e-6)
        torch.manual_seed(1)
        mine = [ours_train(image) for _ in range(6)]
        torch.manual_seed(1)
        theirs = [reference_train(rgb) for _ in range(6)]
        for m, t in zip(mine, theirs, strict=True):
            torch.testing.assert_close(m, t, rtol=0, atol=1e-6)
        assert any(not torch.equal(mine[0], m) for m in mine[1:])  # the flip really happens, sometimes


def test_embedding_and_training_code_does_not_import_torchvision() -> None:
    code = ("import sys; import deer_reid_assets.core.upload_path, deer_reid_assets.core.embed.finetuned, "
            "deer_reid_assets.core.reid.trainer, deer_reid_assets.core.embed.embedder; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torchvision' or m == 'torch._dynamo'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
