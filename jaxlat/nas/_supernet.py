"""Supernets (Flax NNX) of the search spaces in `profilers.spaces`, for the accuracy side of a
search: every candidate of every layer is computed and mixed by the architecture weights.

- `MobileSupernet`: one single-path superblock per layer at the largest width (superkernel
  relaxation: kernel sizes mixed in the depthwise weights, expansions as channel masks; the
  network is as cheap as one candidate network); a stage's width multiplier acts through a soft
  channel mask `sigmoid((base * width - c - 0.5) / t)` over channel index `c`, so the accuracy
  gradient reaches the widths as the latency gradient does. The expected latency stays the exact
  mixture over candidates: only the accuracy side is relaxed.
- `Nb201Supernet`: NAS-Bench-201 cells whose 6 edges mix none, skip, 1x1 and 3x3 ReLU-conv-BN
  and 3x3 average pooling.

Inputs are NHWC. Batch norm uses the batch's statistics (no running state), as supernet
searches usually do, so every call is a pure function of parameters and inputs.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from profilers.spaces import NB201_EDGES, NB201_OPS, BlockOp, MobileSpace, Nb201Space

_ACT = {"relu": jax.nn.relu, "relu6": jax.nn.relu6, "silu": jax.nn.silu, "hardswish": jax.nn.hard_swish,
        "gelu": jax.nn.gelu}


class BatchNorm(nnx.Module):
    """Batch normalization over N, H, W with the batch's own statistics."""

    def __init__(self, channels: int, *, rngs: nnx.Rngs):
        del rngs
        self.scale = nnx.Param(jnp.ones((channels,)))
        self.bias = nnx.Param(jnp.zeros((channels,)))

    def __call__(self, x: jax.Array) -> jax.Array:
        mean = x.mean((0, 1, 2))
        var = x.var((0, 1, 2))
        return (x - mean) * jax.lax.rsqrt(var + 1e-5) * self.scale[...] + self.bias[...]


