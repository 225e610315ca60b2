"""Precomputed banks of patch-pair draws for CutSwap negatives (and for the random-swap control).

For every saliency map, ``draws`` (D) candidate swaps are drawn once; training samples one of them per
negative and swaps the two patches. A draw picks one patch size and then climbs a ladder of anchor searches,
keeping the saliency guidance as long as any rung can place two non-overlapping in-image patches. Patch
centres are anchor pixels; each rectangle is clamped inside the image (``clip(c - size // 2, 0, S - size)``
per axis) and a pair is valid when the clamped rectangles do not overlap. The rungs, in order, and the step
recorded for a draw that succeeds there (``STEPS``):

0. ``top``: up to ``max_tries`` uniformly random pairs of distinct top-cluster pixels, drawn size (as the
   paper: the first valid pair is kept, i.e. a uniform valid pair whenever one is found).
1. ``top-extra``: a separated pair of top-cluster pixels, drawn size (``_separated_anchors``): this search is
   exhaustive, so it fails only when no pair of top-cluster pixels can host the two patches at that size.
2. ``smaller``: the same two searches in the top cluster at a smaller patch (``_smaller_fraction``: the area
   redrawn in the lowest quarter of the area range and never above the drawn area, same aspect ratio).
3. ``next-cluster``: the same searches with anchors from the top and the next cluster by centroid
   (``cluster_ranks`` 0 and 1), at the drawn size and then at the smaller one.
4. ``random``: uniformly random non-overlapping locations at the drawn size (the ``fallback``).

Data layout (``PairBank``):

- ``boxes``: ``(N, D, 6)`` int32, per draw ``(h, w, y1, x1, y2, x2)``: the patch height and width shared
  by both patches (the smaller size where the draw was made at a ``smaller`` rung), and the top-left corners
  of patch 1 and patch 2. Patch 1 covers rows ``y1 : y1 + h`` and columns ``x1 : x1 + w``.
- ``step``: ``(N, D)`` uint8, the rung that made the draw, an index into ``STEPS``.
- ``fallback``: ``(N, D)`` bool, ``step == STEP_RANDOM``: the locations are random rather than guided.

From saliency maps in one call (``build_pair_bank``): cluster each map, then draw pairs in its top. The
pipeline does this in two stages (cluster, pairs) with stores between them; ``build_pair_bank`` is the same
computation for a researcher's own maps, with the same defaults and the same draws (map ``i * L + l`` of an
``(N, L, H, W)`` stack is seeded as the pairs stage seeds it)::

    maps     float (N, L, H, W) in [0, 1], or (N, H, W) for one level (``cutswap.LayerCAM``)
    returns  one ``PairBank`` per level, or one ``PairBank`` for (N, H, W) maps

Inputs: ``top_masks`` ``(N, H, W)`` bool, the top-cluster pixels of each map, and optionally ``ranks``
``(N, H, W)`` uint8, each pixel's cluster rank by centroid (0 top, 1 next, ...;
``cutswap.method.clustering``).

Randomness: map ``i`` of a call uses its own generator ``np.random.default_rng([seed, index_offset + i])``
and a fixed layout of draws (``_draw_uniforms``: sizes first, then random locations, then pixel pairs, then
the ladder's numbers), so a map's draws do not depend on which other maps share the call: sharding the maps
over workers and concatenating gives the same bank as one call. Every rung reads its own numbers, so a
draw made at rung 0 is the same as without the ladder. ``random_pair_bank`` takes the sizes of a CutSwap
bank (they are not a function of the seed alone once a rung may shrink them) and places them with the
same generator and the same location numbers, which keeps CutSwap minus random-swap a paired comparison.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from cutswap.method.clustering import cluster_maps, cluster_ranks
from cutswap.method.ops import CUTPASTE_AREA, CUTPASTE_ASPECT

__all__ = [
    "STEPS",
    "STEP_NEXT_CLUSTER",
    "STEP_RANDOM",
    "STEP_SMALLER",
    "STEP_TOP",
    "STEP_TOP_EXTRA",
    "PairBank",
    "random_pair_bank",
    "sample_pair_bank",
    "step_counts",
]

#: Rungs of the ladder, in the order they are tried; ``PairBank.step`` holds indices into this tuple.
STEPS = ("top", "top-extra", "smaller", "next-cluster", "random")
STEP_TOP, STEP_TOP_EXTRA, STEP_SMALLER, STEP_NEXT_CLUSTER, STEP_RANDOM = range(len(STEPS))

# Rounds of the random non-overlapping placement. Each round is accepted with probability >= 1/2, so
# 2**-12 of fallback draws keep the last (valid, very slightly less uniform) round.
_ROUNDS = 12
# Maps processed together in the vectorised geometry; bounds temporaries to a few tens of MiB.
_CHUNK_MAPS = 128
# The smaller patch's area is redrawn in this lowest share of the area range (see _smaller_fraction).
_SMALLER_SHARE = 0.25
# Anchor searches after rung 0: (anchors, size) per search, in ladder order.
_RUNGS = (("top", "smaller"), ("next", "drawn"), ("next", "smaller"))


@dataclass(frozen=True)
class PairBank:
    """Patch-pair draws for ``N`` maps; see the module docstring for the layout."""

    boxes: np.ndarray
    step: np.ndarray

    def __post_init__(self) -> None:
        if self.boxes.ndim != 3 or self.boxes.shape[2] != 6:
            raise ValueError(f"boxes must be (N, D, 6), got {self.boxes.shape}")
        if self.step.shape != self.boxes.shape[:2] or self.step.dtype != np.uint8:
            raise ValueError(
                f"step must be uint8 {self.boxes.shape[:2]}, got {self.step.dtype} {self.step.shape}"
            )

    @property
    def fallback(self) -> np.ndarray:
        """``(N, D)`` bool: the draw's locations are random rather than saliency-guided."""
        return self.step == STEP_RANDOM

    @property
    def fallback_rate(self) -> float:
        """Share of draws placed at random rather than by saliency; reported with every run."""
        return float(self.fallback.mean()) if self.fallback.size else 0.0

    @property
    def step_rates(self) -> dict[str, float]:
        """Share of draws made at each rung, by name (every name of ``STEPS``; they sum to 1)."""
        counts = step_counts(self.step)
        total = max(int(counts.sum()), 1)
        return {name: float(c) / total for name, c in zip(STEPS, counts, strict=True)}


