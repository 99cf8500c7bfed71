"""NAS search spaces described with the module catalogue: one description serves the relaxed
(differentiable) latency of a supernet in `jaxlat.nas`, the architecture record of a derived
network, and its torch model for end-to-end measurement.

    space = mobile_space(resolution=96)                       # kernels 3/5/7 x expansion 1/3/6, skip, widths
    arch = space.random_arch(seed=0)
    space.record(arch)                                        # ArchRecord, no torch needed
    space.torch_model(arch)                                   # nn.Module (needs torch)

    FBNET.arch_from_indices([0, 3, 8, ...])                   # HW-NAS-Bench's FBNet space, 22 layers
    NB201.parse("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")

An architecture is a list of **rows**: catalogue modules (and the operators outside the
catalogue) whose channel fields may be symbolic, `Ch(group, mult)`: `mult` times the channels of
channel group `group` (the stem, a stage). A concrete architecture rounds each group's channels
(`base * width`, to a multiple of `channel_multiple`); the relaxed one keeps them continuous, so
latency has a gradient with respect to width. The rows are what `capture_torch` sees in the torch
model (tests check that), so the record built here and the captured one agree.

Published encodings: `NB201` is NAS-Bench-201's cell space on its CIFAR skeleton (C=16, N=5,
32x32 input; 6 edges of none / skip_connect / nor_conv_1x1 / nor_conv_3x3 / avg_pool_3x3; every
edge computed, `none` as a multiplication by zero, as in the benchmark's inference cell).
`FBNET` is the FBNet space of HW-NAS-Bench (22 layers of k3_e1, k3_e1_g2, k3_e3, k3_e6, k5_e1,
k5_e1_g2, k5_e3, k5_e6, skip; stages of 1, 4, 4, 4, 4, 4, 1 layers with 16, 24, 32, 64, 112,
184, 352 channels, CIFAR strides 1, 1, 2, 2, 1, 2, 1, stem 16 channels at stride 1, header 1504,
100 classes, 32x32 input).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._arch import ArchModule, ArchRecord, UnmappedOp
from ._catalogue import ModuleConfig, make_config


@dataclasses.dataclass(frozen=True)
class Ch:
    """A channel count: `mult` times the channels of channel group `group`."""

    group: int
    mult: float = 1.0


@dataclasses.dataclass(frozen=True)
class Row:
    """One operator of an architecture.

    Attributes:
      module: a catalogue type, or `"unmapped"` for an operator outside the catalogue.
      fields: the type's fields; channel fields may be `Ch`. For `"unmapped"`: `op`, `kind`
        (`view` or `compute`) and `numel` (elements moved; a number or a `Ch` times `hw`).
      op: the ATen operator it stands for.
      hw: spatial elements per channel (numel of an unmapped operator = channels x hw).
    """

    module: str
    fields: Mapping[str, Any]
    op: str = ""
    hw: int = 1


def _value(v: Any, channels: Sequence[float]) -> Any:
    return v.mult * channels[v.group] if isinstance(v, Ch) else v


def _conv(cin: Any, cout: Any, h: int, k: int, s: int = 1, groups: Any = 1, bias: bool = False) -> Row:
    return Row("conv2d", {"cin": cin, "cout": cout, "h": h, "w": h, "kernel": k, "stride": s, "groups": groups,
                          "bias": bias}, "conv2d")


def _bn(c: Any, h: int) -> Row:
    return Row("batchnorm2d", {"channels": c, "h": h, "w": h}, "batch_norm")


def _act(c: Any, h: int, act: str, *, inplace: bool = False) -> Row:
    op = {"relu": "relu", "relu6": "hardtanh"}.get(act, act) + ("_" if inplace else "")
    return Row("activation", {"activation": act, "channels": c, "h": h, "w": h}, op)


def _add(c: Any, h: int, *, inplace: bool = False) -> Row:
    return Row("add", {"channels": c, "h": h, "w": h}, "add_" if inplace else "add")


def _out(h: int, s: int) -> int:
    return (h - 1) // s + 1


class _Space:
    """What every space offers on top of `rows(arch)`: channels, configs, records.

    Subclasses are frozen dataclasses with `name`, `resolution`, `channel_multiple`, the run
    settings `batch_size`, `dtype`, `threads`, `utilization`, and `base_channels` (the base
    channels of each channel group, which widths scale).
    """

    def rows(self, arch: Any) -> list[Row]:  # pragma: no cover - each space defines it
        raise NotImplementedError

    def group_widths(self, arch: Any) -> tuple[float, ...]:
        """The width multiplier of each channel group (1.0 where widths are not searched)."""
        return (1.0,) * len(self.base_channels)

    def channels(self, arch: Any) -> list[int]:
        """Concrete channels per group: `base * width` rounded to `channel_multiple` (at least
        that multiple); unscaled groups keep their base."""
        out = []
        for base, w in zip(self.base_channels, self.group_widths(arch)):
            if w == 1.0:
                out.append(int(base))
            else:
                m = self.channel_multiple
                out.append(max(m, int(round(base * w / m)) * m))
        return out

    def modules(self, arch: Any) -> list[ArchModule]:
        """The architecture's catalogue configs, in graph order."""
        ch = self.channels(arch)
        common = {"batch_size": self.batch_size, "dtype": self.dtype, "threads": self.threads,
                  "utilization": self.utilization}
        out = []
        for r in self.rows(arch):
            if r.module == "unmapped":
                continue
            fields = {k: _value(v, ch) for k, v in r.fields.items()}
            fields = {k: int(round(v)) if k in _INT_FIELDS else v for k, v in fields.items()}
            out.append(ArchModule(make_config(r.module, **fields, **common), r.op))
        return out

    def unmapped(self, arch: Any) -> list[UnmappedOp]:
        """The operators outside the catalogue, aggregated by name and kind (as in records)."""
        ch = self.channels(arch)
        agg: dict[tuple[str, str], list[int]] = {}
        from ._catalogue import dtype_bytes

        for r in self.rows(arch):
            if r.module != "unmapped":
                continue
            f = r.fields
            moved = 0 if f["kind"] == "view" else int(round(_value(f["numel"], ch))) * r.hw * self.batch_size * 2 * dtype_bytes(self.dtype)
            e = agg.setdefault((f["op"], f["kind"]), [0, 0])
            e[0] += 1
            e[1] += moved
        return [UnmappedOp(op, kind, c, b) for (op, kind), (c, b) in agg.items()]

    def input_shape(self) -> tuple[int, ...]:
        return (self.batch_size, 3, self.resolution, self.resolution)

    def record(self, arch: Any, *, name: str | None = None) -> ArchRecord:
        """The architecture record of `arch` (what `capture_torch` gives for its torch model)."""
        return ArchRecord(name or f"{self.name}:{self.encode(arch)}_b{self.batch_size}", (self.input_shape(),),
                          tuple(self.modules(arch)), tuple(self.unmapped(arch)),
                          info={"space": self.name, "arch": self.encode(arch)})

    def encode(self, arch: Any) -> str:  # pragma: no cover - each space defines it
        raise NotImplementedError

    def with_settings(self, **settings: Any):
        """The space with other run settings (`batch_size`, `dtype`, `threads`, `utilization`,
        `resolution`)."""
        allowed = {"batch_size", "dtype", "threads", "utilization", "resolution"}
        bad = sorted(set(settings) - allowed)
        if bad:
            raise ValueError(f"with_settings: {bad} not valid: expected some of {sorted(allowed)}")
        return dataclasses.replace(self, **settings)


