"""Batched 1-D clustering of saliency-map pixel values (fuzzy c-means and k-means) in torch.

CutSwap clusters every saliency map on its pixel *values* and keeps the pixels of the cluster whose centroid
is highest (the "top cluster"); pairs of patch centres are later drawn from it (see ``cutswap.method.pairs``).

Anchor rules (``cluster.anchor``, ``ANCHOR_RULES``): which pixels anchor the pairs, as a mask plus the ranks
the pair sampler's ladder widens the anchor with (rank 0 is always exactly the mask):

- ``top`` (CutSwap): the top cluster (``top_cluster_mask``) and ``cluster_ranks``.
- ``random`` (ablation: does the top-centroid cluster matter?): one of the map's distinct clusters drawn
  uniformly per map (``random_cluster_choice``, seeded by the seed and the map's index only), its pixels
  (``random_cluster_mask``), and ranks ``|rank - chosen|`` (``random_cluster_ranks``).
- ``threshold`` (ablation: does clustering matter?): no clustering; the pixels whose normalised saliency is
  ``>= threshold`` (``threshold_mask``), as Grad-CAM-guided augmentations pick salient regions, and ranks
  0 / 1 / 2 for ``>= threshold`` / ``>= threshold / 2`` / the rest (``threshold_ranks``).

Under every rule a constant map (one distinct centroid; after normalisation all zero) has an empty mask
and ``UNRANKED`` ranks, so the pair sampler falls back to random locations rather than pretending that a
flat map has a salient region.

Data layout:

- ``maps``: ``(B, H, W)`` float (float16 as stored, float32 or float64), a torch tensor on any device or a
  numpy array; values are normally in ``[0, 1]`` but any finite range works.
- ``values`` / ``weights`` (low-level API): ``(B, P)`` float; ``B`` independent 1-D problems of ``P``
  points each, ``weights`` optional non-negative point weights (histogram counts).
- ``centroids``: ``(B, K)`` float64, sorted ascending along ``K``.
- ``iterations``: ``(B,)`` int64, iterations each problem ran before it met ``tol`` (or ``max_iter``).
- ``top_mask``: ``(B, H, W)`` bool, the pixels whose hard label (largest membership, which in 1-D is the
  nearest centroid) is the highest centroid.
- ``ranks``: ``(B, H, W)`` uint8, each pixel's cluster counted from the top by centroid (0 = the top cluster,
  1 = the next distinct lower centroid, ...; ``UNRANKED`` on constant maps), from ``cluster_ranks``.
- ``chosen``: ``(B,)`` int64, the rank of the cluster the ``random`` rule picked per map (0 = top).
- ``threshold``: a float in ``(0, 1)`` on the per-map min-max normalised values.

Why a histogram: the values are 1-D, so replacing a map's ``P = H * W`` pixels by ``bins`` weighted points
(weight = pixel count of the bin, position = mean value of the pixels in the bin) costs ``bins * K`` instead
of ``P * K`` work per iteration. For FCM, whose memberships vary smoothly within a bin, the in-bin mean makes
the first-order error vanish: the fixed point moves by O(bin width^2) (< 1e-6 with 1024 bins in the tests).
k-means assigns a whole bin to one cluster, so its error is first order (a few bin widths at most). The
in-bin mean also keeps a constant map exact. ``bins=None`` clusters the raw pixels (exact; for validation).

Every problem of a batch iterates independently: a problem that meets ``tol`` is frozen and dropped from
the working set, so its result does not depend on which other maps share the batch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

__all__ = [
    "ANCHOR_RULES",
    "CLUSTERING_METHODS",
    "UNRANKED",
    "cluster_maps",
    "cluster_ranks",
    "distinct_clusters",
    "fuzzy_cmeans",
    "kmeans",
    "random_cluster_choice",
    "random_cluster_mask",
    "random_cluster_ranks",
    "threshold_mask",
    "threshold_ranks",
    "top_cluster_mask",
]

CLUSTERING_METHODS = ("fcm", "kmeans")

# Pixels binned per chunk in ``cluster_maps``: bounds the float32 and int64 temporaries (~128 MiB).
_CHUNK_PIXELS = 1 << 23
# Pixels per chunk in exact mode, whose iterations hold several (maps, P, K) float64 temporaries (~250 MiB).
_EXACT_CHUNK_PIXELS = 1 << 21
# k-means starts from the optimal partition of a _KM_FINE-bin histogram, searched on a _KM_COARSE grid and
# then in windows of +-_KM_WINDOW fine edges, for _KM_CHUNK problems at a time (see _kmeans_start).
_KM_FINE = 4096
_KM_COARSE = 64
_KM_WINDOW = 32
_KM_ROUNDS = 16
_KM_CHUNK = 256
# Guards divisions by weights and distances; 1e-12 stays representable squared (and its inverse squared)
# in float32, so the m = 2 update cannot overflow there either.
_TINY = 1e-12


def _tiny_sq(dtype: torch.dtype) -> float:
    """Smallest squared distance used: a point sitting on a centroid gets a huge but finite weight."""
    return 1e-24 if dtype == torch.float64 else 1e-12


def _check_common(k: int, max_iter: int, tol: float) -> None:
    if not isinstance(k, int) or k < 2:
        raise ValueError(
            f"clustering k={k!r} is invalid: the top cluster needs at least 2 clusters; "
            "set k to an integer >= 2"
        )
    if not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"clustering max_iter={max_iter!r} is invalid: set it to an integer >= 1")
    if not (tol >= 0):
        raise ValueError(f"clustering tol={tol!r} is invalid: set it to a number >= 0")


def _prepare(values: torch.Tensor, weights: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Checks shapes and picks the working precision: float64 stays float64, anything else runs in float32.

    float32 halves the memory traffic, which bounds these updates on CPU; its rounding (~1e-7 of the value
    range) is below the histogram's binning error. float64 is there for exact-mode validation.
    """
    if values.ndim != 2:
        raise ValueError(f"values must be (B, P), got shape {tuple(values.shape)}")
    if values.shape[1] == 0:
        raise ValueError("values must hold at least one point per problem (P >= 1)")
    dtype = torch.float64 if values.dtype == torch.float64 else torch.float32
    x = values.to(dtype)
    if weights is None:
        w = torch.ones_like(x)
    else:
        if weights.shape != values.shape:
            raise ValueError(
                f"weights shape {tuple(weights.shape)} differs from values {tuple(values.shape)}"
            )
        w = weights.to(device=x.device, dtype=dtype)
    return x, w


