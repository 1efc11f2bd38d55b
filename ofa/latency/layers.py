"""Every distinct layer the search space can produce: specs, stable keys, costs, real modules.

A subnet is a stem (with the fixed first block), its active elastic blocks and a head (final
expand conv, pooling, classifier). A block slot's layer depends only on (stage, first in its
stage or not, kernel, expand, resolution): blocks 2..d of a stage are the same layer, and a
slot's spatial size depends only on the resolution and the stage. So the whole space needs a
few hundred layers, however many subnets it holds. Modules are cut out of subnets exported
from a random-init supernet, so timing them times exactly what exported subnets run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Literal

from torch import nn

from ofa.nn.ops import make_divisible
from ofa.nn.supernet import OFAMobileNetV3
from ofa.seeding import torch_seed
from ofa.space import SearchSpace, SubnetConfig

Kind = Literal["stem", "block", "head"]
LAYER_FIELDS = ("kind", "in_c", "out_c", "stride", "kernel", "mid", "size", "se", "act")


@dataclass(frozen=True)
class LayerSpec:
    """One layer as the table keys it. stem: in_c = image channels, mid = stem width, out_c =
    first block width; head: mid = final expand width, out_c = classes; size = input height."""

    kind: Kind
    in_c: int
    out_c: int
    stride: int
    kernel: int
    mid: int
    size: int
    se: bool
    act: str

    @property
    def key(self) -> str:
        """The table's row key; stable across versions (external tables are keyed by it)."""
        if self.kind == "stem":
            return f"stem-c{self.in_c}-w{self.out_c}-r{self.size}"
        if self.kind == "head":
            return f"head-i{self.in_c}-h{self.size}"
        return (f"block-i{self.in_c}-o{self.out_c}-s{self.stride}-k{self.kernel}-m{self.mid}"
                f"-h{self.size}-se{int(self.se)}-{self.act}")

    @property
    def structure(self) -> tuple:
        """Everything but the input size: layers equal in it are one module."""
        return (self.kind, self.in_c, self.out_c, self.stride, self.kernel, self.mid, self.se,
                self.act)

    def to_row(self) -> dict:
        return {"key": self.key, **asdict(self)}


def out_size(size: int, stride: int) -> int:
    return (size - 1) // stride + 1  # 'same' padding of odd kernels


def stage_input_sizes(space: SearchSpace, r: int) -> list[int]:
    """Input height of every stage's first block at resolution r, then the head's (last)."""
    c = space.cfg
    h = out_size(out_size(r, c.stem.stride), c.first_block.stride)
    sizes = []
    for st in c.stages:
        sizes.append(h)
        h = out_size(h, st.stride)
    return sizes + [h]


def stem_layer(space: SearchSpace, r: int) -> LayerSpec:
    c = space.cfg
    return LayerSpec("stem", c.in_channels, c.first_block.width, c.stem.stride, 3, c.stem.width,
                     r, c.first_block.se, c.stem.act)


def head_layer(space: SearchSpace, r: int) -> LayerSpec:
    c = space.cfg
    return LayerSpec("head", c.stages[-1].width, c.num_classes, 1, 1, c.final_expand_width,
                     stage_input_sizes(space, r)[-1], False, "hswish")


def slot_layer(space: SearchSpace, slot: int, kernel: int, expand: int, r: int) -> LayerSpec:
    """The layer block slot `slot` runs with this kernel, expand ratio and resolution."""
    c = space.cfg
    stage, pos = divmod(slot, space.max_depth)
    st = c.stages[stage]
    size = stage_input_sizes(space, r)[stage]
    if pos == 0:
        in_c = c.stages[stage - 1].width if stage else c.first_block.width
        stride = st.stride
    else:
        in_c, stride, size = st.width, 1, out_size(size, st.stride)
    mid = make_divisible(round(in_c * expand), 8)   # = ElasticMBConv.mid_channels(expand)
    return LayerSpec("block", in_c, st.width, stride, kernel, mid, size, st.se, st.act)


def subnet_layers(space: SearchSpace, cfg: SubnetConfig) -> list[LayerSpec]:
    """The layers one subnet runs, in order."""
    return ([stem_layer(space, cfg.r)]
            + [slot_layer(space, s, cfg.ks[s], cfg.e[s], cfg.r) for s in space.active_slots(cfg)]
            + [head_layer(space, cfg.r)])