_INT_FIELDS = frozenset({"cin", "cout", "groups", "channels", "in_features", "out_features"})


# -- MobileNet / FBNet-style spaces ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BlockOp:
    """A candidate of a layer: an inverted residual `k{kernel}_e{expansion}[_g{groups}]`, or `skip`."""

    name: str
    kernel: int = 0
    expansion: int = 0
    groups: int = 1

    @property
    def is_skip(self) -> bool:
        return self.name == "skip"

    @classmethod
    def parse(cls, name: str) -> BlockOp:
        if name == "skip":
            return cls("skip")
        m = re.fullmatch(r"k(\d+)_e(\d+)(?:_g(\d+))?", name)
        if not m:
            raise ValueError(f"op={name!r} is not valid: expected 'skip' or 'k<kernel>_e<expansion>[_g<groups>]', e.g. k3_e6")
        return cls(name, int(m.group(1)), int(m.group(2)), int(m.group(3) or 1))


@dataclasses.dataclass(frozen=True)
class MobileArch:
    """A point of a `MobileSpace`: one op name per layer, one width multiplier per stage."""

    ops: tuple[str, ...]
    widths: tuple[float, ...] = ()


@dataclasses.dataclass(frozen=True)
class Layer:
    """A searchable layer: input and output channel groups, stride, input resolution."""

    index: int
    stage: int
    cin: int  # channel group of the input
    cout: int  # channel group of the output
    stride: int
    h: int


