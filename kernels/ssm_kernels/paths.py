"""Scan paths: the orders in which a 1-D SSM visits the positions of a 2-D map.

A set of K paths over an H x W map is plain data: an integer tensor ``index`` of shape (K, L) where
``index[k, t]`` is the flat position ``h * W + w`` visited at step ``t`` of direction ``k``. Every op of
this package (cross-scan, cross-merge, the fused 2-D scan) takes a :class:`ScanPaths` and nothing
else about the order, so a new way of walking a map is a new constructor here and no change to the
callers:

- the four VMamba directions (row-major, column-major, each reversed): :meth:`ScanPaths.cross`;
- a path may visit a subset of the map (atrous / strided sub-grids): merge then scatters only the
  positions it visited; :data:`ATROUS` (EfficientVMamba) is four disjoint stride-2 sub-grids, and
  ``disjoint=True`` says that the directions partition the map (each position visited by exactly one
  direction), so their outputs can share one map instead of K slices that are summed;
- a multi-scale scan is a second map (the downsampled one) with its own ``ScanPaths``;
- a path may visit a position more than once (:data:`MULTISCALE_LOW`: three orders of one map as one
  sequence, the state carrying across them); merge sums the visits (``repeats`` says how many at most);
- ``split_channels=True`` gives direction k only the k-th group of channels (per-group scans):
  cross-scan splits the channels into K groups, cross-merge concatenates them instead of summing;
- a token sequence is a 1 x L map: Vim's forward and reversed scans are :data:`BIDIRECTIONAL`.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Dict

import torch
import torch.fx
from torch.utils._python_dispatch import _disable_current_modes

from ._tracing import tracing_paused

__all__ = ["ScanPaths", "ScanPattern", "CROSS", "CROSS_SPLIT", "ATROUS", "BIDIRECTIONAL", "ROW", "MULTISCALE_LOW",
           "row_major", "column_major", "scan_pattern"]


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
        disjoint: the K paths partition the map: every position is visited by exactly one direction
            (checked).
    """

    index: torch.Tensor
    height: int
    width: int
    split_channels: bool = False
    disjoint: bool = False
    #: K, the number of directions, and L, the steps of each (plain fields: torch.compile reads them)
    num_directions: int = field(init=False)
    length: int = field(init=False)
    #: the most times one direction visits one position (1: each position at most once per direction)
    repeats: int = field(init=False)

    def __post_init__(self):
        index = self.index
        if index.dim() != 2 or index.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"ScanPaths.index must be a (K, L) integer tensor, got {tuple(index.shape)} {index.dtype}")
        size = self.height * self.width
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= size):
            raise ValueError(f"ScanPaths.index has positions outside the {self.height}x{self.width} map")
        if self.disjoint and not torch.equal(index.reshape(-1).sort().values, torch.arange(size, device=index.device)):
            raise ValueError("ScanPaths(disjoint=True): the paths must visit every position of the map exactly once")
        object.__setattr__(self, "index", index.to(torch.int64).contiguous())
        # int(): under torch.jit.trace (fvcore's FLOP count) sizes come back as 0-dim tensors
        object.__setattr__(self, "num_directions", int(index.shape[0]))
        object.__setattr__(self, "length", int(index.shape[1]))
        size_k = self.index + size * torch.arange(index.shape[0], device=index.device)[:, None]
        visits = torch.bincount(size_k.reshape(-1).cpu(), minlength=1) if index.numel() else torch.ones(1)
        object.__setattr__(self, "repeats", int(visits.max()))

    def to(self, device) -> "ScanPaths":
        """The same paths with the index on ``device``."""
        if self.index.device == torch.device(device):
            return self
        return ScanPaths(self.index.to(device), self.height, self.width, self.split_channels, self.disjoint)

    @classmethod
    def from_orders(cls, orders, height: int, width: int, split_channels: bool = False,
                    disjoint: bool = False) -> "ScanPaths":
        """Paths from a list of 1-D position orders of equal length."""
        return cls(torch.stack([torch.as_tensor(o) for o in orders]), height, width, split_channels, disjoint)


@dataclass(frozen=True)
class ScanPattern:
    """A rule that builds the :class:`ScanPaths` of any map size; K is known before any map is seen.

    Calling the pattern with (height, width, device) returns its paths for that map size with the index
    on ``device``, built once and cached. Layers take a pattern, so that the number of per-direction
    parameters is fixed at construction. Names are unique.
    """

    name: str
    num_directions: int
    build: Callable[[int, int], ScanPaths]

    def __post_init__(self):
        if _PATTERNS.setdefault(self.name, self) is not self:
            raise ValueError(f"a scan pattern named {self.name!r} exists already")

    def __call__(self, height: int, width: int, device="cpu") -> ScanPaths:
        if isinstance(height, torch.fx.Proxy) or isinstance(width, torch.fx.Proxy):
            # torch.fx symbolic tracing: the size is known only when the graph runs; build the paths then
            tracer = (height if isinstance(height, torch.fx.Proxy) else width).tracer
            return tracer.create_proxy("call_function", _build_paths, (self.name, height, width, device), {})
        return _paths_for(self.name, _static(height), _static(width), str(torch.device(device)))

    def __fx_create_arg__(self, tracer):
        """In a ``torch.fx`` graph a pattern passed to an op is recorded as a lookup by name."""
        return tracer.create_node("call_function", scan_pattern, (self.name,), {})


