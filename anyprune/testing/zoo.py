"""The torchvision zoo used by tests and benchmarks (random weights, nothing downloaded)."""

from __future__ import annotations

import fnmatch
from typing import Any

import torch

__all__ = ["ZOO", "list_models", "build", "example_inputs"]

# name -> (input kind, small spatial size used by tests)
ZOO: dict[str, str] = {
    "resnet18": "image",
    "resnet50": "image",
    "resnext50_32x4d": "image",
    "wide_resnet50_2": "image",
    "vgg16_bn": "image",
    "alexnet": "image",
    "squeezenet1_1": "image",
    "densenet121": "image",
    "googlenet": "image",
    "inception_v3": "inception",
    "mobilenet_v2": "image",
    "mobilenet_v3_large": "image",
    "mnasnet1_0": "image",
    "shufflenet_v2_x1_0": "image",
    "efficientnet_b0": "image",
    "efficientnet_v2_s": "image",
    "regnet_x_1_6gf": "image",
    "regnet_y_1_6gf": "image",
    "convnext_tiny": "image",
    "fcn_resnet50": "segmentation",
    "deeplabv3_mobilenet_v3_large": "segmentation",
    "lraspp_mobilenet_v3_large": "segmentation",
    "r3d_18": "video",
    "fasterrcnn_resnet50_fpn": "detection",
}


def list_models(include: str = "*", exclude: list[str] | tuple[str, ...] = ()) -> list[str]:
    return [n for n in ZOO if fnmatch.fnmatch(n, include) and not any(fnmatch.fnmatch(n, e) for e in exclude)]


def build(name: str, **kwargs: Any) -> torch.nn.Module:
    """The model with random weights, in eval mode."""
    import torchvision

    kind = ZOO[name]
    extra: dict[str, Any] = {}
    if kind in ("segmentation", "detection"):
        extra = {"weights": None, "weights_backbone": None}
        if kind == "segmentation":
            extra["aux_loss"] = False
        if kind == "detection":
            extra.update(min_size=160, max_size=160)
    if name in ("inception_v3", "googlenet"):
        extra.update(init_weights=False, aux_logits=False)
    extra.update(kwargs)
    return torchvision.models.get_model(name, **extra).eval()


def example_inputs(name: str, size: int | None = None, dtype: torch.dtype = torch.float32,
                   device: str = "cpu") -> Any:
    kind = ZOO[name]
    g = torch.Generator().manual_seed(0)
    if kind == "inception":
        s = size or 299
        return torch.randn(1, 3, max(s, 75), max(s, 75), generator=g, dtype=dtype).to(device)
    if kind == "video":
        s = size or 112
        return torch.randn(1, 3, 4, s, s, generator=g, dtype=dtype).to(device)
    if kind == "detection":
        s = size or 160
        return [torch.rand(3, s, s, generator=g, dtype=dtype).to(device)]
    s = size or 224
    return torch.randn(1, 3, s, s, generator=g, dtype=dtype).to(device)