@dataclasses.dataclass(frozen=True)
class MobileSpace(_Space):
    """A chain of inverted-residual layers between a stem and a classifier head.

    Attributes:
      name: printed in record names.
      stages: `(layers, channels, first stride)` per stage.
      ops: the candidate ops of every layer (`BlockOp` names).
      stem_channels: output channels of the 3x3 stem convolution.
      stem_stride: its stride.
      head_channels: channels of the 1x1 header convolution before pooling (0: none).
      classes: outputs of the final linear layer.
      resolution: input height and width (the input has 3 channels).
      act: activation of the blocks (`relu`, `relu6`, ...).
      expand_when_e1: keep the 1x1 expansion convolution at expansion 1 (FBNet does).
      width_range: `(low, high)` multipliers of each stage's channels when widths are searched;
        None: widths fixed at 1.
      channel_multiple: concrete channels are rounded to multiples of this.
      batch_size, dtype, threads, utilization: run settings of the latency.
    """

    name: str
    stages: tuple[tuple[int, int, int], ...]
    ops: tuple[str, ...]
    stem_channels: int = 16
    stem_stride: int = 1
    head_channels: int = 0
    classes: int = 10
    resolution: int = 32
    act: str = "relu"
    expand_when_e1: bool = True
    width_range: tuple[float, float] | None = None
    channel_multiple: int = 8
    batch_size: int = 1
    dtype: str = "fp32"
    threads: int = 1
    utilization: float = 0.0

    def __post_init__(self) -> None:
        for op in self.ops:
            BlockOp.parse(op)
        if self.width_range is not None and not 0 < self.width_range[0] <= self.width_range[1]:
            raise ValueError(f"width_range={self.width_range} is not valid: expected 0 < low <= high")

    @property
    def base_channels(self) -> tuple[int, ...]:
        """Group 0: the stem; group s + 1: stage s."""
        return (self.stem_channels, *(c for _, c, _ in self.stages))

    @property
    def n_stages(self) -> int:
        return len(self.stages)

    def layers(self) -> list[Layer]:
        out, h = [], _out(self.resolution, self.stem_stride)
        for s, (n, _, stride) in enumerate(self.stages):
            for i in range(n):
                st = stride if i == 0 else 1
                out.append(Layer(len(out), s, s if i == 0 else s + 1, s + 1, st, h))
                h = _out(h, st)
        return out

    def group_widths(self, arch: MobileArch) -> tuple[float, ...]:
        if self.width_range is None or not arch.widths:
            return (1.0,) * len(self.base_channels)
        return (1.0, *arch.widths)

    def check(self, arch: MobileArch) -> MobileArch:
        """`arch`, validated: one known op per layer, one width in range per stage."""
        n = len(self.layers())
        if len(arch.ops) != n:
            raise ValueError(f"{self.name}: {len(arch.ops)} ops given, the space has {n} layers")
        bad = [o for o in arch.ops if o not in self.ops]
        if bad:
            raise ValueError(f"{self.name}: op={bad[0]!r} is not valid: expected one of {', '.join(self.ops)}")
        if self.width_range is None:
            if arch.widths and any(w != 1.0 for w in arch.widths):
                raise ValueError(f"{self.name}: widths are not searched in this space")
        elif arch.widths:
            lo, hi = self.width_range
            if len(arch.widths) != self.n_stages or any(not lo - 1e-9 <= w <= hi + 1e-9 for w in arch.widths):
                raise ValueError(f"{self.name}: widths={arch.widths} is not valid: expected {self.n_stages} "
                                 f"values in [{lo}, {hi}]")
        return arch

    def keeps_shape(self, layer: Layer) -> bool:
        """Input and output have the same shape whatever the widths: a skip is the identity and
        blocks add their input (stride 1, and the same channel group, or two unscaled groups of
        equal channels)."""
        if layer.stride != 1:
            return False
        base = self.base_channels
        return layer.cin == layer.cout or (self.width_range is None and base[layer.cin] == base[layer.cout])

    def layer_rows(self, layer: Layer, op_name: str) -> list[Row]:
        """The rows of candidate `op_name` at `layer` (symbolic channels)."""
        op = BlockOp.parse(op_name)
        h, s = layer.h, layer.stride
        ho = _out(h, s)
        cin, cout = Ch(layer.cin), Ch(layer.cout)
        same = self.keeps_shape(layer)
        if op.is_skip:
            if same:
                return []
            return [_conv(cin, cout, h, 1, s), _bn(cout, ho), _act(cout, ho, self.act, inplace=True)]
        mid = Ch(layer.cin, op.expansion)
        rows: list[Row] = []
        if op.expansion != 1 or self.expand_when_e1:
            rows += [_conv(cin, mid, h, 1, 1, op.groups), _bn(mid, h), _act(mid, h, self.act, inplace=True)]
        if op.groups > 1:  # channel shuffle: view, permute, contiguous copy, view
            hw = h * h
            rows += [Row("unmapped", {"op": "view", "kind": "view", "numel": 0}),
                     Row("unmapped", {"op": "permute", "kind": "view", "numel": 0}),
                     Row("unmapped", {"op": "contiguous", "kind": "compute", "numel": mid}, hw=hw),
                     Row("unmapped", {"op": "view", "kind": "view", "numel": 0})]
        rows += [_conv(mid, mid, h, op.kernel, s, mid), _bn(mid, ho), _act(mid, ho, self.act, inplace=True),
                 _conv(mid, cout, ho, 1, 1, op.groups), _bn(cout, ho)]
        if same:
            rows.append(_add(cout, ho, inplace=True))
        return rows

    def stem_rows(self) -> list[Row]:
        r = self.resolution
        ho = _out(r, self.stem_stride)
        return [_conv(3, Ch(0), r, 3, self.stem_stride), _bn(Ch(0), ho), _act(Ch(0), ho, self.act, inplace=True)]

    def head_rows(self) -> list[Row]:
        last = self.layers()[-1]
        h = _out(last.h, last.stride)
        c: Any = Ch(len(self.stages))
        rows: list[Row] = []
        if self.head_channels:
            rows += [_conv(c, self.head_channels, h, 1), _bn(self.head_channels, h),
                     _act(self.head_channels, h, self.act, inplace=True)]
            c = self.head_channels
        rows += [Row("global_pool2d", {"mode": "avg", "channels": c, "h": h, "w": h}, "adaptive_avg_pool2d"),
                 Row("unmapped", {"op": "view", "kind": "view", "numel": 0}),
                 Row("linear", {"in_features": c, "out_features": self.classes, "tokens": 1, "bias": True}, "linear")]
        return rows

    def relaxed_rows(self) -> tuple[list[Row], list[list[list[Row]]]]:
        """`(fixed, choices)`: the rows every architecture has, and `choices[layer][op]`, the rows
        of each candidate of each layer (op in `self.ops` order)."""
        return self.stem_rows() + self.head_rows(), [[self.layer_rows(layer, op) for op in self.ops]
                                                     for layer in self.layers()]

    def rows(self, arch: MobileArch) -> list[Row]:
        arch = self.check(arch)
        out = self.stem_rows()
        for layer, op in zip(self.layers(), arch.ops):
            out += self.layer_rows(layer, op)
        return out + self.head_rows()

    def encode(self, arch: MobileArch) -> str:
        text = "-".join(arch.ops)
        if self.width_range is not None and arch.widths:
            text += "@" + ",".join(f"{w:.3g}" for w in arch.widths)
        return text

    def arch_from_indices(self, indices: Sequence[int], widths: Sequence[float] = ()) -> MobileArch:
        """An architecture from op indices (HW-NAS-Bench's `op_idx_list` for `FBNET`)."""
        try:
            ops = tuple(self.ops[int(i)] for i in indices)
        except IndexError:
            raise ValueError(f"{self.name}: op indices must lie in 0..{len(self.ops) - 1}") from None
        return self.check(MobileArch(ops, tuple(float(w) for w in widths)))

    def random_arch(self, seed: int = 0) -> MobileArch:
        rng = np.random.default_rng(seed)
        ops = tuple(str(rng.choice(self.ops)) for _ in self.layers())
        widths = ()
        if self.width_range is not None:
            widths = tuple(float(round(rng.uniform(*self.width_range), 3)) for _ in self.stages)
        return MobileArch(ops, widths)

    def torch_model(self, arch: MobileArch):
        """The architecture as a torch `nn.Module` (eval mode, random weights)."""
        from ._spaces_torch import mobile_model

        return mobile_model(self, self.check(arch))