def _initial_centroids(x: torch.Tensor, w: torch.Tensor, k: int) -> torch.Tensor:
    """Deterministic start: the mean of weighted quantiles and of evenly spaced points of the value range.

    Quantiles alone coincide on maps dominated by one value (LayerCAM maps are often mostly exact zeros
    after the ReLU), and coincident centroids never separate in c-means; even spacing alone starts far from
    the mass of skewed maps. Their average is strictly increasing whenever the map is not constant and sits
    near the quantiles. FCM from it reached the same fixed point as skfuzzy from three random starts on
    every test map (FCM's objective is much smoother than k-means'; k-means uses ``_kmeans_start``).
    """
    xs, order = torch.sort(x, dim=1)
    ws = torch.gather(w, 1, order)
    cdf = torch.cumsum(ws, dim=1)
    total = cdf[:, -1:].clamp_min(_TINY)
    levels = (torch.arange(k, dtype=x.dtype, device=x.device) + 0.5) / k
    targets = levels[None, :] * total
    idx = torch.searchsorted(cdf.contiguous(), targets.contiguous()).clamp_max(x.shape[1] - 1)
    quantiles = torch.gather(xs, 1, idx)
    positive = ws > 0
    lo = torch.where(positive, xs, torch.inf).amin(dim=1, keepdim=True)
    hi = torch.where(positive, xs, -torch.inf).amax(dim=1, keepdim=True)
    spaced = lo + levels[None, :] * (hi - lo)
    return 0.5 * (quantiles + spaced)