def step_counts(step: np.ndarray) -> np.ndarray:
    """Draws per rung: ``(len(STEPS),)`` int64 counts of a ``step`` array of any shape."""
    return np.bincount(np.asarray(step, dtype=np.int64).ravel(), minlength=len(STEPS))[: len(STEPS)]


def _check_settings(
    draws: int,
    area: tuple[float, float],
    aspect: tuple[float, float],
    seed: int,
    index_offset: int,
    height: int,
    width: int,
) -> None:
    if not isinstance(draws, (int, np.integer)) or draws < 1:
        raise ValueError(f"pairs draws={draws!r} is invalid: set it to an integer >= 1")
    a0, a1 = area
    if not (0 < a0 <= a1 <= 1):
        raise ValueError(
            f"pairs area={tuple(area)!r} is invalid: give (low, high) image fractions "
            "with 0 < low <= high <= 1"
        )
    r0, r1 = aspect
    if not (0 < r0 <= r1):
        raise ValueError(
            f"pairs aspect={tuple(aspect)!r} is invalid: give (low, high) height/width ratios "
            "with 0 < low <= high"
        )
    _check_seed(seed, index_offset)
    if height < 1 or width < 1 or height * width < 2:
        raise ValueError(f"a {height}x{width} image cannot hold two non-overlapping patches")


def _check_seed(seed: int, index_offset: int) -> None:
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed={seed!r} is invalid: set it to an integer >= 0")
    if not isinstance(index_offset, (int, np.integer)) or index_offset < 0:
        raise ValueError(f"index_offset={index_offset!r} must be an integer >= 0")


