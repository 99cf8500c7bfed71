"""Torch models of the search spaces in `profilers.spaces` (imported only when a model is built).

Each builder follows the rows of its space operator for operator, so that `capture_torch` of the
model gives the record that `space.record(arch)` builds without torch.
"""

from __future__ import annotations

import torch
from torch import nn

from .spaces import BlockOp, MobileArch, MobileSpace, Nb201Arch, Nb201Space

_ACTS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "silu": nn.SiLU, "hardswish": nn.Hardswish, "gelu": nn.GELU}


def _act(name: str, inplace: bool = True) -> nn.Module:
    cls = _ACTS[name]
    return cls(inplace=inplace) if name in ("relu", "relu6", "silu", "hardswish") else cls()


def _conv_bn_act(cin: int, cout: int, k: int, s: int, groups: int, act: str | None) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(_act(act))
    return nn.Sequential(*layers)


class _Shuffle(nn.Module):
    def __init__(self, groups: int):
        super().__init__()
        self.g = groups

    def forward(self, x):
        n, c, h, w = x.shape
        return x.view(n, self.g, c // self.g, h, w).permute(0, 2, 1, 3, 4).contiguous().view(n, c, h, w)


class _Inverted(nn.Module):
    """Inverted residual: [1x1 expansion], [channel shuffle], depthwise kxk, 1x1 projection, [+x]."""

    def __init__(self, cin: int, cout: int, stride: int, op: BlockOp, act: str, expand_when_e1: bool,
                 residual: bool):
        super().__init__()
        mid = cin * op.expansion
        layers: list[nn.Module] = []
        if op.expansion != 1 or expand_when_e1:
            layers.append(_conv_bn_act(cin, mid, 1, 1, op.groups, act))
        if op.groups > 1:
            layers.append(_Shuffle(op.groups))
        layers += [_conv_bn_act(mid, mid, op.kernel, stride, mid, act), _conv_bn_act(mid, cout, 1, 1, op.groups, None)]
        self.body = nn.Sequential(*layers)
        self.residual = residual

    def forward(self, x):
        y = self.body(x)
        if self.residual:
            y += x
        return y


class _Mobile(nn.Module):
    def __init__(self, stem: nn.Module, blocks: list[nn.Module], head: nn.Module, c_last: int, classes: int):
        super().__init__()
        self.stem, self.blocks, self.head = stem, nn.Sequential(*blocks), head
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_last, classes)

    def forward(self, x):
        x = self.pool(self.head(self.blocks(self.stem(x))))
        return self.fc(x.view(x.shape[0], -1))


def mobile_model(space: MobileSpace, arch: MobileArch) -> nn.Module:
    ch = space.channels(arch)
    torch.manual_seed(0)
    stem = _conv_bn_act(3, ch[0], 3, space.stem_stride, 1, space.act)
    blocks: list[nn.Module] = []
    for layer, name in zip(space.layers(), arch.ops):
        op = BlockOp.parse(name)
        cin, cout = ch[layer.cin], ch[layer.cout]
        if op.is_skip:
            same = space.keeps_shape(layer)
            blocks.append(nn.Identity() if same else _conv_bn_act(cin, cout, 1, layer.stride, 1, space.act))
        else:
            blocks.append(_Inverted(cin, cout, layer.stride, op, space.act, space.expand_when_e1,
                                    residual=space.keeps_shape(layer)))
    c_last = ch[-1]
    head: nn.Module = nn.Identity()
    if space.head_channels:
        head = _conv_bn_act(c_last, space.head_channels, 1, 1, 1, space.act)
        c_last = space.head_channels
    return _Mobile(stem, blocks, head, c_last, space.classes).eval()


