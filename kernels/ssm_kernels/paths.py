"""Scan paths: the orders in which a 1-D SSM visits the positions of a 2-D map.

A set of K paths over an H x W map is plain data: an integer tensor ``index`` of shape (K, L) where
``index[k, t]`` is the flat position ``h * W + w`` visited at step ``t`` of direction ``k``. Every op of
this package (cross-scan, cross-merge, the fused 2-D scan) takes a :class:`ScanPaths` and nothing
else about the order, so a new way of walking a map is a new constructor here and no change to the
callers:

- the four VMamba directions (row-major, column-major, each reversed): :meth:`ScanPaths.cross`;
- a path may visit a subset of the map (atrous / strided sub-grids): merge then scatters only the
  positions it visited;
- a multi-scale scan is a second map (the downsampled one) with its own ``ScanPaths``;
- ``split_channels=True`` gives direction k only the k-th group of channels (per-group scans):
  cross-scan splits the channels into K groups, cross-merge concatenates them instead of summing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Dict

import torch

__all__ = ["ScanPaths", "ScanPattern", "CROSS", "row_major", "column_major"]


def row_major(height: int, width: int) -> torch.Tensor:
    """Flat positions visited row by row (the map's own memory order)."""
    return torch.arange(height * width)


def column_major(height: int, width: int) -> torch.Tensor:
    """Flat positions visited column by column: (0,0), (1,0), ..., (H-1,0), (0,1), ..."""
    return torch.arange(height * width).view(height, width).t().reshape(-1)


@dataclass(frozen=True, eq=False)
class ScanPaths:
    """K scan orders over an ``height`` x ``width`` map.

    Args:
        index: (K, L) integer tensor of flat map positions; each row is one direction.
        height, width: size of the map the positions refer to.
        split_channels: direction k reads (and writes back) only the k-th of K equal channel groups.
    """

    index: torch.Tensor
    height: int
    width: int
    split_channels: bool = False
    _on_device: Dict[str, torch.Tensor] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        index = self.index
        if index.dim() != 2 or index.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"ScanPaths.index must be a (K, L) integer tensor, got {tuple(index.shape)} {index.dtype}")
        size = self.height * self.width
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= size):
            raise ValueError(f"ScanPaths.index has positions outside the {self.height}x{self.width} map")
        object.__setattr__(self, "index", index.to(torch.int64).contiguous())

    @property
    def num_directions(self) -> int:
        return self.index.shape[0]

    @property
    def length(self) -> int:
        """Number of steps of each direction."""
        return self.index.shape[1]

    def index_on(self, device: torch.device, dtype: torch.dtype = torch.int64) -> torch.Tensor:
        """The index tensor on ``device`` (cached, so a model does not copy it every forward)."""
        key = f"{torch.device(device)}:{dtype}"
        if key not in self._on_device:
            self._on_device[key] = self.index.to(device=device, dtype=dtype)
        return self._on_device[key]

    @classmethod
    def from_orders(cls, orders, height: int, width: int, split_channels: bool = False) -> "ScanPaths":
        """Paths from a list of 1-D position orders of equal length."""
        return cls(torch.stack([torch.as_tensor(o) for o in orders]), height, width, split_channels)


@dataclass(frozen=True)
class ScanPattern:
    """A rule that builds the :class:`ScanPaths` of any map size; K is known before any map is seen.

    Calling the pattern with (height, width) returns its (cached) paths for that map size. Layers take a
    pattern, so that the number of per-direction parameters is fixed at construction.
    """

    name: str
    num_directions: int
    build: Callable[[int, int], ScanPaths]

    def __call__(self, height: int, width: int) -> ScanPaths:
        return _build_cached(self, int(height), int(width))


@lru_cache(maxsize=256)
def _build_cached(pattern: ScanPattern, height: int, width: int) -> ScanPaths:
    paths = pattern.build(height, width)
    if paths.num_directions != pattern.num_directions:
        raise ValueError(f"scan pattern {pattern.name!r} built {paths.num_directions} directions, "
                         f"declared {pattern.num_directions}")
    return paths


def _cross(height: int, width: int) -> ScanPaths:
    row, col = row_major(height, width), column_major(height, width)
    return ScanPaths.from_orders([row, col, row.flip(0), col.flip(0)], height, width)


#: VMamba's four directions, in the official order: row-major, column-major, then both reversed.
CROSS = ScanPattern("cross", 4, _cross)
