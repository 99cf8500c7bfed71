"""Generated networks: random but realistic CNNs and transformers, for fitting the
whole-model composition correction and for sampling module configs the way real models use
them (input resolutions, channel progressions, token counts).

    model, inputs, info = generated_network(seed=3, batch_size=8)

Four families, each with its design choices drawn from `seed`: `resnet` (basic or bottleneck
residual stages), `mbconv` (inverted residuals with depthwise convolutions, optional
squeeze-excitation), `vit` (patch embedding and pre-norm transformer blocks) and `text`
(token embedding and transformer blocks). Weights are random; only shapes and operators matter.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

FAMILIES = ("resnet", "mbconv", "vit", "text")

_ACTS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "silu": nn.SiLU, "hardswish": nn.Hardswish, "gelu": nn.GELU}


def _act(name: str) -> nn.Module:
    return _ACTS[name]()


def _round8(x: float) -> int:
    return max(8, int(round(x / 8)) * 8)


class _ConvBN(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int, s: int = 1, groups: int = 1, act: str | None = "relu"):
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        if act:
            layers.append(_act(act))
        super().__init__(*layers)


class _Basic(nn.Module):
    def __init__(self, cin: int, cout: int, s: int, act: str):
        super().__init__()
        self.body = nn.Sequential(_ConvBN(cin, cout, 3, s, act=act), _ConvBN(cout, cout, 3, 1, act=None))
        self.short = None if (cin == cout and s == 1) else _ConvBN(cin, cout, 1, s, act=None)
        self.act = _act(act)

    def forward(self, x):
        return self.act(self.body(x) + (x if self.short is None else self.short(x)))


class _Bottleneck(nn.Module):
    def __init__(self, cin: int, cout: int, s: int, act: str, ratio: int):
        super().__init__()
        mid = _round8(cout / ratio)
        self.body = nn.Sequential(_ConvBN(cin, mid, 1, act=act), _ConvBN(mid, mid, 3, s, act=act), _ConvBN(mid, cout, 1, act=None))
        self.short = None if (cin == cout and s == 1) else _ConvBN(cin, cout, 1, s, act=None)
        self.act = _act(act)

    def forward(self, x):
        return self.act(self.body(x) + (x if self.short is None else self.short(x)))


class _SE(nn.Module):
    def __init__(self, c: int, r: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, max(8, c // r), 1), nn.Conv2d(max(8, c // r), c, 1)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))


class _MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, s: int, k: int, e: int, act: str, se: bool):
        super().__init__()
        mid = cin * e
        layers: list[nn.Module] = [] if e == 1 else [_ConvBN(cin, mid, 1, act=act)]
        layers.append(_ConvBN(mid, mid, k, s, groups=mid, act=act))
        if se:
            layers.append(_SE(mid, 4))
        layers.append(_ConvBN(mid, cout, 1, act=None))
        self.body = nn.Sequential(*layers)
        self.residual = cin == cout and s == 1

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


class _CNN(nn.Module):
    def __init__(self, stem: nn.Module, blocks: list[nn.Module], c_last: int, head_c: int | None, act: str):
        super().__init__()
        self.stem, self.blocks = stem, nn.Sequential(*blocks)
        self.head = _ConvBN(c_last, head_c, 1, act=act) if head_c else nn.Identity()
        self.fc = nn.Linear(head_c or c_last, 1000)

    def forward(self, x):
        x = self.head(self.blocks(self.stem(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class _Attention(nn.Module):
    def __init__(self, d: int, heads: int, fused_qkv: bool, sdpa: bool):
        super().__init__()
        self.h, self.sdpa = heads, sdpa
        self.qkv = nn.Linear(d, 3 * d) if fused_qkv else None
        self.q, self.k, self.v = (None, None, None) if fused_qkv else (nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d))
        self.proj = nn.Linear(d, d)

    def forward(self, x):
        b, t, d = x.shape
        if self.qkv is not None:
            q, k, v = self.qkv(x).reshape(b, t, 3, self.h, d // self.h).permute(2, 0, 3, 1, 4)
        else:
            q, k, v = (f(x).view(b, t, self.h, d // self.h).transpose(1, 2) for f in (self.q, self.k, self.v))
        if self.sdpa:
            o = nn.functional.scaled_dot_product_attention(q, k, v)
        else:
            a = torch.softmax(q @ k.transpose(-2, -1) * (d // self.h) ** -0.5, dim=-1)
            o = a @ v
        return self.proj(o.transpose(1, 2).reshape(b, t, d))


class _Block(nn.Module):
    def __init__(self, d: int, heads: int, mlp: int, act: str, fused_qkv: bool, sdpa: bool, pre_norm: bool):
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = _Attention(d, heads, fused_qkv, sdpa)
        self.mlp = nn.Sequential(nn.Linear(d, mlp * d), _act(act), nn.Linear(mlp * d, d))
        self.pre = pre_norm

    def forward(self, x):
        if self.pre:
            x = x + self.attn(self.n1(x))
            return x + self.mlp(self.n2(x))
        x = self.n1(x + self.attn(x))
        return self.n2(x + self.mlp(x))


class _ViT(nn.Module):
    def __init__(self, patch: int, d: int, tokens: int, blocks: list[nn.Module], cls: bool):
        super().__init__()
        self.embed = nn.Conv2d(3, d, patch, patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, d)) if cls else None
        self.pos = nn.Parameter(torch.zeros(1, tokens + int(cls), d))
        self.blocks, self.norm, self.fc = nn.Sequential(*blocks), nn.LayerNorm(d), nn.Linear(d, 1000)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        if self.cls is not None:
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.norm(self.blocks(x + self.pos))
        return self.fc(x[:, 0] if self.cls is not None else x.mean(1))


class _Text(nn.Module):
    def __init__(self, vocab: int, d: int, seq: int, blocks: list[nn.Module]):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(seq, d)
        self.norm, self.blocks = nn.LayerNorm(d), nn.Sequential(*blocks)
        self.fc = nn.Linear(d, 2)

    def forward(self, ids):
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.norm(self.tok(ids) + self.pos(pos))
        return self.fc(torch.tanh(self.blocks(x)[:, 0]))


def _resnet(rng: np.random.Generator, b: int) -> tuple[nn.Module, torch.Tensor, dict[str, Any]]:
    res = int(rng.choice([96, 128, 160, 192, 224]))
    act = str(rng.choice(["relu", "relu", "silu"]))
    c = _round8(rng.uniform(16, 64))
    bottleneck = bool(rng.random() < 0.5)
    stem_k = int(rng.choice([3, 7]))
    stem: nn.Module = nn.Sequential(_ConvBN(3, c, stem_k, 2, act=act), nn.MaxPool2d(3, 2, 1))
    blocks, cin = [], c
    widths = []
    for stage in range(int(rng.integers(3, 5))):
        cout = _round8(c * 2**stage * (4 if bottleneck else 1) * rng.uniform(0.75, 1.25))
        for i in range(int(rng.integers(1, 4))):
            s = 2 if (i == 0 and stage > 0) else 1
            blocks.append(_Bottleneck(cin, cout, s, act, 4) if bottleneck else _Basic(cin, cout, s, act))
            cin = cout
        widths.append(cout)
    info = {"family": "resnet", "resolution": res, "bottleneck": bottleneck, "widths": widths}
    return _CNN(stem, blocks, cin, None, act), torch.randn(b, 3, res, res), info


def _mbconv(rng: np.random.Generator, b: int) -> tuple[nn.Module, torch.Tensor, dict[str, Any]]:
    res = int(rng.choice([96, 128, 160, 192, 224]))
    act = str(rng.choice(["relu6", "hardswish", "silu"]))
    se = bool(rng.random() < 0.5)
    width = rng.uniform(0.5, 1.25)
    c = _round8(32 * width)
    stem = _ConvBN(3, c, 3, 2, act=act)
    blocks, cin = [], c
    base = [16, 24, 40, 80, 112, 192, 320]
    for stage, w in enumerate(base[: int(rng.integers(5, 8))]):
        cout = _round8(w * width)
        k = int(rng.choice([3, 5, 7]))
        e = 1 if stage == 0 else int(rng.choice([3, 4, 6]))
        for i in range(int(rng.integers(1, 4))):
            s = 2 if (i == 0 and stage in (1, 2, 3, 5)) else 1
            blocks.append(_MBConv(cin, cout, s, k, e, act, se and stage > 1))
            cin = cout
    head = _round8(rng.choice([960, 1280]) * width)
    info = {"family": "mbconv", "resolution": res, "se": se, "width": round(float(width), 3), "act": act}
    return _CNN(stem, blocks, cin, head, act), torch.randn(b, 3, res, res), info


def _transformer_blocks(rng, d: int) -> tuple[list[nn.Module], dict[str, Any]]:
    heads = int(rng.choice([h for h in (2, 3, 4, 6, 8, 12, 16) if d % h == 0 and d // h >= 16]))
    depth = int(rng.integers(2, 9))
    mlp = int(rng.choice([2, 3, 4]))
    act = str(rng.choice(["gelu", "gelu", "relu", "silu"]))
    fused, sdpa, pre = bool(rng.random() < 0.5), bool(rng.random() < 0.6), bool(rng.random() < 0.7)
    blocks = [_Block(d, heads, mlp, act, fused, sdpa, pre) for _ in range(depth)]
    return blocks, {"dim": d, "heads": heads, "depth": depth, "mlp_ratio": mlp, "sdpa": sdpa}


def _vit(rng: np.random.Generator, b: int) -> tuple[nn.Module, torch.Tensor, dict[str, Any]]:
    patch = int(rng.choice([8, 14, 16, 32]))
    res = patch * int(rng.integers(4, 17))
    d = int(rng.choice([128, 192, 256, 384, 512, 768]))
    blocks, info = _transformer_blocks(rng, d)
    tokens = (res // patch) ** 2
    model = _ViT(patch, d, tokens, blocks, cls=bool(rng.random() < 0.6))
    return model, torch.randn(b, 3, res, res), {"family": "vit", "resolution": res, "patch": patch, **info}


def _text(rng: np.random.Generator, b: int) -> tuple[nn.Module, torch.Tensor, dict[str, Any]]:
    seq = int(rng.choice([16, 32, 64, 128, 256]))
    d = int(rng.choice([128, 256, 384, 512, 768]))
    blocks, info = _transformer_blocks(rng, d)
    vocab = int(rng.choice([8000, 30000]))
    ids = torch.randint(0, vocab, (b, seq))
    return _Text(vocab, d, seq, blocks), ids, {"family": "text", "seq_len": seq, **info}


_BUILDERS = {"resnet": _resnet, "mbconv": _mbconv, "vit": _vit, "text": _text}


class _SamePad(nn.Module):
    """TensorFlow's "same" padding as its own operator, computed from the input's size (as
    models ported from TensorFlow do): `ceil(n / stride)` outputs, the odd pixel after."""

    def __init__(self, kernel: int, stride: int):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x):
        pads = []
        for n in (x.shape[-1], x.shape[-2]):
            total = max((-(-n // self.stride) - 1) * self.stride + self.kernel - n, 0)
            pads += [total // 2, total - total // 2]
        return nn.functional.pad(x, pads)


def _explicit_padding(model: nn.Module) -> nn.Module:
    """Every convolution preceded by a `_SamePad` and left unpadded itself."""
    for name, child in list(model.named_children()):
        if isinstance(child, nn.Conv2d):
            k, s = child.kernel_size[0], child.stride[0]
            child.padding = (0, 0)
            setattr(model, name, nn.Sequential(_SamePad(k, s), child))
        else:
            _explicit_padding(child)
    return model


def check_family(family: str) -> str:
    """`family`, or a `ValueError` naming the allowed ones."""
    if family not in _BUILDERS:
        raise ValueError(f"family={family!r} is not valid: expected one of {', '.join(FAMILIES)}")
    return family


def generated_network(
    seed: int, *, batch_size: int = 1, family: str | None = None, explicit_padding: bool = False
) -> tuple[nn.Module, tuple[torch.Tensor, ...], dict[str, Any]]:
    """Build generated network `seed` (family cycles with the seed unless given).

    With `explicit_padding`, every convolution gets TensorFlow's "same" padding as a separate
    pad operator (a copy), as in models ported from TensorFlow, and pads nothing itself; the
    architecture is otherwise that of `seed`.

    Returns (model in eval mode, example inputs, description). The same seed and family give
    the same architecture at every batch size.
    """
    fam = FAMILIES[seed % len(FAMILIES)] if family is None else check_family(family)
    rng = np.random.default_rng([seed, FAMILIES.index(fam)])
    torch.manual_seed(seed)
    model, x, info = _BUILDERS[fam](rng, batch_size)
    if explicit_padding:
        model, info = _explicit_padding(model), {**info, "explicit_padding": True}
    return model.eval(), (x,), {"seed": seed, **info}
