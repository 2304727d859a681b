"""Run a fully convolutional network over overlapping tiles so memory does not grow with the image.

The tile grid depends only on the input size (never on free memory or the device), so the same stream decodes
to the same pixels everywhere. Each tile is processed with a halo at least as wide as the network's receptive
field and only its core is kept, which makes the tiled result equal to the untiled one up to float rounding —
no blending, no seams.

Tiles of the same haloed shape can go through the network together (``batch``): one call per group of up to
``batch`` tiles instead of one per tile, which is what keeps a GPU busy (one tile uses a few percent of a
data-centre GPU; docs/economics.md). Each tile's values are the same computation either way, equal up to float
rounding; the grid itself never changes.
"""

from __future__ import annotations

from typing import Callable, Iterator, NamedTuple

import torch


def run_tiled(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    unit_in: int,
    unit_out: int,
    out_channels: int,
    tile: int,
    halo: int,
    batch: int = 1,
) -> torch.Tensor:
    """Apply ``fn`` to ``x`` (N, C, H, W) tile by tile.

    Sizes are counted in *grid units*: one unit is ``unit_in`` input pixels and ``unit_out`` output pixels
    (an 8x encoder has unit_in=8, unit_out=1; an 8x decoder the reverse). ``H`` and ``W`` must be multiples
    of ``unit_in`` so tiles stay aligned with every stride in the network. ``tile`` is the kept core and
    ``halo`` the extra context on each side, both in units. ``batch``: at most this many tiles of equal shape
    per call of ``fn`` (1: tile by tile, the least memory).
    """
    if batch < 1:
        raise ValueError(f"tile batch must be ≥ 1, got {batch}")
    n, _, h, w = x.shape
    if h % unit_in or w % unit_in:
        raise ValueError(f"input {h}x{w} is not a multiple of the grid unit {unit_in}")
    gh, gw = h // unit_in, w // unit_in
    if gh <= tile and gw <= tile:
        return fn(x)
    layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    out = torch.empty((n, out_channels, gh * unit_out, gw * unit_out), dtype=x.dtype, device=x.device,
                      memory_format=layout)
    for group in tile_batches(tile_grid(gh, gw, tile, halo), batch):
        ins = [x[:, :, t.ya * unit_in : t.yb * unit_in, t.xa * unit_in : t.xb * unit_in] for t in group]
        parts = fn(ins[0] if len(ins) == 1 else torch.cat(ins, 0))
        for i, t in enumerate(group):
            out[:, :, t.y0 * unit_out : t.y1 * unit_out, t.x0 * unit_out : t.x1 * unit_out] = t.core(
                parts[i * n : (i + 1) * n], unit_out)
    return out


def tile_batches(tiles, batch: int) -> list[list["Tile"]]:
    """``tiles`` in groups of at most ``batch`` with the same haloed shape (in grid order within a shape)."""
    shapes: dict[tuple[int, int], list[Tile]] = {}
    for t in tiles:
        shapes.setdefault((t.yb - t.ya, t.xb - t.xa), []).append(t)
    return [ts[i : i + batch] for ts in shapes.values() for i in range(0, len(ts), batch)]


class Tile(NamedTuple):
    """One tile in grid units: core rows ``y0:y1`` / columns ``x0:x1``, with halo ``ya:yb`` / ``xa:xb``."""

    y0: int
    y1: int
    ya: int
    yb: int
    x0: int
    x1: int
    xa: int
    xb: int

    def core(self, part: torch.Tensor, unit: int) -> torch.Tensor:
        """The core of ``part`` (the network's output over the haloed tile, ``unit`` pixels per grid unit)."""
        return part[..., (self.y0 - self.ya) * unit : (self.y1 - self.ya) * unit,
                    (self.x0 - self.xa) * unit : (self.x1 - self.xa) * unit]


def spans(n: int, tile: int) -> list[tuple[int, int]]:
    """``[0, n)`` cut into ``ceil(n / tile)`` near-equal cores (sizes differ by at most one): balanced, so the last
    core is never a sliver whose halo costs more than its pixels."""
    k = max(1, -(-n // tile))
    return [(i * n // k, (i + 1) * n // k) for i in range(k)]


def tile_grid(gh: int, gw: int, tile: int, halo: int) -> Iterator[Tile]:
    """The tiles covering a ``gh``×``gw`` grid, row by row: a function of the size alone (see the module doc)."""
    for y0, y1 in spans(gh, tile):
        ya, yb = max(0, y0 - halo), min(gh, y1 + halo)
        for x0, x1 in spans(gw, tile):
            yield Tile(y0, y1, ya, yb, x0, x1, max(0, x0 - halo), min(gw, x1 + halo))