def mobile_space(
    *,
    resolution: int = 96,
    kernels: Sequence[int] = (3, 5, 7),
    expansions: Sequence[int] = (1, 3, 6),
    skip: bool = True,
    stages: Sequence[tuple[int, int, int]] = ((1, 16, 1), (2, 24, 2), (3, 32, 2), (3, 64, 2), (2, 96, 1), (2, 160, 2)),
    width_range: tuple[float, float] | None = (0.5, 1.5),
    classes: int = 10,
    **settings: Any,
) -> MobileSpace:
    """A MobileNetV2-like space: per layer a kernel and an expansion (or skip), per stage a
    continuous width multiplier; relu6 blocks, stem 32 channels at stride 2, header 320."""
    ops = tuple(f"k{k}_e{e}" for k in kernels for e in expansions) + (("skip",) if skip else ())
    return MobileSpace("mobile", tuple(stages), ops, stem_channels=32, stem_stride=2, head_channels=320,
                       classes=classes, resolution=resolution, act="relu6", expand_when_e1=False,
                       width_range=width_range, **settings)


#: HW-NAS-Bench's FBNet space (FBNetV1 setting, CIFAR-100 skeleton). Ops in the benchmark's
#: index order, so that `FBNET.arch_from_indices(op_idx_list)` reads its encodings.
FBNET = MobileSpace(
    "fbnet",
    stages=((1, 16, 1), (4, 24, 1), (4, 32, 2), (4, 64, 2), (4, 112, 1), (4, 184, 2), (1, 352, 1)),
    ops=("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip"),
    stem_channels=16,
    stem_stride=1,
    head_channels=1504,
    classes=100,
    resolution=32,
    act="relu",
    expand_when_e1=True,
)