def _size_parameters(
    u: np.ndarray, area: tuple[float, float], aspect: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """``(D, 2)`` uniforms -> area fraction ~ U[area] and aspect ratio h/w log-uniform in [aspect]."""
    frac = area[0] + u[:, 0] * (area[1] - area[0])
    ratio = np.exp(np.log(aspect[0]) + u[:, 1] * (np.log(aspect[1]) - np.log(aspect[0])))
    return frac, ratio


def _smaller_fraction(frac: np.ndarray, u: np.ndarray, area: tuple[float, float]) -> np.ndarray:
    """The area fraction of the ``smaller`` rungs: uniform in ``[a0, min(frac, a0 + (a1 - a0) / 4)]``.

    Why this choice: the patch stays in the configured size distribution (its lowest quarter, where two
    patches fit into the most top clusters) rather than shrinking below it, it is never larger than the
    drawn patch, and it keeps a spread of sizes instead of collapsing onto the smallest one. The aspect ratio
    is the drawn one, so the aspect distribution is unchanged.
    """
    cap = np.minimum(frac, area[0] + _SMALLER_SHARE * (area[1] - area[0]))
    return area[0] + u * (cap - area[0])


def _patch_sizes(
    frac: np.ndarray, ratio: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Area fractions and aspect ratios -> patch heights and widths, ``(D,)`` int64 each.

    Sizes are rounded, clipped to the image, and if two patches could fit neither side by side (2w <= W)
    nor one above the other (2h <= H), the side needing the smaller relative cut is halved to the image's
    half. Computed per map (not batched) so that transcendental functions see the same array lengths in
    every chunking.
    """
    pixels = frac * (height * width)
    h = np.clip(np.rint(np.sqrt(pixels * ratio)), 1, height).astype(np.int64)
    w = np.clip(np.rint(np.sqrt(pixels / ratio)), 1, width).astype(np.int64)
    too_big = (2 * h > height) & (2 * w > width)
    if too_big.any():
        keep_y = (height // 2) / h
        keep_x = (width // 2) / w
        cut_h = too_big & (keep_y >= keep_x)
        cut_w = too_big & ~cut_h
        h = np.where(cut_h, height // 2, h)
        w = np.where(cut_w, width // 2, w)
    return h, w


def _separated_pair(
    u_a: np.ndarray, u_b: np.ndarray, u_order: np.ndarray, n_low: np.ndarray, size: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Uniform ordered pair of positions at least ``size`` apart, with ``n_low`` >= 1 lower positions.

    Unordered pairs ``{lo, hi}`` with ``hi - lo >= size`` map one to one to ``p <= q`` in ``[0, n_low)``
    via ``(lo, hi) = (p, q + size)``. Drawing ``a`` in ``[0, n)`` and ``b`` in ``[0, n + 1)`` and mapping
    ``b > a`` to ``(a, b - 1)`` and ``b <= a`` to ``(b, a)`` hits every ``p <= q`` exactly twice.
    """
    n = np.maximum(n_low, 1)
    a = np.minimum(np.floor(u_a * n).astype(np.int64), n - 1)
    b = np.minimum(np.floor(u_b * (n + 1)).astype(np.int64), n)
    upper = b > a
    lo = np.where(upper, a, b)
    hi = np.where(upper, b - 1, a) + size
    swap = u_order < 0.5
    return np.where(swap, hi, lo), np.where(swap, lo, hi)


def _random_locations(
    u: np.ndarray, h: np.ndarray, w: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Uniformly random non-overlapping placements of two ``h x w`` patches.

    Args:
        u: ``(..., R, 7)`` uniforms, R rounds.
        h, w: ``(...)`` patch sizes, with ``2h <= height`` or ``2w <= width``.

    Returns:
        ``y1, x1, y2, x2``, each ``(...)`` int64.

    Why this scheme: the valid placements are (rows separated) OR (columns separated). Each round picks
    one of the two events with probability proportional to its number of placements, draws uniformly
    inside it, and accepts a placement that is in both events with probability 1/2 (it could have come from
    either), which makes accepted placements exactly uniform; every round is valid, and acceptance is >= 1/2.
    """
    h = h[..., None]
    w = w[..., None]
    ny, nx = height - h + 1, width - w + 1
    low_y = np.maximum(height - 2 * h + 1, 0)
    low_x = np.maximum(width - 2 * w + 1, 0)
    weight_y = (low_y * (low_y + 1)).astype(np.float64) * nx.astype(np.float64) ** 2
    weight_x = (low_x * (low_x + 1)).astype(np.float64) * ny.astype(np.float64) ** 2
    rows = u[..., 0] * (weight_y + weight_x) < weight_y

    sy1, sy2 = _separated_pair(u[..., 1], u[..., 2], u[..., 3], low_y, h)
    sx1, sx2 = _separated_pair(u[..., 1], u[..., 2], u[..., 3], low_x, w)
    fy1 = np.minimum(np.floor(u[..., 4] * ny).astype(np.int64), ny - 1)
    fy2 = np.minimum(np.floor(u[..., 5] * ny).astype(np.int64), ny - 1)
    fx1 = np.minimum(np.floor(u[..., 4] * nx).astype(np.int64), nx - 1)
    fx2 = np.minimum(np.floor(u[..., 5] * nx).astype(np.int64), nx - 1)
    y1, y2 = np.where(rows, sy1, fy1), np.where(rows, sy2, fy2)
    x1, x2 = np.where(rows, fx1, sx1), np.where(rows, fx2, sx2)

    both = (np.abs(y1 - y2) >= h) & (np.abs(x1 - x2) >= w)
    accept = ~both | (u[..., 6] < 0.5)
    accept[..., -1] = True
    first = np.argmax(accept, axis=-1)[..., None]
    pick = [np.take_along_axis(c, first, axis=-1)[..., 0] for c in (y1, x1, y2, x2)]
    return pick[0], pick[1], pick[2], pick[3]


@dataclass(frozen=True)
class _Uniforms:
    """One map's random numbers, in the fixed order they are drawn from its generator (``_draw_uniforms``).

    ``sizes`` (D, 2), ``locations`` (D, R, 7), ``pixels`` (D, T, 2) for rung 0; then the ladder's:
    ``shrink`` (D,) for the smaller area, ``tries`` (D, 3, T, 2) for the random pairs of the later rungs
    (``_RUNGS``), ``spread`` (D, 4, 3) for the separated-pair searches (axis, first, second pixel) at
    (top, drawn), (top, smaller), (next, drawn), (next, smaller).
    """

    sizes: np.ndarray
    locations: np.ndarray
    pixels: np.ndarray | None = None
    shrink: np.ndarray | None = None
    tries: np.ndarray | None = None
    spread: np.ndarray | None = None


def _draw_uniforms(seed: int, index: int, draws: int, tries: int | None) -> _Uniforms:
    """The fixed per-map layout of random numbers; ``tries=None`` stops after the random locations."""
    rng = np.random.default_rng([seed, index])
    sizes = rng.random((draws, 2))
    locations = rng.random((draws, _ROUNDS, 7))
    if tries is None:
        return _Uniforms(sizes, locations)
    pixels = rng.random((draws, tries, 2))
    shrink = rng.random(draws)
    later = rng.random((draws, len(_RUNGS), tries, 2))
    spread = rng.random((draws, len(_RUNGS) + 1, 3))
    return _Uniforms(sizes, locations, pixels, shrink, later, spread)


def _boxes(*columns: np.ndarray) -> np.ndarray:
    """``(h, w, y1, x1, y2, x2)`` arrays of equal shape -> ``(..., 6)`` int32."""
    return np.stack(columns, axis=-1).astype(np.int32)


@dataclass(frozen=True)
class _Anchors:
    """The anchor pixels of a chunk of ``n`` maps, sorted two ways so a search can count them by position.

    ``rows``: ``(P,)`` int64 keys ``m * H * W + y * W + x`` in ascending order (map, then row, then
    column); ``cols``: the same pixels as ``m * H * W + x * H + y``, ascending (map, column, row);
    ``starts``, ``counts``: ``(n,)`` where each map's pixels begin in both arrays and how many it has.
    """

    rows: np.ndarray
    cols: np.ndarray
    starts: np.ndarray
    counts: np.ndarray
    height: int
    width: int

    @classmethod
    def of(cls, masks: np.ndarray) -> _Anchors:
        n, height, width = masks.shape
        rows = np.flatnonzero(masks.reshape(n, height * width))
        cols = np.flatnonzero(masks.transpose(0, 2, 1).reshape(n, width * height))
        counts = masks.reshape(n, -1).sum(axis=1, dtype=np.int64)
        return cls(rows, cols, np.cumsum(counts) - counts, counts, height, width)


_Found = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _corners(p1: np.ndarray, p2: np.ndarray, h: np.ndarray, w: np.ndarray, height: int, width: int) -> tuple:
    """Pixel indices ``y * W + x`` of two centres -> the clamped top-left corners of their patches."""
    y1 = np.clip(p1 // width - h // 2, 0, height - h)
    x1 = np.clip(p1 % width - w // 2, 0, width - w)
    y2 = np.clip(p2 // width - h // 2, 0, height - h)
    x2 = np.clip(p2 % width - w // 2, 0, width - w)
    return y1, x1, y2, x2


def _random_anchors(a: _Anchors, m: np.ndarray, h: np.ndarray, w: np.ndarray, u: np.ndarray) -> _Found:
    """Rejection search: ``T`` uniformly random pairs of distinct anchors per draw, the first valid one kept.

    Args:
        a: the chunk's anchors; m: ``(k,)`` map of each draw in the chunk; h, w: ``(k,)`` patch sizes;
        u: ``(k, T, 2)`` uniforms.

    Returns:
        ``(found, y1, x1, y2, x2)``, each ``(k,)``; corners are meaningless where ``found`` is False.
    """
    k, height, width = len(m), a.height, a.width
    if a.rows.size == 0 or k == 0:
        zero = np.zeros(k, dtype=np.int64)
        return np.zeros(k, dtype=bool), zero, zero, zero, zero
    cnt = a.counts[m][:, None]
    first = np.clip(np.floor(u[..., 0] * cnt).astype(np.int64), 0, np.maximum(cnt - 1, 0))
    second = np.clip(np.floor(u[..., 1] * (cnt - 1)).astype(np.int64), 0, np.maximum(cnt - 2, 0))
    second = second + (second >= first)  # distinct from the first: skip over it
    base, last = a.starts[m][:, None], a.rows.size - 1
    offsets = (m * (height * width))[:, None]
    p1 = a.rows[np.minimum(base + first, last)] - offsets
    p2 = a.rows[np.minimum(base + second, last)] - offsets
    hh, ww = h[:, None], w[:, None]
    y1, x1, y2, x2 = _corners(p1, p2, hh, ww, height, width)
    ok = ((np.abs(y1 - y2) >= hh) | (np.abs(x1 - x2) >= ww)) & (cnt >= 2)
    pick = np.argmax(ok, axis=1)[:, None]
    out = [np.take_along_axis(c, pick, axis=1)[:, 0] for c in (y1, x1, y2, x2)]
    return ok.any(axis=1), out[0], out[1], out[2], out[3]


def _separated_along(
    keys: np.ndarray, stride: int, m: np.ndarray, size: np.ndarray, limit: int, a: _Anchors, u: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two anchors whose clamped patches are separated along one axis, or the proof that there are none.

    ``keys`` sorts each map's anchors by their position ``v`` along the axis (``key = m * H * W + v *
    stride + other``), ``limit`` is the image's extent along it. Clamping ``c(v) = clip(v - size // 2, 0,
    limit - size)`` is monotone, so the pair with the widest clamped gap is the lowest and the highest
    anchor; a separated pair exists iff ``c(v_max) - c(v_min) >= size``. The first anchor is drawn
    uniformly among those with ``c(v) <= c(v_max) - size`` (all have a partner), the second uniformly among
    those with ``c(v2) >= c(v1) + size``; both sets are index ranges of ``keys``, found by binary search.

    Returns:
        ``(ok, i1, i2)``: ``(k,)`` bool and indices into ``keys`` (clipped into range where not ok).
    """
    start = a.starts[m]
    end = start + a.counts[m]
    last = max(keys.size - 1, 0)
    offset = m * (a.height * a.width)
    v_max = (keys[np.clip(end - 1, 0, last)] - offset) // stride
    top = np.clip(v_max - size // 2, 0, limit - size) - size  # highest clamped start of the first patch
    low_end = np.searchsorted(keys, offset + (top + size // 2 + 1) * stride)  # anchors with c(v) <= top
    n_low = np.where((top >= 0) & (a.counts[m] >= 2), low_end - start, 0)
    ok = n_low >= 1
    i1 = np.clip(start + np.minimum(np.floor(u[:, 0] * n_low).astype(np.int64), n_low - 1), 0, last)
    v1 = (keys[i1] - offset) // stride
    gap = np.clip(v1 - size // 2, 0, limit - size) + size  # the second patch starts at or after this
    high_start = np.searchsorted(keys, offset + (gap + size // 2) * stride)
    n_high = np.maximum(end - high_start, 1)
    i2 = np.clip(high_start + np.minimum(np.floor(u[:, 1] * n_high).astype(np.int64), n_high - 1), 0, last)
    return ok, i1, i2


def _separated_anchors(a: _Anchors, m: np.ndarray, h: np.ndarray, w: np.ndarray, u: np.ndarray) -> _Found:
    """Exhaustive search: a pair of anchors whose patches are separated in rows or in columns, if any exists.

    Where both axes have separated pairs, ``u[:, 0]`` picks one with probability 1/2. Not uniform over
    valid pairs (the first anchor is uniform among those that have a partner, the second uniform among its
    partners), but every valid configuration of the extreme anchors is reachable, and it never misses: a
    draw fails here only when no pair of anchors can host the two patches.

    Args:
        a, m, h, w: as in ``_random_anchors``; u: ``(k, 3)`` uniforms (axis, first, second).

    Returns:
        ``(found, y1, x1, y2, x2)``, each ``(k,)``.
    """
    k, height, width = len(m), a.height, a.width
    if a.rows.size == 0 or k == 0:
        zero = np.zeros(k, dtype=np.int64)
        return np.zeros(k, dtype=bool), zero, zero, zero, zero
    offset = m * (height * width)
    ok_y, r1, r2 = _separated_along(a.rows, width, m, h, height, a, u[:, 1:])
    ok_x, c1, c2 = _separated_along(a.cols, height, m, w, width, a, u[:, 1:])
    # Column keys -> row-major pixel indices y * W + x.
    cy1, cx1 = (a.cols[c1] - offset) % height, (a.cols[c1] - offset) // height
    cy2, cx2 = (a.cols[c2] - offset) % height, (a.cols[c2] - offset) // height
    use_y = ok_y & (~ok_x | (u[:, 0] < 0.5))
    p1 = np.where(use_y, a.rows[r1] - offset, cy1 * width + cx1)
    p2 = np.where(use_y, a.rows[r2] - offset, cy2 * width + cx2)
    y1, x1, y2, x2 = _corners(p1, p2, h, w, height, width)
    return ok_y | ok_x, y1, x1, y2, x2


def sample_pair_bank(
    top_masks: np.ndarray,
    draws: int,
    area: tuple[float, float] = (0.02, 0.15),
    aspect: tuple[float, float] = (0.3, 3.3),
    max_tries: int = 20,
    seed: int = 0,
    index_offset: int = 0,
    ranks: np.ndarray | None = None,
) -> PairBank:
    """Draws ``draws`` saliency-guided patch pairs per map, degrading along the ladder of ``STEPS``.

    Args:
        top_masks: ``(N, H, W)`` bool top-cluster masks.
        draws: draws per map (D).
        area: range of the patch area as a fraction of the image, sampled uniformly.
        aspect: range of the patch height/width ratio, sampled log-uniformly.
        max_tries: random pixel pairs tried per draw at each rung before its exhaustive search.
        seed: base seed; map ``i`` uses ``default_rng([seed, index_offset + i])``.
        index_offset: global index of ``top_masks[0]`` when the maps are processed in shards.
        ranks: optional ``(N, H, W)`` cluster ranks (``cutswap.method.clustering.cluster_ranks``); the
            ``next-cluster`` rungs anchor in ``top_masks | (ranks <= 1)``. Without it they are skipped.

    Returns:
        The bank; ``step`` says which rung made each draw, ``fallback`` marks the random ones (no rung could
        place the two patches: e.g. an empty top cluster and no next cluster).

    Raises:
        ValueError: ``draws``, ``area``, ``aspect``, ``max_tries`` or ``seed`` out of range.
        ValueError: arrays of the wrong shape, or an image too small for two patches.
    """
    masks = np.asarray(top_masks)
    if masks.ndim != 3:
        raise ValueError(f"top_masks must be (N, H, W), got shape {masks.shape}")
    masks = masks.astype(bool, copy=False)
    near = None
    if ranks is not None:
        ranks = np.asarray(ranks)
        if ranks.shape != masks.shape:
            raise ValueError(f"ranks must have the shape of top_masks {masks.shape}, got {ranks.shape}")
        near = masks | (ranks <= 1)
    if not isinstance(max_tries, (int, np.integer)) or max_tries < 1:
        raise ValueError(f"pairs max_tries={max_tries!r} is invalid: set it to an integer >= 1")
    n_maps, height, width = masks.shape
    _check_settings(draws, area, aspect, seed, index_offset, height, width)
    boxes = np.empty((n_maps, draws, 6), dtype=np.int32)
    step = np.empty((n_maps, draws), dtype=np.uint8)
    for start in range(0, n_maps, _CHUNK_MAPS):
        stop = min(start + _CHUNK_MAPS, n_maps)
        boxes[start:stop], step[start:stop] = _sample_chunk(
            masks[start:stop],
            None if near is None else near[start:stop],
            draws,
            area,
            aspect,
            max_tries,
            seed,
            index_offset + start,
        )
    return PairBank(boxes=boxes, step=step)


def _sample_chunk(
    masks: np.ndarray,
    near: np.ndarray | None,
    draws: int,
    area: tuple[float, float],
    aspect: tuple[float, float],
    tries: int,
    seed: int,
    index_offset: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Draws for a chunk of maps: random numbers per map (own generator), geometry for the whole chunk.

    Every rung after the first only sees the draws still pending, so the ladder costs in proportion to the
    draws that need it. Returns ``(n, D, 6)`` int32 boxes and ``(n, D)`` uint8 steps.
    """
    n, height, width = masks.shape
    chunk = _chunk_numbers(n, height, width, draws, area, aspect, tries, seed, index_offset)
    h, w = chunk.sizes["drawn"]  # (n * D,) each, map-major
    y1, x1, y2, x2 = _random_locations(chunk.locations, h, w, height, width)
    placed = _Placed(h.copy(), w.copy(), y1, x1, y2, x2, np.full(n * draws, STEP_RANDOM, dtype=np.uint8))
    maps = np.repeat(np.arange(n, dtype=np.int64), draws)
    _climb_ladder(_searches(chunk, near is not None), masks, near, chunk.sizes, maps, placed)
    boxes = _boxes(placed.h, placed.w, placed.y1, placed.x1, placed.y2, placed.x2).reshape(n, draws, 6)
    return boxes, placed.step.reshape(n, draws)


@dataclass(frozen=True)
class _ChunkNumbers:
    """A chunk's patch sizes and random numbers, ``n * D`` rows, map-major (map 0's D draws, then map 1's).

    ``sizes``: ``{"drawn" | "smaller": (h, w)}``, ``(n * D,)`` each; ``locations`` (n * D, R, 7),
    ``pixels`` (n * D, T, 2), ``tries`` (n * D, 3, T, 2), ``spread`` (n * D, 4, 3), as in ``_Uniforms``.
    """

    sizes: dict[str, tuple[np.ndarray, np.ndarray]]
    locations: np.ndarray
    pixels: np.ndarray
    tries: np.ndarray
    spread: np.ndarray


def _chunk_numbers(
    n: int,
    height: int,
    width: int,
    draws: int,
    area: tuple[float, float],
    aspect: tuple[float, float],
    tries: int,
    seed: int,
    index_offset: int,
) -> _ChunkNumbers:
    """Every random number of the chunk, drawn map by map from each map's own generator, in map order.

    This is the only place the chunk's generators are read: the geometry after it is deterministic, so a
    map's draws stay what they were whatever the ladder does with them (and whoever shares the chunk).
    """
    drawn, smaller, uniforms = [], [], []
    for i in range(n):
        u = _draw_uniforms(seed, index_offset + i, draws, tries)
        frac, ratio = _size_parameters(u.sizes, area, aspect)
        drawn.append(_patch_sizes(frac, ratio, height, width))
        smaller.append(_patch_sizes(_smaller_fraction(frac, u.shrink, area), ratio, height, width))
        uniforms.append(u)
    return _ChunkNumbers(
        sizes={"drawn": _stacked_sizes(drawn), "smaller": _stacked_sizes(smaller)},
        locations=np.concatenate([u.locations for u in uniforms]),
        pixels=np.concatenate([u.pixels for u in uniforms]),
        tries=np.concatenate([u.tries for u in uniforms]),
        spread=np.concatenate([u.spread for u in uniforms]),
    )


def _stacked_sizes(per_map: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Per-map ``(h, w)`` of ``(D,)`` each -> ``(h, w)`` of ``(n * D,)`` each, map-major."""
    return np.concatenate([s[0] for s in per_map]), np.concatenate([s[1] for s in per_map])


#: One rung's two searches: (anchors, size, random-pair uniforms, step on success, exhaustive-search
#: uniforms, step on success).
_Search = tuple[str, str, np.ndarray, int, np.ndarray, int]


def _searches(chunk: _ChunkNumbers, with_next: bool) -> list[_Search]:
    """The rungs of the ladder this chunk climbs, in order; the next-cluster ones only with ``ranks``."""
    searches = [("top", "drawn", chunk.pixels, STEP_TOP, chunk.spread[:, 0], STEP_TOP_EXTRA)]
    for j, (which, size) in enumerate(_RUNGS):
        if which == "next" and not with_next:
            continue
        rung = STEP_SMALLER if which == "top" else STEP_NEXT_CLUSTER
        searches.append((which, size, chunk.tries[:, j], rung, chunk.spread[:, j + 1], rung))
    return searches


@dataclass(frozen=True)
class _Placed:
    """The chunk's boxes and steps, ``(n * D,)`` each: random placements until a rung places a draw."""

    h: np.ndarray
    w: np.ndarray
    y1: np.ndarray
    x1: np.ndarray
    y2: np.ndarray
    x2: np.ndarray
    step: np.ndarray


def _climb_ladder(
    searches: list[_Search],
    masks: np.ndarray,
    near: np.ndarray | None,
    sizes: dict[str, tuple[np.ndarray, np.ndarray]],
    maps: np.ndarray,
    placed: _Placed,
) -> None:
    """Runs the searches in ladder order on the draws still pending, recording each placement in ``placed``.

    Each rung tries its random pairs first and its exhaustive search second; a draw leaves the ladder at
    the first search that places it, so later rungs only see what earlier ones could not place.
    """
    anchors = {"top": _Anchors.of(masks)}
    pending = np.arange(maps.size)
    for which, size, u_pairs, pairs_step, u_spread, spread_step in searches:
        if which not in anchors:
            anchors[which] = _Anchors.of(near)
        for search, u, found_step in (
            (_random_anchors, u_pairs, pairs_step),
            (_separated_anchors, u_spread, spread_step),
        ):
            if pending.size == 0:
                break
            pending = _place(search, anchors[which], sizes[size], maps, u, found_step, pending, placed)


def _place(
    search: Callable[[_Anchors, np.ndarray, np.ndarray, np.ndarray, np.ndarray], _Found],
    anchors: _Anchors,
    size: tuple[np.ndarray, np.ndarray],
    maps: np.ndarray,
    u: np.ndarray,
    found_step: int,
    pending: np.ndarray,
    placed: _Placed,
) -> np.ndarray:
    """One search over the pending draws; what it places is written into ``placed``. Returns the rest."""
    ph, pw = size[0][pending], size[1][pending]
    found, fy1, fx1, fy2, fx2 = search(anchors, maps[pending], ph, pw, u[pending])
    done = pending[found]
    placed.step[done] = found_step
    placed.h[done], placed.w[done] = ph[found], pw[found]
    placed.y1[done], placed.x1[done] = fy1[found], fx1[found]
    placed.y2[done], placed.x2[done] = fy2[found], fx2[found]
    return pending[~found]


def random_pair_bank(
    sizes: np.ndarray, height: int, width: int, seed: int = 0, index_offset: int = 0
) -> PairBank:
    """Random-swap control: the given patch sizes at uniformly random non-overlapping locations.

    Pass the sizes of the CutSwap bank (``bank.boxes[..., :2]``) and its seed: draw ``d`` of map ``i``
    then swaps two patches of exactly the size CutSwap's draw swaps, and since the locations use the same
    generator and numbers as ``sample_pair_bank``'s ``random`` rung, a CutSwap draw that fell back is
    identical to the control's draw. Locations are uniform over all non-overlapping placements. ``step``
    is ``STEP_RANDOM`` everywhere (so ``fallback`` is all True: every location is random, by design).

    Args:
        sizes: ``(N, D, 2)`` int patch heights and widths; two patches must fit (``2h <= H`` or
            ``2w <= W``), as every size of a CutSwap bank does.
        height, width: image size.
        seed, index_offset: as in ``sample_pair_bank``.

    Returns:
        The bank.

    Raises:
        ValueError: ``seed`` out of range.
        ValueError: ``sizes`` of the wrong shape, or a size that does not fit twice into the image.
    """
    sizes = np.asarray(sizes)
    if sizes.ndim != 3 or sizes.shape[2] != 2:
        raise ValueError(f"sizes must be (N, D, 2) patch heights and widths, got shape {sizes.shape}")
    _check_seed(seed, index_offset)
    n, draws = sizes.shape[:2]
    h, w = sizes[..., 0].astype(np.int64), sizes[..., 1].astype(np.int64)
    fits = (h >= 1) & (w >= 1) & (h <= height) & (w <= width) & ((2 * h <= height) | (2 * w <= width))
    if not fits.all():
        i, d = np.argwhere(~fits)[0]
        raise ValueError(
            f"patch size {h[i, d]}x{w[i, d]} (map {i}, draw {d}) cannot hold two patches in {height}x{width}"
        )
    boxes = np.empty((n, draws, 6), dtype=np.int32)
    for start in range(0, n, _CHUNK_MAPS):
        stop = min(start + _CHUNK_MAPS, n)
        locations = np.stack(
            [_draw_uniforms(seed, index_offset + i, draws, None).locations for i in range(start, stop)]
        )
        hh, ww = h[start:stop], w[start:stop]
        boxes[start:stop] = _boxes(hh, ww, *_random_locations(locations, hh, ww, height, width))
    return PairBank(boxes=boxes, step=np.full((n, draws), STEP_RANDOM, dtype=np.uint8))


def random_swap_boxes(boxes: np.ndarray, height: int, width: int, seed: int = 0) -> np.ndarray:
    """The random-swap control's bank, (N, L, D, 6): a CutSwap bank's patch sizes at uniformly random places.

    The sizes come from the CutSwap bank ``boxes`` (N, L, D, 6), draw for draw: its ladder may shrink a
    draw's patch, so they cannot be recomputed from the seed. With the same seed and map indexing as
    ``sample_pair_bank`` (maps numbered level-major within each image, as the pairs stage does),
    ``random_pair_bank`` uses the same generator and location numbers as CutSwap's random step, so with
    equal training seeds the control differs from CutSwap only where the patches lie.
    """
    boxes = np.asarray(boxes)
    if boxes.ndim != 4 or boxes.shape[-1] != 6:
        raise ValueError(f"boxes must be (N, L, D, 6), got shape {boxes.shape}")
    n, levels, draws = boxes.shape[:3]
    sizes = boxes[..., :2].reshape(n * levels, draws, 2)
    bank = random_pair_bank(sizes, height, width, seed)
    return bank.boxes.reshape(n, levels, draws, 6)


def build_pair_bank(
    maps: np.ndarray | torch.Tensor,
    draws: int = 64,
    area: tuple[float, float] = CUTPASTE_AREA,
    aspect: tuple[float, float] = CUTPASTE_ASPECT,
    *,
    method: str = "fcm",
    k: int = 3,
    m: float = 2.0,
    bins: int | None = 1024,
    max_iter: int = 100,
    tol: float = 1e-5,
    max_tries: int = 20,
    seed: int = 0,
) -> PairBank | list[PairBank]:
    """Cluster saliency maps and draw ``draws`` patch pairs per map (``docs/method.md``).

    Args:
        maps: see the module docstring; finite values.
        draws: pairs per map.
        area, aspect: patch-size ranges (CutPaste's by default).
        method, k, m, bins, max_iter, tol: the clustering (``cutswap.method.clustering.cluster_maps``).
        max_tries, seed: the pair sampler (``cutswap.method.pairs.sample_pair_bank``).

    Raises:
        ValueError: maps of the wrong shape or non-finite, or a setting out of range.
    """
    t = torch.from_numpy(np.asarray(maps)) if not isinstance(maps, torch.Tensor) else maps.detach().cpu()
    if t.dim() not in (3, 4):
        raise ValueError(f"maps must be (N, L, H, W) or (N, H, W), got shape {tuple(t.shape)}")
    single = t.dim() == 3
    if single:
        t = t.unsqueeze(1)
    n, levels, h, w = t.shape
    flat = t.reshape(n * levels, h, w).float()
    centroids, top = cluster_maps(flat, method, k, m, bins, max_iter, tol)
    ranks = cluster_ranks(flat, centroids)
    bank = sample_pair_bank(
        top.numpy(), draws, tuple(area), tuple(aspect), max_tries, seed, ranks=ranks.numpy()
    )
    boxes = bank.boxes.reshape(n, levels, draws, 6)
    step = bank.step.reshape(n, levels, draws)
    per_level = [
        PairBank(np.ascontiguousarray(boxes[:, lv]), np.ascontiguousarray(step[:, lv]))
        for lv in range(levels)
    ]
    return per_level[0] if single else per_level