class _ReLUConvBN(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int, s: int):
        super().__init__(nn.ReLU(inplace=False), nn.Conv2d(cin, cout, k, s, k // 2, bias=False), nn.BatchNorm2d(cout))


class _Zero(nn.Module):
    def forward(self, x):
        return x.mul(0.0)


def _edge(op: str, c: int) -> nn.Module:
    if op == "none":
        return _Zero()
    if op == "skip_connect":
        return nn.Identity()
    if op == "avg_pool_3x3":
        return nn.AvgPool2d(3, 1, 1, count_include_pad=False)
    return _ReLUConvBN(c, c, 1 if op == "nor_conv_1x1" else 3, 1)


class _Cell(nn.Module):
    """A NAS-Bench-201 cell: node j is the sum of every edge into it, all edges computed."""

    def __init__(self, arch: Nb201Arch, c: int):
        super().__init__()
        from .spaces import NB201_EDGES

        self.edges = nn.ModuleList(_edge(op, c) for op in arch.edges)
        self.src = [i for _, i in NB201_EDGES]
        self.dst = [j for j, _ in NB201_EDGES]

    def forward(self, x):
        nodes = [x]
        for j in (1, 2, 3):
            outs = [e(nodes[i]) for e, i, t in zip(self.edges, self.src, self.dst) if t == j]
            y = outs[0]
            for o in outs[1:]:
                y = y + o
            nodes.append(y)
        return nodes[-1]


class _Reduction(nn.Module):
    """NAS-Bench-201's residual block between stages: two ReLU-conv-BN (first stride 2), plus an
    average-pooled 1x1 projection of the input."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.a, self.b = _ReLUConvBN(cin, cout, 3, 2), _ReLUConvBN(cout, cout, 3, 1)
        self.down = nn.Sequential(nn.AvgPool2d(2, 2, 0), nn.Conv2d(cin, cout, 1, 1, 0, bias=False))

    def forward(self, x):
        return self.down(x) + self.b(self.a(x))


class _Nb201(nn.Module):
    def __init__(self, arch: Nb201Arch, c: int, cells: int, classes: int):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c))
        layers: list[nn.Module] = []
        for g, width in enumerate((c, 2 * c, 4 * c)):
            if g:
                layers.append(_Reduction(width // 2, width))
            layers += [_Cell(arch, width) for _ in range(cells)]
        self.cells = nn.Sequential(*layers)
        self.last = nn.Sequential(nn.BatchNorm2d(4 * c), nn.ReLU(inplace=False))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * c, classes)

    def forward(self, x):
        x = self.pool(self.last(self.cells(self.stem(x))))
        return self.fc(x.view(x.shape[0], -1))


def nb201_model(space: Nb201Space, arch: Nb201Arch) -> nn.Module:
    torch.manual_seed(0)
    return _Nb201(arch, space.c, space.cells, space.classes).eval()


class _Head(nn.Module):
    def __init__(self, width: int, classes: int):
        super().__init__()
        self.body = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(inplace=False), nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(width, classes)

    def forward(self, x):
        x = self.body(x)
        return self.fc(x.view(x.shape[0], -1))


class _Nb201Prefix(nn.Module):
    """The NAS-Bench-201 network up to its last exit, every exit's head computed on the way."""

    def __init__(self, arch: Nb201Arch, c: int, cells: int, classes: int, exits: list[tuple[int, int]]):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c))
        blocks: list[nn.Module] = []
        self.heads = nn.ModuleDict()
        self.plan: list[tuple[int, str | None]] = []  # (block index, head name after it)
        last_stage, last_cells = exits[-1]
        for g in range(last_stage + 1):
            width = c * 2**g
            if g:
                blocks.append(_Reduction(width // 2, width))
                self.plan.append((len(blocks) - 1, None))
            for k in range(1, (cells if g < last_stage else last_cells) + 1):
                blocks.append(_Cell(arch, width))
                name = f"exit{g}_{k}" if (g, k) in exits else None
                if name:
                    self.heads[name] = _Head(width, classes)
                self.plan.append((len(blocks) - 1, name))
        self.stem_blocks = nn.ModuleList(blocks)

    def forward(self, x):
        x = self.stem(x)
        out = None
        for i, head in self.plan:
            x = self.stem_blocks[i](x)
            if head is not None:
                out = self.heads[head](x)
        return out


def nb201_prefix_model(space: Nb201Space, arch: Nb201Arch, exits: list[tuple[int, int]]) -> nn.Module:
    torch.manual_seed(0)
    return _Nb201Prefix(arch, space.c, space.cells, space.classes, exits).eval()