def _static(size) -> int:
    """A map size as a plain int. Under torch.compile with dynamic shapes (what a recompilation for a new
    input size turns on) a size is symbolic; the paths are host-side data per map size, so the graph
    specialises on it: dynamo guards on the value of a size that builds a ``range`` (``int()`` would stay
    symbolic and fail the constant lookup)."""
    return len(range(size))


def scan_pattern(name: str) -> "ScanPattern":
    """The scan pattern named ``name``."""
    if name not in _PATTERNS:
        raise KeyError(f"no scan pattern named {name!r}; known: {sorted(_PATTERNS)}")
    return _PATTERNS[name]


def _build_paths(name: str, height: int, width: int, device) -> ScanPaths:
    return scan_pattern(name)(height, width, device)


_PATTERNS: Dict[str, ScanPattern] = {}
_PATHS: Dict[tuple, ScanPaths] = {}


@contextmanager
def _untraced():
    """Real tensors, unrecorded, even when paths are first built inside ``torch.jit.trace`` (which would
    record building them, so that a second trace differs) or ``torch.export`` (whose fake tensors would
    be cached for good); the traced or exported graph then holds the index as a constant."""
    with tracing_paused(), _disable_current_modes():
        yield


@torch._dynamo.assume_constant_result  # host-side data, fixed per map size: a constant for torch.compile
def _paths_for(name: str, height: int, width: int, device: str) -> ScanPaths:
    key = (name, height, width, device)
    if key not in _PATHS:
        pattern = _PATTERNS[name]
        with _untraced():
            paths = pattern.build(height, width).to(device)
        if paths.num_directions != pattern.num_directions:
            raise ValueError(f"scan pattern {name!r} built {paths.num_directions} directions, "
                             f"declared {pattern.num_directions}")
        _PATHS[key] = paths
    return _PATHS[key]


def _cross(height: int, width: int) -> ScanPaths:
    row, col = row_major(height, width), column_major(height, width)
    return ScanPaths.from_orders([row, col, row.flip(0), col.flip(0)], height, width)


#: VMamba's four directions, in the official order: row-major, column-major, then both reversed.
CROSS = ScanPattern("cross", 4, _cross)


def _cross_split(height: int, width: int) -> ScanPaths:
    paths = _cross(height, width)
    return ScanPaths(paths.index, height, width, split_channels=True)


#: GroupMamba's per-group scans: the four cross directions, direction k over the k-th quarter of the
#: channels only (contiguous quarters), the groups concatenated back in place.
CROSS_SPLIT = ScanPattern("cross_split", 4, _cross_split)


def _atrous(height: int, width: int) -> ScanPaths:
    if height % 2 or width % 2:
        raise ValueError(f"the atrous scan needs an even-sized map, got {height}x{width} (pad it first)")
    grid = torch.arange(height * width).view(height, width)
    return ScanPaths.from_orders([grid[0::2, 0::2].reshape(-1), grid[1::2, 0::2].t().reshape(-1),
                                  grid[0::2, 1::2].reshape(-1), grid[1::2, 1::2].t().reshape(-1)],
                                 height, width, disjoint=True)


#: EfficientVMamba's atrous scan (ES2D): the four stride-2 sub-grids of an even-sized map, each scanned once,
#: in the official order: (even rows, even columns) row-major, (odd rows, even columns) column-major, (even
#: rows, odd columns) row-major, (odd rows, odd columns) column-major. Direction k = row parity + 2 * column
#: parity visits the positions of its own 2x2 phase only.
ATROUS = ScanPattern("atrous", 4, _atrous)


def _bidirectional(height: int, width: int) -> ScanPaths:
    row = row_major(height, width)
    return ScanPaths.from_orders([row, row.flip(0)], height, width, split_channels=True)


#: Vim's two directions over a token sequence (a 1 x L map): forward, then reversed; direction k reads
#: and writes the k-th channel group (each direction has its own conv1d output and parameters).
BIDIRECTIONAL = ScanPattern("bidirectional", 2, _bidirectional)


def _row(height: int, width: int) -> ScanPaths:
    return ScanPaths.from_orders([row_major(height, width)], height, width)


def _multiscale_low(height: int, width: int) -> ScanPaths:
    row, col = row_major(height, width), column_major(height, width)
    return ScanPaths.from_orders([torch.cat([row.flip(0), col, col.flip(0)])], height, width)


#: One row-major pass (K = 1): MSVMamba's full-resolution branch.
ROW = ScanPattern("row", 1, _row)

#: MSVMamba's half-resolution branch: ONE path of length 3 * H * W that visits every position three times,
#: row-major reversed, then column-major, then column-major reversed (one recurrence: the state carries
#: across the three segments); merging sums the three visits of each position.
MULTISCALE_LOW = ScanPattern("multiscale_low", 1, _multiscale_low)
