"""Precomputed banks of patch-pair draws for CutSwap negatives (and for the random-swap control).

For every saliency map, ``draws`` (D) candidate swaps are drawn once; training samples one of them per
negative and swaps the two patches. A draw picks one patch size, then two distinct top-cluster pixels as the
centres of the two patches, clamps the rectangles inside the image and keeps them only if they do not
overlap; otherwise the pixel pair is redrawn up to ``max_tries`` times and, failing that, the two patches
are placed at uniformly random non-overlapping locations and the draw is marked as a fallback.

Data layout (``PairBank``):

- ``boxes``: ``(N, D, 6)`` int32, per draw ``(h, w, y1, x1, y2, x2)``: the patch height and width shared
  by both patches, and the top-left corners of patch 1 and patch 2. Patch 1 covers rows ``y1 : y1 + h``
  and columns ``x1 : x1 + w``.
- ``fallback``: ``(N, D)`` bool, True where the locations are random rather than saliency-guided.

Input ``top_masks``: ``(N, H, W)`` bool, the top-cluster pixels of each map (``cutswap.clustering``).

Randomness: map ``i`` of a call uses its own generator ``np.random.default_rng([seed, index_offset + i])``
and a fixed layout of draws (sizes first, then random locations, then pixel pairs), so a map's draws do
not depend on which other maps share the call: sharding the maps over workers and concatenating gives the
same bank as one call. Because the sizes come first, ``random_pair_bank`` with the same seed uses exactly
the same patch sizes draw for draw, which makes CutSwap minus random-swap a paired comparison.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cutswap.errors import SettingsError

__all__ = ["PairBank", "random_pair_bank", "sample_pair_bank"]

# Rounds of the random non-overlapping placement. Each round is accepted with probability >= 1/2, so
# 2**-12 of fallback draws keep the last (valid, very slightly less uniform) round.
_ROUNDS = 12
# Maps processed together in the vectorised geometry; bounds temporaries to a few tens of MiB.
_CHUNK_MAPS = 128


@dataclass(frozen=True)
class PairBank:
    """Patch-pair draws for ``N`` maps; see the module docstring for the layout."""

    boxes: np.ndarray
    fallback: np.ndarray

    def __post_init__(self) -> None:
        if self.boxes.ndim != 3 or self.boxes.shape[2] != 6:
            raise ValueError(f"boxes must be (N, D, 6), got {self.boxes.shape}")
        if self.fallback.shape != self.boxes.shape[:2]:
            raise ValueError(f"fallback must be {self.boxes.shape[:2]}, got {self.fallback.shape}")

    @property
    def fallback_rate(self) -> float:
        """Share of draws placed at random rather than by saliency; reported with every run."""
        return float(self.fallback.mean()) if self.fallback.size else 0.0


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
        raise SettingsError(f"pairs draws={draws!r} is invalid: set it to an integer >= 1")
    a0, a1 = area
    if not (0 < a0 <= a1 <= 1):
        raise SettingsError(
            f"pairs area={tuple(area)!r} is invalid: give (low, high) image fractions with 0 < low <= high <= 1"
        )
    r0, r1 = aspect
    if not (0 < r0 <= r1):
        raise SettingsError(
            f"pairs aspect={tuple(aspect)!r} is invalid: give (low, high) height/width ratios with 0 < low <= high"
        )
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SettingsError(f"seed={seed!r} is invalid: set it to an integer >= 0")
    if not isinstance(index_offset, (int, np.integer)) or index_offset < 0:
        raise ValueError(f"index_offset={index_offset!r} must be an integer >= 0")
    if height < 1 or width < 1 or height * width < 2:
        raise ValueError(f"a {height}x{width} image cannot hold two non-overlapping patches")


def _patch_sizes(
    u: np.ndarray, height: int, width: int, area: tuple[float, float], aspect: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """``(D, 2)`` uniforms -> patch heights and widths, ``(D,)`` int64 each.

    Area fraction ~ U[area], aspect ratio h/w log-uniform in [aspect] (as CutPaste). Sizes are rounded,
    clipped to the image, and if two patches could fit neither side by side (2w <= W) nor one above the
    other (2h <= H), the side needing the smaller relative cut is halved to the image's half. Computed per
    map (not batched) so that transcendental functions see the same array lengths in every chunking.
    """
    frac = area[0] + u[:, 0] * (area[1] - area[0])
    ratio = np.exp(np.log(aspect[0]) + u[:, 1] * (np.log(aspect[1]) - np.log(aspect[0])))
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


def _draw_uniforms(
    seed: int, index: int, draws: int, tries: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The fixed per-map layout of random numbers: sizes, random locations, then pixel pairs."""
    rng = np.random.default_rng([seed, index])
    sizes = rng.random((draws, 2))
    locations = rng.random((draws, _ROUNDS, 7))
    pixels = rng.random((draws, tries, 2)) if tries is not None else None
    return sizes, locations, pixels


