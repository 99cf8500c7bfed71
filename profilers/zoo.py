"""Real architectures for whole-model checks: Hugging Face `transformers` models built from
their configurations with random weights (no download), CNNs and transformers.

    model, inputs = build("resnet50", batch_size=8)
    jaxlat-profile torch-model --model profilers.zoo:resnet50 --input-shape 8,3,224,224 --out r50.json

Needs the `models` extra (`transformers`). Weights are random: latency depends on shapes and
operators, not on values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _t():
    try:
        import transformers
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("profilers.zoo needs the 'models' extra: pip install 'jaxlat[models]'") from e
    transformers.logging.set_verbosity_error()
    return transformers


def _image(cls_name: str, config_name: str, **cfg: Any) -> Callable[[], Any]:
    def factory(**overrides: Any):
        t = _t()
        return getattr(t, cls_name)(getattr(t, config_name)(**{**cfg, **overrides})).eval()

    factory.__name__ = cls_name
    return factory


def _text(cls_name: str, config_name: str, **cfg: Any) -> Callable[[], Any]:
    def factory(**overrides: Any):
        t = _t()
        config = getattr(t, config_name)(**{**cfg, **overrides})
        config._attn_implementation = "sdpa"
        return getattr(t, cls_name)(config).eval()

    factory.__name__ = cls_name
    return factory


resnet18 = _image("ResNetForImageClassification", "ResNetConfig", layer_type="basic", depths=[2, 2, 2, 2],
                  hidden_sizes=[64, 128, 256, 512])
resnet50 = _image("ResNetForImageClassification", "ResNetConfig")
mobilenet_v1 = _image("MobileNetV1ForImageClassification", "MobileNetV1Config")
mobilenet_v2 = _image("MobileNetV2ForImageClassification", "MobileNetV2Config")
efficientnet_b0 = _image("EfficientNetForImageClassification", "EfficientNetConfig", width_coefficient=1.0,
                         depth_coefficient=1.0, image_size=224, hidden_dim=1280)
convnext_tiny = _image("ConvNextForImageClassification", "ConvNextConfig")
regnet_y_400mf = _image("RegNetForImageClassification", "RegNetConfig", depths=[1, 3, 6, 6],
                        hidden_sizes=[48, 104, 208, 440], groups_width=8, layer_type="y")
vit_b16 = _image("ViTForImageClassification", "ViTConfig")
deit_small = _image("ViTForImageClassification", "ViTConfig", hidden_size=384, num_attention_heads=6,
                    intermediate_size=1536)
swin_tiny = _image("SwinForImageClassification", "SwinConfig")
bert_base = _text("BertModel", "BertConfig")
distilbert = _text("DistilBertModel", "DistilBertConfig")

#: name -> (factory, input kind, input shape at batch 1). "image": float (b, 3, h, w);
#: "tokens": int64 ids (b, seq).
ZOO: dict[str, tuple[Callable[..., Any], str, tuple[int, ...]]] = {
    "resnet18": (resnet18, "image", (1, 3, 224, 224)),
    "resnet50": (resnet50, "image", (1, 3, 224, 224)),
    "mobilenet_v1": (mobilenet_v1, "image", (1, 3, 224, 224)),
    "mobilenet_v2": (mobilenet_v2, "image", (1, 3, 224, 224)),
    "efficientnet_b0": (efficientnet_b0, "image", (1, 3, 224, 224)),
    "convnext_tiny": (convnext_tiny, "image", (1, 3, 224, 224)),
    "regnet_y_400mf": (regnet_y_400mf, "image", (1, 3, 224, 224)),
    "vit_b16": (vit_b16, "image", (1, 3, 224, 224)),
    "deit_small": (deit_small, "image", (1, 3, 224, 224)),
    "swin_tiny": (swin_tiny, "image", (1, 3, 224, 224)),
    "bert_base": (bert_base, "tokens", (1, 128)),
    "distilbert": (distilbert, "tokens", (1, 128)),
}


def build(name: str, *, batch_size: int = 1, seed: int = 0) -> tuple[Any, tuple[Any, ...]]:
    """The model `name` in eval mode and example inputs at `batch_size`.

    Raises:
      ValueError: an unknown name (the message lists the zoo).
    """
    import torch

    if name not in ZOO:
        raise ValueError(f"model={name!r} is not valid: expected one of {', '.join(ZOO)}")
    factory, kind, shape = ZOO[name]
    torch.manual_seed(seed)
    model = factory()
    shape = (batch_size, *shape[1:])
    x = torch.randint(0, 1000, shape) if kind == "tokens" else torch.randn(*shape)
    return model, (x,)