# -- NAS-Bench-201 ------------------------------------------------------------------------------

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
#: (target node, source node) of the 6 edges, in the order of the arch string.
NB201_EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))


@dataclasses.dataclass(frozen=True)
class Nb201Arch:
    """A NAS-Bench-201 cell: the op of each edge in `NB201_EDGES` order."""

    edges: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Nb201Space(_Space):
    """NAS-Bench-201's cell space on its skeleton: stem, three stages of `cells` cells at `c`,
    `2c`, `4c` channels joined by residual reduction blocks, then BN, ReLU, pooling, linear.

    Widths are not searched; `ops` and the skeleton are the benchmark's.
    """

    name: str = "nb201"
    c: int = 16
    cells: int = 5
    classes: int = 10
    resolution: int = 32
    batch_size: int = 1
    dtype: str = "fp32"
    threads: int = 1
    utilization: float = 0.0
    channel_multiple: int = 1

    @property
    def base_channels(self) -> tuple[int, ...]:
        return (self.c, 2 * self.c, 4 * self.c)

    @property
    def ops(self) -> tuple[str, ...]:
        return NB201_OPS

    def parse(self, text: str) -> Nb201Arch:
        """Read an arch string such as `|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|...|`."""
        nodes = [n for n in text.strip().split("+")]
        edges: dict[tuple[int, int], str] = {}
        try:
            for j, node in enumerate(nodes, start=1):
                for tok in node.strip("|").split("|"):
                    op, src = tok.split("~")
                    if op not in NB201_OPS:
                        raise ValueError(f"op {op!r} is not valid: expected one of {', '.join(NB201_OPS)}")
                    edges[(j, int(src))] = op
        except ValueError as e:
            raise ValueError(f"arch string {text!r} is not a NAS-Bench-201 cell: {e}") from None
        if sorted(edges) != sorted(NB201_EDGES):
            raise ValueError(f"arch string {text!r} is not a NAS-Bench-201 cell: expected the 6 edges "
                             "node1<-0, node2<-0,1, node3<-0,1,2")
        return Nb201Arch(tuple(edges[e] for e in NB201_EDGES))

    def encode(self, arch: Nb201Arch) -> str:
        parts = []
        for j in (1, 2, 3):
            parts.append("|" + "|".join(f"{op}~{i}" for (t, i), op in zip(NB201_EDGES, arch.edges) if t == j) + "|")
        return "+".join(parts)

    def all_archs(self) -> list[Nb201Arch]:
        """All 5^6 = 15,625 cells."""
        return [Nb201Arch(e) for e in itertools.product(NB201_OPS, repeat=6)]

    def random_arch(self, seed: int = 0) -> Nb201Arch:
        rng = np.random.default_rng(seed)
        return Nb201Arch(tuple(str(rng.choice(NB201_OPS)) for _ in NB201_EDGES))

    def check(self, arch: Nb201Arch) -> Nb201Arch:
        if len(arch.edges) != 6 or any(op not in NB201_OPS for op in arch.edges):
            raise ValueError(f"{arch} is not a NAS-Bench-201 cell: expected 6 ops from {', '.join(NB201_OPS)}")
        return arch

    def edge_rows(self, op: str, group: int, h: int) -> list[Row]:
        """Rows of one edge at channel group `group`, resolution `h`."""
        c = Ch(group)
        if op == "none":  # the benchmark's Zero op: x.mul(0.)
            return [Row("unmapped", {"op": "mul", "kind": "compute", "numel": c}, hw=h * h)]
        if op == "skip_connect":
            return []
        if op == "avg_pool_3x3":
            return [Row("pool2d", {"mode": "avg", "channels": c, "h": h, "w": h, "kernel": 3, "stride": 1},
                        "avg_pool2d")]
        k = 1 if op == "nor_conv_1x1" else 3
        return [_act(c, h, "relu"), _conv(c, c, h, k), _bn(c, h)]

    def cell_rows(self, arch: Nb201Arch, group: int, h: int) -> list[Row]:
        rows: list[Row] = []
        for j in (1, 2, 3):
            incoming = [op for (t, _), op in zip(NB201_EDGES, arch.edges) if t == j]
            for op in incoming:
                rows += self.edge_rows(op, group, h)
            rows += [_add(Ch(group), h)] * (len(incoming) - 1)
        return rows

    def stage_h(self) -> tuple[int, int, int]:
        r = self.resolution
        return (r, _out(r, 2), _out(_out(r, 2), 2))

    def fixed_rows(self, where: str, group: int = 0) -> list[Row]:
        """Rows outside the cells: `stem`, `reduction` into `group`, `head`."""
        hs = self.stage_h()
        if where == "stem":
            return [_conv(3, Ch(0), self.resolution, 3), _bn(Ch(0), self.resolution)]
        if where == "reduction":  # NAS-Bench-201's ResNet basic block, stride 2
            h, ho = hs[group - 1], hs[group]
            cin, cout = Ch(group - 1), Ch(group)
            return [Row("pool2d", {"mode": "avg", "channels": cin, "h": h, "w": h, "kernel": 2, "stride": 2}, "avg_pool2d"),
                    _conv(cin, cout, ho, 1),
                    _act(cin, h, "relu"), _conv(cin, cout, h, 3, 2), _bn(cout, ho),
                    _act(cout, ho, "relu"), _conv(cout, cout, ho, 3), _bn(cout, ho), _add(cout, ho)]
        if where == "head":
            h, c = hs[2], Ch(2)
            return [_bn(c, h), _act(c, h, "relu"),
                    Row("global_pool2d", {"mode": "avg", "channels": c, "h": h, "w": h}, "adaptive_avg_pool2d"),
                    Row("unmapped", {"op": "view", "kind": "view", "numel": 0}),
                    Row("linear", {"in_features": c, "out_features": self.classes, "tokens": 1, "bias": True}, "linear")]
        raise ValueError(f"where={where!r} is not valid: expected stem, reduction or head")

    def relaxed_rows(self) -> tuple[list[Row], list[list[list[Row]]]]:
        """`(fixed, choices)`: the rows every cell has whatever its ops (stem, reductions, head,
        the sums of the nodes), and `choices[edge][op]`: the rows of an op on that edge in every
        cell of the network."""
        hs = self.stage_h()
        fixed = self.fixed_rows("stem") + self.fixed_rows("reduction", 1) + self.fixed_rows("reduction", 2)
        fixed += self.fixed_rows("head")
        for g in range(3):
            fixed += [_add(Ch(g), hs[g])] * (3 * self.cells)  # node sums: 0 + 1 + 2 adds per cell
        choices = [[[r for g in range(3) for _ in range(self.cells) for r in self.edge_rows(op, g, hs[g])]
                    for op in NB201_OPS] for _ in NB201_EDGES]
        return fixed, choices

    def rows(self, arch: Nb201Arch) -> list[Row]:
        arch = self.check(arch)
        hs = self.stage_h()
        out = self.fixed_rows("stem")
        for g in range(3):
            if g:
                out += self.fixed_rows("reduction", g)
            for _ in range(self.cells):
                out += self.cell_rows(arch, g, hs[g])
        return out + self.fixed_rows("head")

    def torch_model(self, arch: Nb201Arch):
        """The architecture as a torch `nn.Module` (eval mode, random weights)."""
        from ._spaces_torch import nb201_model

        return nb201_model(self, self.check(arch))

    # -- multi-exit networks: exits after cells, each a BN-ReLU-pool-linear head ------------

    def exit_points(self) -> list[tuple[int, int]]:
        """Every place an exit can follow: `(stage, cells done in that stage)`, in order."""
        return [(g, c) for g in range(3) for c in range(1, self.cells + 1)]

    def _head_rows(self, stage: int) -> list[Row]:
        h, c = self.stage_h()[stage], Ch(stage)
        return [_bn(c, h), _act(c, h, "relu"),
                Row("global_pool2d", {"mode": "avg", "channels": c, "h": h, "w": h}, "adaptive_avg_pool2d"),
                Row("unmapped", {"op": "view", "kind": "view", "numel": 0}),
                Row("linear", {"in_features": c, "out_features": self.classes, "tokens": 1, "bias": True}, "linear")]

    def _check_exits(self, exits: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
        points = self.exit_points()
        exits = [tuple(e) for e in exits]
        bad = [e for e in exits if e not in points]
        if bad or not exits or [points.index(e) for e in exits] != sorted({points.index(e) for e in exits}):
            raise ValueError(f"exits={exits} is not valid: expected increasing (stage, cells) points from {points}")
        return exits

    def prefix_rows(self, arch: Nb201Arch, exits: Sequence[tuple[int, int]]) -> list[Row]:
        """Rows of a multi-exit network run up to its last exit in `exits`, with every exit's head
        (batch norm, ReLU, global pooling, linear) on the way: the cost of leaving at the last."""
        arch = self.check(arch)
        exits = self._check_exits(exits)
        hs = self.stage_h()
        out = self.fixed_rows("stem")
        last_stage, last_cells = exits[-1]
        for g in range(last_stage + 1):
            if g:
                out += self.fixed_rows("reduction", g)
            for c in range(1, (self.cells if g < last_stage else last_cells) + 1):
                out += self.cell_rows(arch, g, hs[g])
                if (g, c) in exits:
                    out += self._head_rows(g)
        return out

    def prefix_record(self, arch: Nb201Arch, exits: Sequence[tuple[int, int]]) -> ArchRecord:
        """The architecture record of `prefix_rows`."""
        view = _RowsView(self, self.prefix_rows(arch, exits))
        last = tuple(exits[-1])
        return ArchRecord(f"{self.name}:{self.encode(arch)}:exit{last[0]}.{last[1]}_b{self.batch_size}",
                          (self.input_shape(),), tuple(_Space.modules(view, arch)), tuple(_Space.unmapped(view, arch)),
                          info={"space": self.name, "arch": self.encode(arch), "exits": [list(e) for e in exits]})

    def prefix_torch_model(self, arch: Nb201Arch, exits: Sequence[tuple[int, int]]):
        """The torch model of `prefix_rows` (eval mode, random weights); it returns the last
        exit's logits."""
        from ._spaces_torch import nb201_prefix_model

        return nb201_prefix_model(self, self.check(arch), self._check_exits(exits))


class _RowsView:
    """A space seen through fixed rows (a prefix): what `_Space.modules` / `unmapped` need."""

    def __init__(self, space: _Space, rows: list[Row]):
        self._space, self._rows = space, rows

    def __getattr__(self, name: str) -> Any:
        return getattr(self._space, name)

    def rows(self, arch: Any) -> list[Row]:
        return self._rows


#: NAS-Bench-201 on CIFAR-10 (C=16, N=5, 32x32, 10 classes).
NB201 = Nb201Space()


def space_by_name(name: str, **settings: Any) -> MobileSpace | Nb201Space:
    """`fbnet`, `nb201`, or `mobile` (the default `mobile_space()`), with run settings replaced
    (`resolution`, `batch_size`, `dtype`, `threads`, `utilization`)."""
    spaces = {"fbnet": FBNET, "nb201": NB201, "mobile": mobile_space()}
    if name not in spaces:
        raise ValueError(f"space={name!r} is not valid: expected one of {', '.join(spaces)}")
    return spaces[name].with_settings(**settings) if settings else spaces[name]


def decode(space: MobileSpace | Nb201Space, text: str) -> MobileArch | Nb201Arch:
    """The architecture of an encoding: what `space.encode` writes (NB201: its arch string;
    MobileSpace: op names joined by `-`, then `@` and the widths), or for a MobileSpace a list
    of op indices such as HW-NAS-Bench's FBNet `op_idx_list` (`[0, 3, 8, ...]` or `0-3-8-...`)."""
    if isinstance(space, Nb201Space):
        return space.parse(text)
    ops, _, widths = text.strip().partition("@")
    tokens = [t for t in re.split(r"[\s,\-\[\]]+", ops) if t] if ops.lstrip("[").split(",")[0].strip().isdigit() \
        else ops.split("-")
    w = tuple(float(x) for x in widths.split(",")) if widths else ()
    if all(t.isdigit() for t in tokens):
        return space.arch_from_indices([int(t) for t in tokens], w)
    return space.check(MobileArch(tuple(tokens), w))


def model(space: str, arch: str, **settings: Any):
    """A factory for `jaxlat-profile torch-model --model profilers.spaces:model --kwargs
    '{"space": "nb201", "arch": "|nor_conv_3x3~0|+...", "resolution": 32}'`."""
    sp = space_by_name(space, **settings)
    return sp.torch_model(decode(sp, arch))