def _interval_stats(prefix: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Sums (weight, weight * x, weight * x^2) over fine bins ``[a, b)``: ``(3, *a.shape)`` from prefix sums.

    ``prefix`` is ``(3, B, F + 1)``; ``a`` and ``b`` are int64 index tensors of equal shape ``(B, ...)``.
    """
    flat_a, flat_b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    out = [torch.gather(prefix[r], 1, flat_b) - torch.gather(prefix[r], 1, flat_a) for r in range(3)]
    return torch.stack(out).reshape((3, *a.shape))


def _partition_dp(prefix: torch.Tensor, candidates: list[torch.Tensor]) -> torch.Tensor:
    """Best split of each problem's fine bins into ``K`` intervals, boundary ``k`` taken from candidates[k].

    ``candidates`` holds ``K - 1`` tensors ``(B, C)`` of fine-bin edges (the first interval starts at 0, the
    last ends at F). ``D_k(j) = min_i D_{k-1}(i) + SSE(c_{k-1}[i], c_k[j])`` with SSE from prefix sums, an
    interval whose start exceeds its end costing inf (an empty interval costs 0). Returns ``(B, K + 1)``
    edges.
    """
    b, f = prefix.shape[1], prefix.shape[2] - 1
    zero = torch.zeros((b, 1), dtype=torch.int64, device=prefix.device)
    ends = [zero, *candidates, torch.full_like(zero, f)]

    def cost(a: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        ia, ie = torch.broadcast_tensors(a[:, :, None], e[:, None, :])
        sw, sx, sq = _interval_stats(prefix, ia, ie)
        sse = torch.where(sw > 0, (sq - sx.square() / sw.clamp_min(_TINY)).clamp_min(0), torch.zeros_like(sw))
        return sse.masked_fill(ia > ie, torch.inf)

    best = torch.zeros((b, 1), dtype=torch.float64, device=prefix.device)
    choices = []
    for prev, cur in zip(ends[:-1], ends[1:], strict=True):
        best, arg = (best[:, :, None] + cost(prev, cur)).min(dim=1)
        choices.append(arg)
    picked = [torch.zeros((b,), dtype=torch.int64, device=prefix.device)]  # index into the last candidates
    for arg in reversed(choices[1:]):
        picked.append(torch.gather(arg, 1, picked[-1][:, None])[:, 0])
    edges = [
        torch.gather(c, 1, i[:, None])[:, 0] for c, i in zip(ends[1:-1], reversed(picked[1:]), strict=True)
    ]
    return torch.stack([zero[:, 0], *edges, ends[-1][:, 0]], dim=1)


def _kmeans_start(x: torch.Tensor, w: torch.Tensor, k: int) -> torch.Tensor:
    """Near-optimal k-means centroids in 1-D: exact partition of a fine histogram, found coarse to fine.

    Why not quantile starts: Lloyd's algorithm stops at the nearest fixed point, and the k-means objective of
    smooth saliency maps has many (a boundary between two clusters can slide through a long flat valley).
    From quantile starts Lloyd ended up to 5e-4 worse in objective than the global optimum; sklearn's best of
    10 k-means++ restarts missed it on ~1 map in 5 as well. In 1-D an optimal partition consists of K
    contiguous intervals, so it can be found by dynamic programming over interval edges: first over every
    edge of a coarse grid (``_KM_COARSE`` groups, global on that grid), then repeatedly over a window of fine
    edges around each boundary until the boundaries stop moving. Lloyd on the actual values then only
    polishes inside the right valley. Empty intervals are allowed (maps with fewer distinct values than K);
    their centroid is the interval's edge, which keeps the centroids sorted.

    Returns:
        ``(B, K)`` float64 centroids, sorted ascending.
    """
    b, fine, step = x.shape[0], _KM_FINE, _KM_FINE // _KM_COARSE
    x64, w64 = x.to(torch.float64), w.to(torch.float64)
    positive = w64 > 0
    lo = torch.where(positive, x64, torch.inf).amin(dim=1, keepdim=True)
    hi = torch.where(positive, x64, -torch.inf).amax(dim=1, keepdim=True)
    span = hi - lo
    scale = torch.where(span > 0, fine / span.clamp_min(_TINY), torch.zeros_like(span))
    idx = ((x64 - lo) * scale).floor_().clamp_(0, fine - 1).to(torch.int64)
    stats = torch.zeros((3, b, fine), dtype=torch.float64, device=x.device)
    for row, src in enumerate((w64, w64 * x64, w64 * x64 * x64)):
        stats[row].scatter_add_(1, idx, src)
    prefix = torch.nn.functional.pad(stats.cumsum(dim=2), (1, 0))

    grid = torch.arange(0, fine + 1, step, device=x.device).expand(b, -1)
    edges = _partition_dp(prefix, [grid] * (k - 1))
    window = torch.arange(-_KM_WINDOW, _KM_WINDOW + 1, device=x.device)
    for _ in range(_KM_ROUNDS):
        inner = edges[:, 1:-1]
        candidates = [(inner[:, i : i + 1] + window).clamp_(0, fine) for i in range(k - 1)]
        refined = _partition_dp(prefix, candidates)
        if torch.equal(refined, edges):
            break
        edges = refined
    sw, sx, _ = _interval_stats(prefix, edges[:, :-1], edges[:, 1:])
    edge_value = lo + edges[:, :-1].to(torch.float64) * (span / fine)
    return torch.sort(torch.where(sw > 0, sx / sw.clamp_min(_TINY), edge_value), dim=1).values


def _fcm_step(x: torch.Tensor, w: torch.Tensor, c: torch.Tensor, m: float) -> torch.Tensor:
    """One fuzzy c-means update (memberships from centroids, then centroids from memberships).

    Memberships are ``u_jk = d_jk^(-p) / s_j`` with ``p = 2 / (m - 1)`` and ``s_j = sum_l d_jl^(-p)``.
    Temporaries are laid out ``(B, K, P)`` so that every pass runs along contiguous points. For m = 2 (the
    common case) ``u^m = d^-4 / s^2`` needs no powers and no division of the ``(B, K, P)`` array; otherwise
    distances are divided by each point's smallest one first, so the powers lie in (0, 1] and cannot
    overflow for m close to 1. Both weighted sums of the centroid update come from one batched product.
    """
    d2 = (x[:, None, :] - c[:, :, None]).square_().clamp_min_(_tiny_sq(x.dtype))
    if m == 2.0:
        inv = d2.reciprocal_()
        q = inv.sum(dim=1).square_().reciprocal_()  # 1 / s^2, (B, P)
        um = inv.square_()
    else:
        inv = (d2 / d2.amin(dim=1, keepdim=True)).pow_(-1.0 / (m - 1.0))
        q = inv.sum(dim=1).pow_(-m)
        um = inv.pow_(m)
    wq = w * q
    sums = torch.bmm(um, torch.stack((wq * x, wq), dim=1).transpose(1, 2))  # (B, K, 2)
    num, den = sums[..., 0], sums[..., 1]
    return torch.where(den > 0, num / den.clamp_min(_TINY), c)


def _kmeans_step(x: torch.Tensor, w: torch.Tensor, c: torch.Tensor, m: float) -> torch.Tensor:
    """One Lloyd update on sorted centroids; an empty cluster keeps its centroid (deterministic).

    In 1-D with sorted centroids the nearest centroid is found by counting the midpoints below a value
    (ties go to the lower cluster, like an argmin), and the update keeps the centroids sorted: each new
    centroid is the mean of an interval lying between the neighbouring midpoints.
    """
    del m
    mids = 0.5 * (c[:, 1:] + c[:, :-1])
    labels = (x[:, None, :] > mids[:, :, None]).sum(dim=1)
    num = torch.zeros_like(c).scatter_add_(1, labels, w * x)
    den = torch.zeros_like(c).scatter_add_(1, labels, w)
    return torch.where(den > 0, num / den.clamp_min(_TINY), c)


def _iterate(
    step: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor],
    x: torch.Tensor,
    w: torch.Tensor,
    c: torch.Tensor,
    m: float,
    max_iter: int,
    tol: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs ``step`` from centroids ``c`` on all problems, dropping each from the work once it moves
    <= tol."""
    out = c.clone()
    iterations = torch.full((x.shape[0],), max_iter, dtype=torch.int64, device=x.device)
    active = torch.arange(x.shape[0], device=x.device)
    for it in range(1, max_iter + 1):
        new = step(x, w, c, m)
        done = (new - c).abs().amax(dim=1) <= tol
        c = new
        if bool(done.any()):
            out[active[done]] = c[done]
            iterations[active[done]] = it
            keep = ~done
            active, x, w, c = active[keep], x[keep], w[keep], c[keep]
            if active.numel() == 0:
                break
    if active.numel():
        out[active] = c
    return torch.sort(out, dim=1).values.to(torch.float64), iterations


def fuzzy_cmeans(
    values: torch.Tensor,
    weights: torch.Tensor | None = None,
    k: int = 3,
    m: float = 2.0,
    max_iter: int = 100,
    tol: float = 1e-5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fuzzy c-means on ``B`` independent 1-D problems at once.

    Minimises ``sum_j w_j sum_k u_jk^m (x_j - c_k)^2`` by the usual alternating updates, starting from a
    deterministic initialisation (no seed to record, identical reruns).

    Args:
        values: ``(B, P)`` point values.
        weights: optional ``(B, P)`` non-negative weights (e.g. histogram counts); ``None`` = all ones.
        k: number of clusters (>= 2).
        m: fuzzifier (> 1); 2 is the customary value and the CutSwap default.
        max_iter: iteration cap per problem.
        tol: a problem stops once no centroid moves by more than ``tol`` (absolute, in value units) in one
            iteration. Note skfuzzy's ``error`` is instead a bound on the change of the whole membership
            matrix; the two stop at slightly different points of the same convergence path.

    Returns:
        ``(centroids, iterations)``: ``(B, K)`` float64 sorted ascending, and ``(B,)`` int64.

    Raises:
        ValueError: ``k``, ``m``, ``max_iter`` or ``tol`` out of range.
    """
    _check_common(k, max_iter, tol)
    if not (m > 1.0):
        raise ValueError(f"clustering m={m!r} is invalid: the fuzzifier must be > 1 (2 is customary)")
    x, w = _prepare(values, weights)
    return _iterate(_fcm_step, x, w, _initial_centroids(x, w, k), float(m), max_iter, tol)


def kmeans(
    values: torch.Tensor,
    weights: torch.Tensor | None = None,
    k: int = 3,
    max_iter: int = 100,
    tol: float = 1e-5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted k-means on ``B`` independent 1-D problems at once, near the global optimum, deterministic.

    Starts from the optimal partition of a fine histogram (dynamic programming, see ``_kmeans_start``) and
    polishes it with Lloyd iterations on the given points, so it does not depend on restarts: on the test
    maps it is within 1e-6 (relative objective) of the global optimum, which sklearn's best of 10 k-means++
    restarts misses on some maps.

    Args:
        values: ``(B, P)`` point values.
        weights: optional ``(B, P)`` non-negative weights; ``None`` = all ones.
        k: number of clusters (>= 2).
        max_iter: iteration cap per problem.
        tol: a problem stops once no centroid moves by more than ``tol`` in one iteration.

    Returns:
        ``(centroids, iterations)``: ``(B, K)`` float64 sorted ascending, and ``(B,)`` int64.

    Raises:
        ValueError: ``k``, ``max_iter`` or ``tol`` out of range.
    """
    _check_common(k, max_iter, tol)
    x, w = _prepare(values, weights)
    start = torch.cat(
        [
            _kmeans_start(x[i : i + _KM_CHUNK], w[i : i + _KM_CHUNK], k)
            for i in range(0, x.shape[0], _KM_CHUNK)
        ]
    ).to(x.dtype)
    return _iterate(_kmeans_step, x, w, start, 1.0, max_iter, tol)


def _histogram(
    flat: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bins: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, P)`` values -> ``(B, bins)`` in-bin mean values and pixel counts over each map's ``[lo, hi]``.

    Each map uses its own [min, max] so that maps with a narrow value range keep full resolution. Empty
    bins get their centre as position and weight 0 (they take no part in the updates). Positions are
    computed in float32 and the in-bin means are accumulated as offsets within the bin (in bin units), so
    float32 rounding costs ~1e-7 of a bin width rather than ~1e-7 of the value; this halves the memory
    traffic of the pass over all pixels, which dominates the cost of the histogram mode.
    """
    n = flat.shape[0]
    lo, hi = lo[:, None], hi[:, None]
    span = hi - lo
    scale = torch.where(span > 0, bins / span.clamp_min(_TINY), torch.zeros_like(span))
    t = (flat.to(torch.float32) - lo.float()).mul_(scale.float())  # not in place: flat may be the caller's
    idx = t.floor().clamp_(0, bins - 1)
    frac = t.sub_(idx)
    idx = idx.to(torch.int64)
    counts = torch.zeros((n, bins), dtype=torch.float32, device=flat.device)
    counts.scatter_add_(1, idx, torch.ones((1, 1), dtype=torch.float32, device=flat.device).expand_as(frac))
    offset = torch.zeros_like(counts).scatter_add_(1, idx, frac).to(torch.float64)
    counts = counts.to(torch.float64)
    within = torch.where(counts > 0, offset / counts.clamp_min(1.0), torch.full_like(offset, 0.5))
    grid = torch.arange(bins, dtype=torch.float64, device=flat.device)
    means = lo + (grid + within) * (span / bins)
    return means, counts


def top_cluster_mask(maps: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Pixels whose nearest centroid is the highest one (the hard label of both FCM and k-means in 1-D).

    With sorted centroids that is ``value > (c_top + c_next) / 2``, where ``c_next`` is the highest
    centroid *distinct* from ``c_top``: when there are more clusters than distinct values (a binary map,
    K = 3), two centroids can merge on the top value, and the pixels there still form the top cluster.
    Centroids closer than 1e-6 of the centroid spread count as merged. A pixel exactly on the midpoint goes
    to the lower cluster. A constant map has no distinct lower centroid and gets an empty top cluster, which
    the pair sampler then reports as a fallback rather than pretending that a flat map has a salient region.

    Args:
        maps: ``(B, H, W)`` values.
        centroids: ``(B, K)`` sorted ascending.

    Returns:
        ``(B, H, W)`` bool.
    """
    c = centroids.to(device=maps.device, dtype=torch.float64)
    top = c[:, -1:]
    merged = top - c <= 1e-6 * (top - c[:, :1])
    below = torch.where(merged, torch.full_like(c, -torch.inf), c).amax(dim=1, keepdim=True)
    threshold = torch.where(torch.isfinite(below), 0.5 * (top + below), torch.full_like(top, torch.inf))
    return maps.to(torch.float64) > threshold[:, :, None]


#: Rank of every pixel of a map whose centroids all merge (a constant map): it has no top cluster and no next
#: cluster, so neither may anchor a pair.
UNRANKED = 255

#: The rules choosing the pixels that anchor a map's patch pairs (``cluster.anchor``; module docstring).
ANCHOR_RULES = ("top", "random", "threshold")

# Third word of the ``random`` rule's per-map seed sequences: apart from the pair sampler's ``[seed, i]``.
_RANDOM_ANCHOR_STREAM = 0x616E63686F72  # "anchor"


def _rank_bounds(c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Boundaries between consecutive ranks and the lowest rank of each map, from sorted centroids.

    Walking down from the top, a centroid starts a new rank when it lies more than the tolerance (1e-6 of
    the centroid spread) below the highest centroid of the current rank, whose midpoint with it is the
    boundary.

    Args:
        c: ``(B, K)`` float64 centroids, sorted ascending.

    Returns:
        ``(bounds, last)``: ``(B, K - 1)`` float64, ``bounds[:, r]`` separating rank ``r`` from ``r + 1``
        (decreasing in ``r``; ``-inf`` past the last rank), and ``(B,)`` int64, the lowest rank (the number
        of distinct centroids minus one; 0 on a constant map).
    """
    b, k = c.shape
    tol = 1e-6 * (c[:, -1] - c[:, 0])
    bounds = torch.full((b, k - 1), -torch.inf, dtype=torch.float64, device=c.device)
    head = c[:, -1].clone()  # the highest centroid of the current rank
    rank = torch.zeros(b, dtype=torch.int64, device=c.device)
    for j in range(k - 2, -1, -1):
        new = head - c[:, j] > tol
        rows = torch.nonzero(new)[:, 0]
        bounds[rows, rank[rows]] = 0.5 * (head[rows] + c[rows, j])
        rank = rank + new
        head = torch.where(new, c[:, j], head)
    return bounds, rank


def _check_centroids(t: torch.Tensor, c: torch.Tensor) -> None:
    if t.ndim != 3 or c.ndim != 2 or c.shape[0] != t.shape[0] or not 2 <= c.shape[1] < UNRANKED:
        raise ValueError(
            f"maps (B, H, W) and centroids (B, K) expected, got {tuple(t.shape)}, {tuple(c.shape)}"
        )


def cluster_ranks(maps: torch.Tensor | np.ndarray, centroids: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Each pixel's cluster rank by centroid: 0 for the top cluster, 1 for the next lower one, and so on.

    The pair sampler degrades from the top cluster to the top and next clusters, so the stores keep the
    whole ranking rather than a second mask. As in ``top_cluster_mask``, centroids within 1e-6 of the
    centroid spread of a higher one count as one (merged) centroid, ranks count *distinct* centroids, and a
    pixel takes the rank of its nearest distinct centroid, going to the lower one exactly on a midpoint;
    ``rank == 0`` is therefore exactly ``top_cluster_mask``. Walking down from the top, a centroid starts a
    new rank when it lies more than the tolerance below the highest centroid of the current rank, whose
    midpoint with it is the boundary. A map without two distinct centroids has no ranks: ``UNRANKED``.

    Args:
        maps: ``(B, H, W)`` values (torch on any device, or numpy).
        centroids: ``(B, K)`` sorted ascending, K < 255.

    Returns:
        ``(B, H, W)`` uint8 on the device of ``maps``.
    """
    t = torch.from_numpy(np.ascontiguousarray(maps)) if isinstance(maps, np.ndarray) else maps
    c = torch.as_tensor(centroids).to(device=t.device, dtype=torch.float64)
    _check_centroids(t, c)
    k = c.shape[1]
    bounds, rank = _rank_bounds(c)
    n, (h, w) = t.shape[0], t.shape[1:]
    out = torch.empty((n, h, w), dtype=torch.uint8, device=t.device)
    chunk = max(1, _CHUNK_PIXELS // max(h * w, 1))
    for s in range(0, n, chunk):
        values = t[s : s + chunk].to(torch.float64)
        ranks = torch.zeros(values.shape, dtype=torch.uint8, device=t.device)
        for r in range(k - 1):  # bounds decrease with r: a pixel's rank is the number of bounds >= its value
            ranks += values <= bounds[s : s + chunk, r, None, None]
        out[s : s + chunk] = torch.where(rank[s : s + chunk, None, None] > 0, ranks, UNRANKED)
    return out


def distinct_clusters(centroids: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Number of distinct clusters of each map (centroids merged as in ``cluster_ranks``): ``(B,)`` int64.

    1 on a constant map, whose centroids all merge; ``cluster_ranks`` then runs from 0 to this minus one.
    """
    c = torch.as_tensor(centroids).to(torch.float64)
    if c.ndim != 2 or not 2 <= c.shape[1] < UNRANKED:
        raise ValueError(f"centroids (B, K) with 2 <= K < 255 expected, got {tuple(c.shape)}")
    return _rank_bounds(c)[1] + 1


def random_cluster_choice(
    centroids: torch.Tensor | np.ndarray, seed: int = 0, index_offset: int = 0
) -> torch.Tensor:
    """The rank of the cluster that anchors each map under the ``random`` rule: ``(B,)`` int64.

    Uniform among the map's distinct clusters (``distinct_clusters``; 0 = the top one), from map ``i``'s own
    generator ``np.random.default_rng([seed, index_offset + i, _RANDOM_ANCHOR_STREAM])``, so a map's choice
    depends only on the seed and its index: shards of a stack (``index_offset`` = the first map's index)
    give the same choices as one call. The stream constant keeps these numbers apart from the pair
    sampler's, which seeds map ``i`` with ``[seed, i]``: with the same seed the choice of cluster would
    otherwise be a function of the first number the sampler draws for that map's patch size.

    Args:
        centroids: ``(B, K)`` sorted ascending.
        seed: ``cluster.seed``, >= 0.
        index_offset: index of map 0 in the whole stack, >= 0.

    Returns:
        ``(B,)`` int64 on the device of ``centroids``; 0 on constant maps (one cluster, no anchor anyway).

    Raises:
        ValueError: a negative or non-integer ``seed`` or ``index_offset``.
    """
    for name, value in (("seed", seed), ("index_offset", index_offset)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"cluster {name}={value!r} is invalid: use an integer >= 0")
    counts = distinct_clusters(centroids)
    chosen = [
        int(np.random.default_rng([seed, index_offset + i, _RANDOM_ANCHOR_STREAM]).integers(count))
        for i, count in enumerate(counts.tolist())
    ]
    return torch.tensor(chosen, dtype=torch.int64, device=counts.device)


def random_cluster_mask(ranks: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """The anchor pixels under the ``random`` rule: those of the chosen cluster, ``(B, H, W)`` bool.

    A distinct centroid nearly always has pixels nearest to it; where one has none (histogram centroids can
    sit between bins), the mask is empty and the pair sampler's ladder widens to the neighbouring clusters.

    Args:
        ranks: ``(B, H, W)`` uint8 from ``cluster_ranks`` (``UNRANKED`` on constant maps, which therefore
            get an empty mask, as ``top_cluster_mask`` gives them).
        chosen: ``(B,)`` ranks from ``random_cluster_choice``.
    """
    _check_chosen(ranks, chosen)
    return ranks.to(torch.int64) == chosen.to(ranks.device)[:, None, None]


def random_cluster_ranks(ranks: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """Nearness to the chosen cluster, the ladder's ranks under the ``random`` rule: ``(B, H, W)`` uint8.

    ``|rank - chosen|``: 0 is the chosen cluster (``random_cluster_mask``), 1 its neighbours by centroid
    (above and below), and so on, so the pair sampler's ``next-cluster`` rungs widen the anchor to the
    adjacent clusters as they do from the top cluster. ``UNRANKED`` stays ``UNRANKED``. With ``chosen`` all
    0 this is ``ranks`` itself.
    """
    _check_chosen(ranks, chosen)
    r = ranks.to(torch.int64)
    near = (r - chosen.to(ranks.device)[:, None, None]).abs()
    return torch.where(r == UNRANKED, UNRANKED, near).to(torch.uint8)


def _check_chosen(ranks: torch.Tensor, chosen: torch.Tensor) -> None:
    if ranks.ndim != 3 or chosen.shape != ranks.shape[:1]:
        raise ValueError(
            f"ranks (B, H, W) and chosen (B,) expected, got {tuple(ranks.shape)}, {tuple(chosen.shape)}"
        )


def _check_threshold(threshold: float) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
        raise ValueError(f"cluster threshold={threshold!r} is invalid: use a number with 0 < threshold < 1")


def _normalised(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each map min-max normalised to ``[0, 1]`` in float64, and which maps are constant (``(B,)`` bool).

    The saliency stage stores normalised maps already; on them this is the identity (min 0, max 1 exactly),
    and it makes the threshold mean the same thing on anyone else's maps.
    """
    values = t.to(torch.float64)
    lo = values.amin(dim=(1, 2), keepdim=True)
    hi = values.amax(dim=(1, 2), keepdim=True)
    if not bool(torch.isfinite(lo).all() and torch.isfinite(hi).all()):
        raise ValueError("saliency maps hold NaN or inf; the saliency stage must produce finite maps")
    span = hi - lo
    return (values - lo) / torch.where(span > 0, span, torch.ones_like(span)), span[:, 0, 0] <= 0


def _by_threshold(
    maps: torch.Tensor | np.ndarray,
    threshold: float,
    rule: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor],
) -> torch.Tensor:
    """``rule(normalised, constant, threshold)`` over the maps, a chunk of maps at a time (the float64
    copy of a whole shard would not be small)."""
    _check_threshold(threshold)
    t = _map_batch(maps)
    n, h, w = t.shape
    chunk = max(1, _CHUNK_PIXELS // (h * w))
    return torch.cat([rule(*_normalised(t[s : s + chunk]), threshold) for s in range(0, n, chunk)])


def _threshold_mask_rule(values: torch.Tensor, constant: torch.Tensor, threshold: float) -> torch.Tensor:
    return (values >= threshold) & ~constant[:, None, None]


def _threshold_ranks_rule(values: torch.Tensor, constant: torch.Tensor, threshold: float) -> torch.Tensor:
    ranks = 2 - (values >= threshold).to(torch.uint8) - (values >= 0.5 * threshold).to(torch.uint8)
    return torch.where(constant[:, None, None], UNRANKED, ranks).to(torch.uint8)


def threshold_mask(maps: torch.Tensor | np.ndarray, threshold: float = 0.5) -> torch.Tensor:
    """The anchor pixels under the ``threshold`` rule: normalised saliency ``>= threshold``, no clustering.

    A constant map gets an empty mask, as ``top_cluster_mask`` gives it (an all-zero map has no pixel at or
    above a positive threshold anyway; a constant non-zero one would otherwise be all "salient").

    Args:
        maps: ``(B, H, W)`` finite values (torch on any device, or numpy), min-max normalised per map here.
        threshold: in ``(0, 1)``.

    Returns:
        ``(B, H, W)`` bool on the device of ``maps``.

    Raises:
        ValueError: ``threshold`` outside ``(0, 1)``; ``maps`` not a non-empty ``(B, H, W)`` or not finite.
    """
    return _by_threshold(maps, threshold, _threshold_mask_rule)


def threshold_ranks(maps: torch.Tensor | np.ndarray, threshold: float = 0.5) -> torch.Tensor:
    """The ladder's ranks under the ``threshold`` rule: ``(B, H, W)`` uint8.

    0 where the normalised value is ``>= threshold`` (exactly ``threshold_mask``), 1 where it is
    ``>= threshold / 2``, 2 elsewhere: the ``next-cluster`` rungs widen the anchor to the pixels at least
    half as salient. ``UNRANKED`` on constant maps, as ``cluster_ranks`` gives them.
    """
    return _by_threshold(maps, threshold, _threshold_ranks_rule)


def cluster_maps(
    maps: torch.Tensor | np.ndarray,
    method: str = "fcm",
    k: int = 3,
    m: float = 2.0,
    bins: int | None = 1024,
    max_iter: int = 100,
    tol: float = 1e-5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clusters each saliency map on its pixel values and returns its centroids and top-cluster mask.

    Args:
        maps: ``(B, H, W)`` saliency maps (torch on any device, or numpy); must be finite.
        method: ``"fcm"`` (fuzzy c-means, the CutSwap default) or ``"kmeans"``.
        k: clusters per map.
        m: FCM fuzzifier (ignored by k-means).
        bins: histogram bins per map (default 1024; FCM is then exact up to O(bin width^2), k-means up to
            about a bin width); ``None`` clusters the raw pixels (slower; for validation).
        max_iter: iteration cap per map.
        tol: per-map stopping threshold on the largest centroid move (value units).

    Returns:
        ``(centroids, top_mask)``: ``(B, K)`` float64 sorted ascending, and ``(B, H, W)`` bool, both on the
        device of ``maps``.

    Raises:
        ValueError: unknown ``method`` or a parameter out of range.
        ValueError: ``maps`` is not 3-D, is empty or holds NaN/inf.
    """
    _check_map_settings(method, k, m, bins, max_iter, tol)
    t = _map_batch(maps)
    n, h, w = t.shape
    flat = t.reshape(n, h * w)
    chunk = max(1, _CHUNK_PIXELS // (h * w))
    lo, hi = _finite_ranges(flat, chunk)

    def run(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        if method == "fcm":
            return fuzzy_cmeans(values, weights, k=k, m=m, max_iter=max_iter, tol=tol)[0]
        return kmeans(values, weights, k=k, max_iter=max_iter, tol=tol)[0]

    if bins is None:
        centroids = _exact_centroids(flat, run)
    else:
        centroids = _binned_centroids(flat, lo, hi, bins, chunk, run)
    top = torch.cat(
        [top_cluster_mask(t[s : s + chunk], centroids[s : s + chunk]) for s in range(0, n, chunk)]
    )
    return centroids, top


def _check_map_settings(method: str, k: int, m: float, bins: int | None, max_iter: int, tol: float) -> None:
    """``cluster_maps``' settings, checked before any map is touched, in the order the errors are reported
    (method, bins, the settings shared with the low-level API, then the fuzzifier, which only FCM reads)."""
    if method not in CLUSTERING_METHODS:
        raise ValueError(
            f"clustering method={method!r} is unknown: use one of {', '.join(CLUSTERING_METHODS)}"
        )
    if bins is not None and (not isinstance(bins, int) or bins < 2):
        raise ValueError(
            f"clustering bins={bins!r} is invalid: use an integer >= 2 (1024 is plenty) or None for exact"
        )
    _check_common(k, max_iter, tol)
    if method == "fcm" and not (m > 1.0):
        raise ValueError(f"clustering m={m!r} is invalid: the fuzzifier must be > 1 (2 is customary)")


def _map_batch(maps: torch.Tensor | np.ndarray) -> torch.Tensor:
    """``maps`` as a tensor (numpy without a copy where it is contiguous), checked to be a non-empty
    ``(B, H, W)`` batch: the chunking below divides by ``H * W``."""
    t = torch.from_numpy(np.ascontiguousarray(maps)) if isinstance(maps, np.ndarray) else maps
    if t.ndim != 3:
        raise ValueError(f"maps must be (B, H, W), got shape {tuple(t.shape)}")
    n, h, w = t.shape
    if n == 0 or h * w == 0:
        raise ValueError(f"maps must be non-empty, got shape {tuple(t.shape)}")
    return t


def _finite_ranges(flat: torch.Tensor, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-map ``(lo, hi)`` as float64 ``(B,)``, computed once, ``chunk`` maps at a time.

    The range also checks finiteness for free (min and max propagate NaN and show inf), so a bad map is
    reported by index before any clustering work.
    """
    ranges = [flat[s : s + chunk].aminmax(dim=1) for s in range(0, flat.shape[0], chunk)]
    lo = torch.cat([r.min for r in ranges]).to(torch.float64)
    hi = torch.cat([r.max for r in ranges]).to(torch.float64)
    bad = ~(torch.isfinite(lo) & torch.isfinite(hi))
    if bool(bad.any()):
        first = int(torch.nonzero(bad)[0, 0])
        raise ValueError(
            f"saliency map {first} holds NaN or inf; the saliency stage must produce finite maps"
        )
    return lo, hi


_Cluster = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


def _exact_centroids(flat: torch.Tensor, run: _Cluster) -> torch.Tensor:
    """Centroids from the raw pixels (``bins=None``): exact mode holds ``(maps, P, K)`` temporaries per
    iteration, so it iterates chunk by chunk."""
    n, pixels = flat.shape
    exact_chunk = max(1, _EXACT_CHUNK_PIXELS // pixels)
    return torch.cat(
        [run(flat[s : s + exact_chunk].to(torch.float64), None) for s in range(0, n, exact_chunk)]
    )


def _binned_centroids(
    flat: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bins: int, chunk: int, run: _Cluster
) -> torch.Tensor:
    """Centroids from per-map histograms: histograms are small, so bin chunk by chunk, then iterate all
    maps together (fewer, larger steps)."""
    parts = [
        _histogram(flat[s : s + chunk], lo[s : s + chunk], hi[s : s + chunk], bins)
        for s in range(0, flat.shape[0], chunk)
    ]
    return run(torch.cat([p[0] for p in parts]).float(), torch.cat([p[1] for p in parts]))