def _boxes(*columns: np.ndarray) -> np.ndarray:
    """``(h, w, y1, x1, y2, x2)`` arrays of equal shape -> ``(..., 6)`` int32."""
    return np.stack(columns, axis=-1).astype(np.int32)


def sample_pair_bank(
    top_masks: np.ndarray,
    draws: int,
    area: tuple[float, float] = (0.02, 0.15),
    aspect: tuple[float, float] = (0.3, 3.3),
    max_tries: int = 20,
    seed: int = 0,
    index_offset: int = 0,
) -> PairBank:
    """Draws ``draws`` saliency-guided patch pairs per map from its top-cluster pixels.

    Args:
        top_masks: ``(N, H, W)`` bool top-cluster masks.
        draws: draws per map (D).
        area: range of the patch area as a fraction of the image, sampled uniformly.
        aspect: range of the patch height/width ratio, sampled log-uniformly.
        max_tries: pixel pairs tried per draw before falling back to random locations.
        seed: base seed; map ``i`` uses ``default_rng([seed, index_offset + i])``.
        index_offset: global index of ``top_masks[0]`` when the maps are processed in shards.

    Returns:
        The bank; ``fallback`` marks draws whose top cluster had < 2 pixels or whose ``max_tries`` pixel
        pairs all gave overlapping patches.

    Raises:
        SettingsError: ``draws``, ``area``, ``aspect``, ``max_tries`` or ``seed`` out of range.
    """
    masks = np.asarray(top_masks)
    if masks.ndim != 3:
        raise ValueError(f"top_masks must be (N, H, W), got shape {masks.shape}")
    masks = masks.astype(bool, copy=False)
    if not isinstance(max_tries, (int, np.integer)) or max_tries < 1:
        raise SettingsError(f"pairs max_tries={max_tries!r} is invalid: set it to an integer >= 1")
    n_maps, height, width = masks.shape
    _check_settings(draws, area, aspect, seed, index_offset, height, width)
    boxes = np.empty((n_maps, draws, 6), dtype=np.int32)
    fallback = np.empty((n_maps, draws), dtype=bool)
    for start in range(0, n_maps, _CHUNK_MAPS):
        stop = min(start + _CHUNK_MAPS, n_maps)
        boxes[start:stop], fallback[start:stop] = _sample_chunk(
            masks[start:stop], draws, area, aspect, max_tries, seed, index_offset + start
        )
    return PairBank(boxes=boxes, fallback=fallback)