class ConvBN(nnx.Module):
    """Convolution (no bias), batch norm, optional activation; 'same' padding `k // 2`."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: str | None = None,
                 *, rngs: nnx.Rngs):
        self.conv = nnx.Conv(cin, cout, (k, k), strides=stride, padding=[(k // 2, k // 2)] * 2,
                             feature_group_count=groups, use_bias=False, rngs=rngs)
        self.bn = BatchNorm(cout, rngs=rngs)
        self.act = act

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.bn(self.conv(x))
        return _ACT[self.act](y) if self.act else y


def depthwise_conv(x: jax.Array, kernel: jax.Array, stride: int = 1) -> jax.Array:
    """Depthwise convolution, 'same' padding `k // 2`, as a sum of `k * k` shifted products.

    XLA's grouped convolution on CPU is orders of magnitude slower than this for depthwise
    kernels (measured: a 16x16 supernet step went from ~1.7 s to ~0.1 s).

    Args:
      x: `[n, h, w, c]`.
      kernel: `[k, k, c]`.
      stride: 1 or 2.
    """
    k = kernel.shape[0]
    p = k // 2
    n, h, w, c = x.shape
    xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    ho, wo = (h + 2 * p - k) // stride + 1, (w + 2 * p - k) // stride + 1
    out = jnp.zeros((n, ho, wo, c), x.dtype)
    for i in range(k):
        for j in range(k):
            patch = xp[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride, :]
            out = out + patch * kernel[i, j]
    return out


def _round_up(x: float, m: int) -> int:
    return int(math.ceil(x / m)) * m


class _SuperBlock(nnx.Module):
    """All candidates of one layer in one block (single-path superkernel): a 1x1 expansion to
    the largest expansion, masked per channel by the expansion marginals; a depthwise convolution
    whose kernel is the sum of each kernel size's weights (zero-padded to the largest) weighted by
    the kernel marginals; a 1x1 projection; the input added back where the shape allows. A skip
    candidate mixes in the identity (or its 1x1 projection) with its probability. Expansion 1
    keeps a 1x1 expansion to `cin` channels here even where the space has none (the accuracy
    proxy's relaxation; latency counts the space's rows).
    """

    def __init__(self, space: MobileSpace, cin: int, cout: int, stride: int, residual: bool, *, rngs: nnx.Rngs):
        ops = [BlockOp.parse(o) for o in space.ops]
        if any(o.groups > 1 for o in ops):
            raise ValueError(f"{space.name}: the supernet supports candidates with groups=1 only")
        convs = [o for o in ops if not o.is_skip]
        self.kernels = tuple(sorted({o.kernel for o in convs}))
        self.expansions = tuple(sorted({o.expansion for o in convs}))
        # candidate index -> (kernel position, expansion position), -1 for skip
        self.k_of = tuple(-1 if o.is_skip else self.kernels.index(o.kernel) for o in ops)
        self.e_of = tuple(-1 if o.is_skip else self.expansions.index(o.expansion) for o in ops)
        self.skip_index = next((i for i, o in enumerate(ops) if o.is_skip), None)
        kmax, mid = max(self.kernels), cin * max(self.expansions)
        self.cin, self.stride, self.act = cin, stride, space.act
        self.expand = ConvBN(cin, mid, 1, 1, 1, space.act, rngs=rngs)
        key = rngs.params()
        self.dw = nnx.Param(jnp.stack([
            jnp.pad(jax.random.normal(jax.random.fold_in(key, i), (k, k, 1, mid)) * (2.0 / (k * k)) ** 0.5,
                    [((kmax - k) // 2,) * 2, ((kmax - k) // 2,) * 2, (0, 0), (0, 0)])
            for i, k in enumerate(self.kernels)]))
        self.dw_bn = BatchNorm(mid, rngs=rngs)
        self.project = ConvBN(mid, cout, 1, 1, 1, None, rngs=rngs)
        self.residual = residual
        needs_proj = self.skip_index is not None and not residual
        self.skip = ConvBN(cin, cout, 1, stride, 1, space.act, rngs=rngs) if needs_proj else None

    def __call__(self, x: jax.Array, p: jax.Array) -> jax.Array:
        pk = jnp.stack([sum(p[i] for i, k in enumerate(self.k_of) if k == j) for j in range(len(self.kernels))])
        pe = jnp.stack([sum(p[i] for i, e in enumerate(self.e_of) if e == j) for j in range(len(self.expansions))])
        conv_p = pk.sum()  # probability of a non-skip candidate
        pk, pe = pk / jnp.maximum(conv_p, 1e-6), pe / jnp.maximum(conv_p, 1e-6)
        y = self.expand(x)
        c = jnp.arange(y.shape[-1])
        y = y * sum(pe[j] * (c < e * self.cin) for j, e in enumerate(self.expansions))
        kernel = jnp.tensordot(pk, self.dw[...], axes=1)[:, :, 0, :]
        y = depthwise_conv(y, kernel, self.stride)
        y = self.project(_ACT[self.act](self.dw_bn(y)))
        if self.residual:
            y = x + y
        if self.skip_index is None:
            return y
        skip = x if self.skip is None else self.skip(x)
        return conv_p * y + p[self.skip_index] * skip


class MobileSupernet(nnx.Module):
    """Supernet of a `MobileSpace`: `model(x, probs, masks) -> logits`, one superblock per layer.

    Args (call):
      x: images `[n, h, w, 3]`.
      probs: `[n_layers, n_ops]` candidate weights.
      masks: per channel group, `[max_channels]` soft masks (None: every channel on).
    """

    def __init__(self, space: MobileSpace, *, rngs: nnx.Rngs):
        self.space = space
        hi = space.width_range[1] if space.width_range is not None else 1.0
        m = space.channel_multiple
        self.max_channels = tuple([space.base_channels[0]] + [_round_up(c * hi, m) if space.width_range else c
                                                              for c in space.base_channels[1:]])
        mc = self.max_channels
        self.stem = ConvBN(3, mc[0], 3, space.stem_stride, 1, space.act, rngs=rngs)
        self.layers = nnx.List([_SuperBlock(space, mc[layer.cin], mc[layer.cout], layer.stride,
                                            space.keeps_shape(layer), rngs=rngs) for layer in space.layers()])
        c_last = mc[-1]
        self.head = ConvBN(c_last, space.head_channels, 1, 1, 1, space.act, rngs=rngs) if space.head_channels else None
        self.fc = nnx.Linear(space.head_channels or c_last, space.classes, rngs=rngs)

    def __call__(self, x: jax.Array, probs: jax.Array, masks: Any = None) -> jax.Array:
        x = self.stem(x)
        for l, (layer, block) in enumerate(zip(self.space.layers(), self.layers)):
            y = block(x, probs[l])
            x = y if masks is None else y * masks[layer.cout]
        if self.head is not None:
            x = self.head(x)
        return self.fc(x.mean((1, 2)))


def channel_masks(space: MobileSpace, max_channels: tuple[int, ...], widths: jax.Array | None,
                  softness: float = 1.0) -> list[jax.Array] | None:
    """Soft channel masks per group for stage widths (None when widths are not searched)."""
    if space.width_range is None or widths is None:
        return None
    masks = [jnp.ones((max_channels[0],))]
    for s, (base, cmax) in enumerate(zip(space.base_channels[1:], max_channels[1:])):
        c = jnp.arange(cmax, dtype=jnp.float32)
        masks.append(jax.nn.sigmoid((base * widths[s] - c - 0.5) / softness))
    return masks


class _Zero(nnx.Module):
    def __call__(self, x):
        return jnp.zeros_like(x)


class _Identity(nnx.Module):
    def __call__(self, x):
        return x


class _AvgPool3(nnx.Module):
    def __call__(self, x):  # count_include_pad=False, as the benchmark's cell
        pad = [(0, 0), (1, 1), (1, 1), (0, 0)]
        s = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), pad)
        n = jax.lax.reduce_window(jnp.ones_like(x[:1, ..., :1]), 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), pad)
        return s / n


class _ReLUConvBN(nnx.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, *, rngs: nnx.Rngs):
        self.conv = ConvBN(cin, cout, k, stride, 1, None, rngs=rngs)

    def __call__(self, x):
        return self.conv(jax.nn.relu(x))


def _nb201_edge(op: str, c: int, rngs: nnx.Rngs) -> nnx.Module:
    if op == "none":
        return _Zero()
    if op == "skip_connect":
        return _Identity()
    if op == "avg_pool_3x3":
        return _AvgPool3()
    return _ReLUConvBN(c, c, 1 if op == "nor_conv_1x1" else 3, rngs=rngs)


class _Reduction(nnx.Module):
    def __init__(self, cin: int, cout: int, *, rngs: nnx.Rngs):
        self.a = _ReLUConvBN(cin, cout, 3, 2, rngs=rngs)
        self.b = _ReLUConvBN(cout, cout, 3, 1, rngs=rngs)
        self.down = nnx.Conv(cin, cout, (1, 1), use_bias=False, rngs=rngs)

    def __call__(self, x):
        pooled = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID") / 4.0
        return self.down(pooled) + self.b(self.a(x))


class Nb201Supernet(nnx.Module):
    """Supernet of NAS-Bench-201: `model(x, probs) -> logits`, `probs` `[6, 5]` (edges x ops).

    `cells` (default: the space's) sets the cells per stage of the supernet only; the latency
    is always the space's.
    """

    def __init__(self, space: Nb201Space, *, cells: int | None = None, rngs: nnx.Rngs):
        c = space.c
        self.stem = ConvBN(3, c, 3, rngs=rngs)
        blocks = []
        for g, width in enumerate((c, 2 * c, 4 * c)):
            if g:
                blocks.append(_Reduction(width // 2, width, rngs=rngs))
            for _ in range(space.cells if cells is None else cells):
                blocks.append(nnx.List([nnx.List([_nb201_edge(op, width, rngs) for op in NB201_OPS])
                                        for _ in NB201_EDGES]))
        self.blocks = nnx.List(blocks)
        self.last = BatchNorm(4 * c, rngs=rngs)
        self.fc = nnx.Linear(4 * c, space.classes, rngs=rngs)

    def __call__(self, x: jax.Array, probs: jax.Array, masks: Any = None) -> jax.Array:
        del masks
        x = self.stem(x)
        for block in self.blocks:
            if isinstance(block, _Reduction):
                x = block(x)
                continue
            nodes = [x]
            for j in (1, 2, 3):
                acc = 0.0
                for e, ((t, i), ops) in enumerate(zip(NB201_EDGES, block)):
                    if t == j:
                        acc = acc + sum(probs[e, k] * op(nodes[i]) for k, op in enumerate(ops))
                nodes.append(acc)
            x = nodes[-1]
        return self.fc(jax.nn.relu(self.last(x)).mean((1, 2)))


def supernet(space: MobileSpace | Nb201Space, *, rngs: nnx.Rngs, **kwargs: Any) -> nnx.Module:
    """The supernet of a space."""
    if isinstance(space, MobileSpace):
        return MobileSupernet(space, rngs=rngs)
    if isinstance(space, Nb201Space):
        return Nb201Supernet(space, rngs=rngs, **kwargs)
    raise ValueError(f"space={space!r} has no supernet: expected a MobileSpace or an Nb201Space")


def init_supernet(space: MobileSpace | Nb201Space, seed: int = 0, **kwargs: Any) -> nnx.Module:
    """`supernet(space, rngs=nnx.Rngs(seed), **kwargs)`, built by one compiled program per space
    and settings (cached): further seeds cost milliseconds instead of one small compile per
    parameter."""
    return _init_program(space, tuple(sorted(kwargs.items())))(jax.random.key(seed))


@functools.lru_cache(maxsize=16)
def _init_program(space: Any, kwargs: tuple) -> Any:
    return nnx.jit(lambda key: supernet(space, rngs=nnx.Rngs(key), **dict(kwargs)))