def enumerate_layers(space: SearchSpace) -> list[LayerSpec]:
    """Each distinct layer of the space once, in a fixed order."""
    c = space.cfg
    seen: dict[str, LayerSpec] = {}
    for r in sorted(c.resolutions):
        for spec in [stem_layer(space, r), head_layer(space, r)] + [
                slot_layer(space, slot, k, e, r) for slot in range(space.n_slots)
                for k in sorted(c.kernel_choices) for e in sorted(c.expand_choices)]:
            seen.setdefault(spec.key, spec)
    return list(seen.values())


# -- analytic costs (as count_macs / count_params count them) ---------------------------------
def _conv(c_in: int, c_out: int, k: int, h_out: int, groups: int = 1, bias: bool = False,
          bn: bool = True) -> tuple[int, int]:
    macs = c_out * h_out * h_out * (c_in // groups) * k * k
    params = c_out * (c_in // groups) * k * k + (c_out if bias else 0) + (2 * c_out if bn else 0)
    return macs, params


def _mbconv(c_in: int, k: int, mid: int, c_out: int, se: bool, stride: int, h: int) -> tuple[int, int]:
    """torchvision's InvertedResidual: [expand 1x1] -> depthwise kxk -> [SE] -> project 1x1."""
    h_out = out_size(h, stride)
    parts = [_conv(mid, mid, k, h_out, groups=mid), _conv(mid, c_out, 1, h_out)]
    if mid != c_in:
        parts.append(_conv(c_in, mid, 1, h))
    if se:
        sq = make_divisible(mid // 4, 8)
        parts += [_conv(mid, sq, 1, 1, bias=True, bn=False), _conv(sq, mid, 1, 1, bias=True, bn=False)]
    return sum(m for m, _ in parts), sum(p for _, p in parts)


def layer_cost(space: SearchSpace, spec: LayerSpec) -> tuple[int, int]:
    """(MACs of one image, parameters) of a layer, so a subnet's are the sums over its layers."""
    c = space.cfg
    if spec.kind == "stem":
        h = out_size(spec.size, spec.stride)
        m0, p0 = _conv(spec.in_c, spec.mid, 3, h)
        fb = c.first_block
        m1, p1 = _mbconv(spec.mid, 3, spec.mid, spec.out_c, fb.se, fb.stride, h)
        return m0 + m1, p0 + p1
    if spec.kind == "head":
        m0, p0 = _conv(spec.in_c, spec.mid, 1, spec.size)
        m1 = spec.mid * c.feature_width
        p1 = m1 + (c.feature_width if c.feature_bias else 0)
        m2, p2 = c.feature_width * spec.out_c, c.feature_width * spec.out_c + spec.out_c
        return m0 + m1 + m2, p0 + p1 + p2
    return _mbconv(spec.in_c, spec.kernel, spec.mid, spec.out_c, spec.se, spec.stride, spec.size)


# -- real modules -------------------------------------------------------------------------------
def layer_modules(space: SearchSpace, specs: Iterable[LayerSpec], seed: int = 0) -> dict[str, nn.Module]:
    """key -> eval-mode module, cut from subnets exported from a random-init supernet.

    One export per (kernel, expand) at full depth holds every block of that choice; layers
    that differ only in input size share a module."""
    specs = list(specs)
    c = space.cfg
    with torch_seed(seed):
        net = OFAMobileNetV3(space).eval()
    by_structure: dict[tuple, nn.Module] = {}
    for k in sorted(c.kernel_choices):
        for e in sorted(c.expand_choices):
            cfg = space.uniform(k, e, space.max_depth, max(c.resolutions))
            sub = net.export(cfg).eval()
            f = sub.features
            by_structure.setdefault(stem_layer(space, cfg.r).structure, nn.Sequential(f[0], f[1]))
            by_structure.setdefault(head_layer(space, cfg.r).structure, nn.Sequential(
                f[-1], sub.avgpool, nn.Flatten(1), sub.classifier))
            for slot in range(space.n_slots):
                by_structure.setdefault(slot_layer(space, slot, k, e, cfg.r).structure, f[2 + slot])
    return {s.key: by_structure[s.structure] for s in specs}


def input_shape(spec: LayerSpec, batch: int) -> tuple[int, int, int, int]:
    return (batch, spec.in_c, spec.size, spec.size)