def _sample_chunk(
    masks: np.ndarray,
    draws: int,
    area: tuple[float, float],
    aspect: tuple[float, float],
    tries: int,
    seed: int,
    index_offset: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Draws for a chunk of maps: random numbers per map (own generator), geometry for the whole chunk.

    Returns ``(n, D, 6)`` int32 boxes and ``(n, D)`` bool fallback flags.
    """
    n, height, width = masks.shape
    hs, ws, loc_u, pix_u = [], [], [], []
    for i in range(n):
        size_u, locations, pixels = _draw_uniforms(seed, index_offset + i, draws, tries)
        h, w = _patch_sizes(size_u, height, width, area, aspect)
        hs.append(h)
        ws.append(w)
        loc_u.append(locations)
        pix_u.append(pixels)
    h, w = np.stack(hs), np.stack(ws)  # (n, D)
    loc_u, pix_u = np.stack(loc_u), np.stack(pix_u)  # (n, D, R, 7), (n, D, T, 2)

    ry1, rx1, ry2, rx2 = _random_locations(loc_u, h, w, height, width)

    flat = masks.reshape(n, height * width)
    counts = flat.sum(axis=1, dtype=np.int64)  # (n,)
    pixel_ids = np.flatnonzero(flat)  # chunk-global i * H * W + pixel, grouped by map
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    usable = counts >= 2
    if pixel_ids.size:
        cnt = counts[:, None, None]
        a = np.clip(np.floor(pix_u[..., 0] * cnt).astype(np.int64), 0, np.maximum(cnt - 1, 0))
        b = np.clip(np.floor(pix_u[..., 1] * (cnt - 1)).astype(np.int64), 0, np.maximum(cnt - 2, 0))
        b = b + (b >= a)  # distinct from a: skip over it
        base = starts[:, None, None]
        last = pixel_ids.size - 1
        offsets = (np.arange(n, dtype=np.int64) * (height * width))[:, None, None]
        p1 = pixel_ids[np.minimum(base + a, last)] - offsets
        p2 = pixel_ids[np.minimum(base + b, last)] - offsets
        hh, ww = h[..., None], w[..., None]
        ty1 = np.clip(p1 // width - hh // 2, 0, height - hh)
        tx1 = np.clip(p1 % width - ww // 2, 0, width - ww)
        ty2 = np.clip(p2 // width - hh // 2, 0, height - hh)
        tx2 = np.clip(p2 % width - ww // 2, 0, width - ww)
        ok = ((np.abs(ty1 - ty2) >= hh) | (np.abs(tx1 - tx2) >= ww)) & usable[:, None, None]
        found = ok.any(axis=-1)
        first = np.argmax(ok, axis=-1)[..., None]
        gy1, gx1, gy2, gx2 = (np.take_along_axis(c, first, axis=-1)[..., 0] for c in (ty1, tx1, ty2, tx2))
    else:
        found = np.zeros((n, draws), dtype=bool)
        gy1 = gx1 = gy2 = gx2 = ry1
    y1, x1 = np.where(found, gy1, ry1), np.where(found, gx1, rx1)
    y2, x2 = np.where(found, gy2, ry2), np.where(found, gx2, rx2)
    return _boxes(h, w, y1, x1, y2, x2), ~found


def random_pair_bank(
    n: int,
    height: int,
    width: int,
    draws: int,
    area: tuple[float, float] = (0.02, 0.15),
    aspect: tuple[float, float] = (0.3, 3.3),
    seed: int = 0,
    index_offset: int = 0,
) -> PairBank:
    """Random-swap control: the same patch sizes as ``sample_pair_bank`` (same seed), random locations.

    Locations are uniform over all non-overlapping placements of the two patches. ``fallback`` is all
    False: random placement is the design here, not a fallback.

    Args:
        n: number of maps (images x levels) to draw for.
        height, width: image size.
        draws: draws per map (D).
        area, aspect, seed, index_offset: as in ``sample_pair_bank``.

    Returns:
        The bank.

    Raises:
        SettingsError: ``draws``, ``area``, ``aspect`` or ``seed`` out of range.
    """
    if n < 0:
        raise ValueError(f"n={n} must be >= 0")
    _check_settings(draws, area, aspect, seed, index_offset, height, width)
    boxes = np.empty((n, draws, 6), dtype=np.int32)
    for i in range(n):
        size_u, locations, _ = _draw_uniforms(seed, index_offset + i, draws, None)
        h, w = _patch_sizes(size_u, height, width, area, aspect)
        boxes[i] = _boxes(h, w, *_random_locations(locations, h, w, height, width))
    return PairBank(boxes=boxes, fallback=np.zeros((n, draws), dtype=bool))
