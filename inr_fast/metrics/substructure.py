"""Jet substructure observables from jet images, batched (pure functions).

Images are read as lists of pixel particles, with the conventions of :mod:`inr_fast.observables`:
channels last (ECAL, HCAL, Tracks), values are transverse energies E_T = p_T in GeV, each pixel a
massless particle at its pixel centre ``(i - (n - 1) / 2) * pitch`` in (eta, phi) relative to the image
centre (pitch :data:`inr_fast.layout.PITCH` = 0.0174), axis 0 = eta rows, axis 1 = phi columns. For
massless pixels rapidity = pseudorapidity, so distances are ``dR = sqrt(d_eta^2 + d_phi^2)``.

Particle groups (prefix of every key): ``calo`` = one particle per pixel with p_T = ECAL + HCAL;
``tracks`` = one particle per pixel with p_T = Tracks (the two are never added: tracks duplicate what the
calorimeters measure, see :mod:`inr_fast.observables`).

Regions: ``cone`` = pixels whose centre lies at dR < ``cone_r`` (0.4) from the cone axis, which is the
image centre by default (the windows are centred on the jet axis, and a fixed axis gives the original
and its reconstruction the same pixels; ``cone_axis="jet"`` uses each image's own calorimeter
four-momentum direction over the window instead); ``window`` = all pixels.

Observables, per group and region (key ``{group}_{region}_{name}``), with w_i the (signed) pixel p_T,
S = sum_i w_i the scalar sum and z_i = w_i / S:

- ``pt``, ``mass``: of the four-momentum sum of the pixels (as :func:`inr_fast.observables.jet_pt`).
- ``girth`` = sum_i w_i dR(i, J) / S, J the direction (rapidity y_J, phi_J) of that four-momentum sum
  (FastJet's rapidity, with m^2 clamped at 0, and its distance; S the scalar sum, so girth is a mean
  distance).
- ``ptd`` = sqrt(sum_i w_i^2) / S.
- ``lead_frac`` = max_i w_i / S (the leading pixel's share).
- ``n_pos``: pixels with any of the group's channels > 0; ``n_zs``: pixels with any channel c at or
  above its zero-suppression level ``thresholds[c]`` (kept iff value >= level, as in
  :mod:`inr_fast.simulate`). Per-channel counts too: ``ecal_{region}_n_pos``, ``ecal_{region}_n_zs``,
  ``hcal_{region}_n_pos``, ``hcal_{region}_n_zs`` (the Tracks ones are ``tracks_{region}_n_*``).
- ``e2`` (beta = 1) = sum_{i<j} z_i z_j dR_ij over ALL region pixels, exactly, by an FFT
  autocorrelation on the pixel grid (dR_ij depends only on the pixel offset).
- ``e3`` = sum_{i<j<k} z_i z_j z_k dR_ij dR_ik dR_jk and ``c2`` = e3 / e2^2, computed on the
  ``c2_pixels`` (512) region pixels of largest |w| (z normalised by their own sum; e2 in c2 is the
  e2 of the same pixels). The triple sum costs K^3: over the whole window of a reconstruction (15,625
  non-zero pixels) it is out of reach. Exact whenever the region has at most ``c2_pixels`` non-zero
  pixels: on 200 simulated jets the originals have at most 454 in the cone and 865 in the window, so
  for the window of the largest originals e3 and c2 are of their 512 hardest pixels.
- ``tau1``, ``tau2`` (N-subjettiness, beta = 1): tau_N = sum_i w_i min_k dR(i, a_k) / (S * r0),
  r0 = 0.4, and ``tau21`` = tau2 / tau1, with MINIMISED axes (below).

HCAL tower structure: ``hcal_{region}_tower_var`` = ||h - T h||_2 / ||h||_2 over the HCAL pixels of the
towers in the region (the cone: towers whose centre is inside it), T h = every pixel replaced by the
mean of its aligned 5 x 5 tower. Exactly 0 for the data (uniform towers), nan for an empty HCAL.

N-subjettiness axes. Exclusive-kT axes with winner-take-all recombination are not stable on pixel
images: an HCAL tower is 25 pixels of exactly equal p_T, so the kT merging order and WTA's choice of
the harder branch are decided by ties; on simulated jets, 1e-6 GeV of noise on the non-zero pixels
moves FastJet's exclusive WTA-kT tau21 (cone) by 3 % (median) and up to 28 %. Here the axes minimise the
tau_N sum itself (the "minimised axes" of Thaler and Van Tilburg), found by a deterministic search:
1. seeds (N = 1: the p_T-weighted centroid; tau1's problem is convex, a weighted geometric median, so
   its minimum is global). N = 2: the ``n_seed_cells`` (6) hardest 5 x 5 cells (aligned to the HCAL
   towers), each at its p_T-weighted centroid (a continuous function of the pixels, unlike a hardest
   pixel), taken in pairs (15); the tau1 axis with each cell (6); and the hardest cell split in two
   along eta, phi and the diagonals by its weighted spread (4; two subjets inside one tower);
2. Lloyd iterations: assign each pixel to its nearest axis, then move each axis towards the weighted
   geometric median of its pixels by the best of a Weiszfeld step (with the Vardi-Zhang correction, so
   an axis can leave a pixel that is not the median), a Newton step and a jump to the cluster's
   nearest pixel (the median often sits on one), so the sum never increases. Distances within ``tie``
   (1e-5) count as ties: a pixel equidistant from two axes is shared, an axis that close to a pixel
   sits on it; this makes every iteration a continuous function of the pixel values, so exact ties and
   their 1e-6 GeV perturbations take the same path. All seeds get ``n_iter_seed`` (12) Weiszfeld steps,
   the ``n_keep`` (5) best ``n_iter`` (12) full iterations, in float32; the winner ``N_POLISH`` (3) more
   in float64;
3. the axes of the smallest sum are kept; tau_N is then summed in float64 over all region pixels.
The axes are found on the ``axis_pixels`` (1024) region pixels of largest positive p_T (all non-zero
pixels of every original here). Measured: 1e-6 GeV noise moves tau1, tau2, tau21 by < 1e-5 (relative)
on 60 simulated jets (tested: < 1e-4 on toy jets); tau1 equals the global minimum to 1e-15; tau2 is
within 1e-6 of an 11x more expensive search (9 cells, every seed fully refined) on 98 of 100 simulated
cones and 2e-4 above it at worst; it is never above FastJet's exclusive-kT axes (WTA or E-scheme), and
equals the brute-force global minimum (every 2-partition, each cluster's median by Nelder-Mead) on
small jets. Like any local search it can settle in a different local minimum when two nearly equal
minima exchange rank, so tau2 can jump by ~1 % between a jet and a reconstruction with such a
landscape; the stability above holds for perturbations that do not reorder minima.

Cost (one thread, AMD EPYC, shared): ~0.05 s per original jet for everything, ~0.17 s per dense
reconstruction (every pixel non-zero); without tau (``names``) ~0.07 s, without tau and c2 ~0.007 s.
All torch: pass CUDA tensors to run on a GPU.

Signed pixels (reconstructions have small negative values):
- linear in w, so a floor of +-epsilon moves them by O(epsilon) with cancellations: pt, mass (four-vector
  sums, mass = sqrt(max(m^2, 0))), S, girth, e2, e3, c2 (products of signed z), tau_N (the sums; the
  axes and J are continuous in w);
- ``ptd`` squares the pixels (a floor adds sum epsilon^2, tiny); ``lead_frac`` takes the largest signed
  value;
- ``n_pos`` / ``n_zs`` count only values > 0 / >= level: negative pixels never count;
- the N-subjettiness axes are found on max(w, 0) (a geometric median needs non-negative weights); tau_N
  is then summed over the signed w;
- e3 / c2 pick their pixels by |w|.
A ratio whose denominator is 0 is nan (an empty region); tau21 is nan when tau1 = 0 (a one-pixel jet).

Inputs: numpy arrays or torch tensors (..., H, W, C); numpy in -> dict of numpy arrays, torch in ->
dict of torch tensors on the input's device, float64 (counts int64), shape (...). Sums in float64.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch

from inr_fast.arrays import check_image, like, to_torch
from inr_fast.data.grid import physical_centres
from inr_fast.errors import DataError
from inr_fast.layout import HCAL_TOWER, PITCH

CONE_R = 0.4
R0 = 0.4
GROUPS: dict[str, tuple[int, ...]] = {"calo": (0, 1), "tracks": (2,)}
REGIONS = ("cone", "window")
#: observables computed per group and region, in key order
OBSERVABLES = (
    "pt",
    "mass",
    "girth",
    "ptd",
    "lead_frac",
    "n_pos",
    "n_zs",
    "e2",
    "e3",
    "c2",
    "tau1",
    "tau2",
    "tau21",
)
COUNT_OBSERVABLES = ("n_pos", "n_zs")
C2_PIXELS = 512
AXIS_PIXELS = 1024
N_SEED_CELLS = 6
N_ITER_SEED = 12
N_KEEP = 5
N_ITER = 12
N_POLISH = 3  # float64 iterations of the winning float32 axes
TIE = 1e-5  # distances (in dR) closer than this count as ties in the axis search (6e-4 pixel pitch)


# --------------------------------------------------------------------------------------------------
# Zero-suppression levels
# --------------------------------------------------------------------------------------------------
def _centres(h: int, w: int, pitch: float, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre eta (h,) and phi (w,) relative to the image centre
    (:func:`inr_fast.data.grid.physical_centres`)."""
    return (
        torch.from_numpy(physical_centres(h, pitch)).to(device),
        torch.from_numpy(physical_centres(w, pitch)).to(device),
    )


def _levels(thresholds, n_ch: int, device) -> torch.Tensor:
    t = to_torch(thresholds).to(device).reshape(-1)
    if t.numel() != n_ch:
        raise DataError(
            f"thresholds: expected one zero-suppression level per channel ({n_ch}), got {t.numel()}"
        )
    if not (torch.isfinite(t).all() and (t > 0).all()):
        raise DataError(f"thresholds: zero-suppression levels must be finite and > 0, got {t.tolist()}")
    return t


# --------------------------------------------------------------------------------------------------
# Particle-level building blocks (B jets of P particles; coordinates (P,) shared or (B, P))
# --------------------------------------------------------------------------------------------------
def _delta_r(eta, phi, axes: torch.Tensor) -> torch.Tensor:
    """eta, phi (B, P) or (P,), axes (B, N, 2) -> (B, P, N) distances."""
    de = eta[..., :, None] - axes[:, None, :, 0]
    dp = phi[..., :, None] - axes[:, None, :, 1]
    dp = torch.remainder(dp + torch.pi, 2 * torch.pi) - torch.pi
    return torch.sqrt(de * de + dp * dp)


def nsubjettiness(w, eta, phi, axes, r0: float = R0):
    """tau_N = sum_i w_i min_k dR(i, axis_k) / (r0 sum_i w_i) for given axes (beta = 1).

    w (B, P) signed p_T; eta, phi (B, P) or (P,); axes (B, N, 2) as (eta, phi) -> (B,). nan for a zero
    sum. (Any axes: pass :func:`minimised_axes` for the stable definition of this module.)"""
    tw, te, tp, ta = (to_torch(v) for v in (w, eta, phi, axes))
    dmin = _delta_r(te, tp, ta).amin(dim=-1)
    return like((tw * dmin).sum(-1) / (r0 * tw.sum(-1)), w, eta, phi, axes)


def _distances(pts: torch.Tensor, axes: torch.Tensor):
    """pts (B, K, 2), axes (B, S, N, 2) -> d_eta, d_phi, dR, each (B, S, K, N) (pixel minus axis)."""
    de = pts[:, None, :, None, 0] - axes[:, :, None, :, 0]
    dp = pts[:, None, :, None, 1] - axes[:, :, None, :, 1]
    return de, dp, torch.sqrt(de * de + dp * dp)


def _cluster_sums(wa: torch.Tensor, pts: torch.Tensor, axes: torch.Tensor) -> torch.Tensor:
    """sum_i wa_ik |x_i - axis_k|: wa (B, S, K, N), axes (B, S, N, 2) -> (B, S, N)."""
    return (wa * _distances(pts, axes)[2]).sum(2)


def _weiszfeld_lloyd(a, pts, axes, n_iter: int, tie: float = TIE, full: bool = True):
    """Lloyd iterations of the N-subjettiness sum with a safeguarded Newton step per axis.

    a (B, K) >= 0, pts (B, K, 2), axes (B, S, N, 2) -> refined axes (B, S, N, 2), objective (B, S) =
    sum_i a_i min_k dR(i, axis_k). Each iteration assigns the pixels to their nearest axis and moves
    each axis towards the weighted geometric median of its pixels: of the Weiszfeld step (with the
    Vardi-Zhang correction when the axis sits on a pixel, so it can leave a pixel that is not the median
    and lands on one that is), the Newton step on the 2 x 2 Hessian of the distance sum, and the
    cluster's pixel nearest to the axis, the one with the smallest sum is taken, so the sum never
    increases; convergence is quadratic away from pixels and immediate onto a pixel median.
    Ties are made continuous with the tolerance ``tie`` (in dR): a pixel within ``tie`` of the nearest
    distance to several axes is shared between them with weights max(0, tie - (d_k - d_min))
    (normalised), and a pixel within ``tie`` of an axis counts as sitting on it. Exact ties, common on
    images with uniform HCAL towers, would otherwise send the iteration down a different branch than a
    1e-6 GeV perturbation of the same image. ``full=False``: the Weiszfeld step only (a quarter of the
    cost; for screening seeds)."""
    for _ in range(n_iter):
        de, dp, d = _distances(pts, axes)
        share = torch.clamp(tie - (d - d.amin(-1, keepdim=True)), min=0.0)
        wa = a[:, None, :, None] * (share / share.sum(-1, keepdim=True))  # (B, S, K, N)
        on = d < tie
        won = wa * on
        eta_k = won.sum(2)  # (B, S, N): weight sitting on the axis
        dsafe = torch.where(on, torch.ones_like(d), d)
        inv = torch.where(on, torch.zeros_like(d), wa / dsafe)
        den = inv.sum(2)
        r_e, r_p = (inv * de).sum(2), (inv * dp).sum(2)  # R~: the pull of the pixels not on the axis
        # Weiszfeld / Vardi-Zhang candidate
        safe_den = torch.where(den > 0, den, torch.ones_like(den))
        t_w = axes + torch.stack([r_e, r_p], -1) / safe_den[..., None]  # T~
        r = torch.sqrt(r_e * r_e + r_p * r_p)
        lam = torch.clamp(eta_k / torch.where(r > 0, r, torch.ones_like(r)), max=1.0)
        lam = torch.where(r > 0, lam, torch.ones_like(lam))
        safe_eta = torch.where(eta_k > 0, eta_k, torch.ones_like(eta_k))
        x_on = (
            torch.stack(
                [(won * pts[:, None, :, None, 0]).sum(2), (won * pts[:, None, :, None, 1]).sum(2)], -1
            )
            / safe_eta[..., None]
        )
        base = torch.where((eta_k > 0)[..., None], x_on, axes)
        y_w = torch.where((den > 0)[..., None], base + (1 - lam)[..., None] * (t_w - base), base)
        if not full:
            axes = y_w
            continue
        # Newton candidate: H = sum inv (I - u u^T), gradient = -R~
        ue, up = de / dsafe, dp / dsafe
        h_ee = den - (inv * ue * ue).sum(2)
        h_pp = den - (inv * up * up).sum(2)
        h_ep = -(inv * ue * up).sum(2)
        det = h_ee * h_pp - h_ep * h_ep
        ok = (det > 1e-12 * den * den) & (eta_k == 0)
        safe_det = torch.where(ok, det, torch.ones_like(det))
        y_n = axes + torch.stack([h_pp * r_e - h_ep * r_p, h_ee * r_p - h_ep * r_e], -1) / safe_det[..., None]
        f_w, f_n = _cluster_sums(wa, pts, y_w), _cluster_sums(wa, pts, y_n)
        better = ok & (f_n < f_w)
        y, f = torch.where(better[..., None], y_n, y_w), torch.where(better, f_n, f_w)
        # the cluster's pixel nearest to the axis: the median sits on a pixel more often than not, where
        # both steps above only creep towards it
        near = torch.where(wa > 0, d, torch.full_like(d, torch.inf)).argmin(2)  # (B, S, N)
        y_p = torch.gather(
            pts[:, None].expand(-1, near.shape[1], -1, -1), 2, near[..., None].expand(-1, -1, -1, 2)
        )
        f_p = _cluster_sums(wa, pts, y_p)
        axes = torch.where((f_p < f)[..., None], y_p, y)
    d = _distances(pts, axes)[2]
    return axes, (a[:, None, :] * d.amin(-1)).sum(-1)


def _cell_ids(eta: torch.Tensor, phi: torch.Tensor, cell: float) -> tuple[torch.Tensor, int]:
    """Cells of size ``cell``, aligned so that for images they are the HCAL towers (the centre pixel sits
    in the middle of a cell): eta, phi (B, P) -> ids (B, P), number of cells."""
    ie = torch.floor(eta / cell + 0.5).to(torch.int64)
    ip = torch.floor(phi / cell + 0.5).to(torch.int64)
    ie = ie - ie.amin()
    ip = ip - ip.amin()
    n_p = int(ip.amax()) + 1
    return ie * n_p + ip, (int(ie.amax()) + 1) * n_p


def minimised_axes(
    a,
    eta,
    phi,
    n_axes: int,
    *,
    cell: float = HCAL_TOWER * PITCH,
    n_seed_cells: int = N_SEED_CELLS,
    n_iter_seed: int = N_ITER_SEED,
    n_keep: int = N_KEEP,
    n_iter: int = N_ITER,
    tie: float = TIE,
    tau1_axis=None,
    dtype: torch.dtype = torch.float32,
):
    """N-subjettiness axes (beta = 1) that minimise sum_i a_i min_k dR(i, axis_k) (module docstring).

    a (B, P) weights (negative values are clipped to 0); eta, phi (P,) shared or (B, P) per-jet
    coordinates -> axes (B, n_axes, 2) as (eta, phi), float64. Seeds (N = 1: the jet's weighted
    centroid): the N-subsets of the ``n_seed_cells`` hardest cells of size ``cell`` (default: the HCAL
    towers), each at its weighted centroid; the tau1 axis (``tau1_axis`` (B, 1, 2) if already known)
    with N - 1 of them; for N = 2, four splits of the hardest cell. All get ``n_iter_seed`` Weiszfeld
    iterations, the best ``n_keep`` ``n_iter`` full ones (:func:`_weiszfeld_lloyd`), in ``dtype``; the
    winner :data:`N_POLISH` more in float64. The smallest sum wins. Distances are plain
    sqrt(d_eta^2 + d_phi^2) without wrapping phi (image-relative coordinates)."""
    ta, te, tp = to_torch(a), to_torch(eta), to_torch(phi)
    if ta.ndim != 2 or te.shape != tp.shape or te.shape[-1] != ta.shape[-1] or te.ndim not in (1, 2):
        raise DataError(
            f"minimised_axes: expected weights (B, P) and coordinates (P,) or (B, P), got "
            f"{tuple(ta.shape)}, {tuple(te.shape)}, {tuple(tp.shape)}"
        )
    if n_axes < 1:
        raise DataError(f"minimised_axes: n_axes must be >= 1, got {n_axes}")
    a64 = torch.clamp(ta, min=0.0)
    b = ta.shape[0]
    pts64 = torch.stack([te.expand_as(a64), tp.expand_as(a64)], dim=-1)
    ta = a64.to(dtype)
    te, tp = te.to(dtype).expand_as(ta), tp.to(dtype).expand_as(ta)
    pts = torch.stack([te, tp], dim=-1)  # (B, P, 2)
    tot = ta.sum(-1, keepdim=True)
    centroid = (ta[..., None] * pts).sum(1) / torch.where(tot > 0, tot, torch.ones_like(tot))  # (B, 2)
    seeds = centroid[:, None, None, :]  # (B, 1, 1, 2)
    if n_axes == 1:  # a convex problem: one seed suffices
        axes1 = seeds
    else:
        if tau1_axis is None:
            axes1, _ = _weiszfeld_lloyd(ta, pts, seeds, n_iter_seed + n_iter, tie)  # the tau1 axis
        else:
            axes1 = to_torch(tau1_axis).to(dtype).reshape(b, 1, 1, 2)
        cid, n_cells = _cell_ids(te, tp, cell)
        cw = torch.zeros(b, n_cells, dtype=ta.dtype, device=ta.device).scatter_add_(1, cid, ta)
        ce = torch.zeros_like(cw).scatter_add_(1, cid, ta * te)
        cp = torch.zeros_like(cw).scatter_add_(1, cid, ta * tp)
        m = min(max(n_seed_cells, n_axes), n_cells)
        top = torch.topk(cw, m, dim=1).indices  # (B, M)
        w_top = torch.gather(cw, 1, top)
        safe_w = torch.where(w_top > 0, w_top, torch.ones_like(w_top))
        pos = torch.stack([torch.gather(ce, 1, top), torch.gather(cp, 1, top)], -1) / safe_w[..., None]
        # an empty cell sits at the jet's centroid (it only duplicates another seed then)
        pos = torch.where((w_top > 0)[..., None], pos, centroid[:, None, :])
        if pos.shape[1] < n_axes:  # fewer cells than axes: repeat the centroid
            pos = torch.cat([pos, centroid[:, None, :].expand(b, n_axes - pos.shape[1], 2)], 1)
        combos = torch.tensor(list(itertools.combinations(range(pos.shape[1]), n_axes)), device=ta.device)
        families = [pos[:, combos]]  # (B, S, N, 2): N-subsets of the hard cells
        # the tau1 axis with N-1 of the hard cells
        rest = torch.tensor(list(itertools.combinations(range(pos.shape[1]), n_axes - 1)), device=ta.device)
        families.append(torch.cat([axes1.expand(b, rest.shape[0], 1, 2), pos[:, rest]], 2))
        if n_axes == 2:
            # splits of the hardest cell (two subjets inside one tower): its centroid +- its weighted
            # spread along eta, phi and the diagonals
            in_top = (cid == top[:, :1]).to(ta.dtype) * ta
            c0 = pos[:, 0]  # (B, 2)
            var = (in_top[..., None] * (pts - c0[:, None, :]) ** 2).sum(1) / safe_w[:, :1]
            sd = torch.sqrt(var) + tie  # (B, 2), never 0
            dirs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7071, 0.7071], [0.7071, -0.7071]], dtype=dtype)
            off = dirs.to(ta.device)[None] * sd[:, None, :]  # (B, 4, 2)
            families.append(torch.stack([c0[:, None] + off, c0[:, None] - off], 2))
        seeds = torch.cat(families, 1)
    axes, obj = _weiszfeld_lloyd(ta, pts, seeds, n_iter_seed, tie, full=False)
    if axes.shape[1] > n_keep:
        keep = torch.topk(-obj, n_keep, dim=1).indices
        axes = torch.gather(axes, 1, keep[:, :, None, None].expand(-1, -1, n_axes, 2))
    axes, obj = _weiszfeld_lloyd(ta, pts, axes, n_iter, tie)
    best = obj.argmin(1)
    out = axes[torch.arange(b, device=ta.device), best].to(torch.float64)
    if dtype != torch.float64:  # polish the winner in float64
        out = _weiszfeld_lloyd(a64, pts64, out[:, None], N_POLISH, tie)[0][:, 0]
    return like(out, a, eta, phi)


def energy_correlators(w, eta, phi):
    """e2 and e3 (beta = 1) of B jets of P particles, all pairs and triples, normalised by the jets' own
    scalar sums: w (B, P) signed; eta, phi (B, P) or (P,) -> (e2, e3), each (B,).

    e2 = sum_{i<j} z_i z_j dR_ij, e3 = sum_{i<j<k} z_i z_j z_k dR_ij dR_ik dR_jk, z_i = w_i / sum w.
    Cost P^3 (e3 = 1/6 sum_ij z_i z_j dR_ij (D Z D)_ij): meant for P up to ~1,000."""
    tw, te, tp = (to_torch(v) for v in (w, eta, phi))
    z = tw / tw.sum(-1, keepdim=True)
    e_ = te if te.ndim == 2 else te.expand_as(tw)
    p_ = tp if tp.ndim == 2 else tp.expand_as(tw)
    dd = torch.sqrt((e_[:, :, None] - e_[:, None, :]) ** 2 + (p_[:, :, None] - p_[:, None, :]) ** 2)
    a = z[:, :, None] * z[:, None, :] * dd  # (B, P, P)
    e2 = a.sum((-2, -1)) / 2
    dzd = (dd * z[:, None, :]) @ dd
    e3 = (a * dzd).sum((-2, -1)) / 6
    return like(e2, w, eta, phi), like(e3, w, eta, phi)


def e2_image(z, pitch: float = PITCH):
    """e2 (beta = 1) = sum_{i<j} z_i z_j dR_ij over ALL pixels of images z (B, h, w), exactly, through the
    FFT autocorrelation of z (dR depends only on the pixel offset): (B, h, w) -> (B,). z is used as given
    (normalise it by the jet's sum first)."""
    tz = to_torch(z)
    h, w = tz.shape[-2:]
    lh, lw = 2 * h, 2 * w  # >= 2 n - 1: no wrap-around
    f = torch.fft.rfft2(tz, s=(lh, lw))
    auto = torch.fft.irfft2(f.real**2 + f.imag**2, s=(lh, lw))  # (B, lh, lw)
    oh = torch.arange(lh, device=tz.device, dtype=torch.float64)
    ow = torch.arange(lw, device=tz.device, dtype=torch.float64)
    oh = torch.where(oh < lh / 2, oh, oh - lh)
    ow = torch.where(ow < lw / 2, ow, ow - lw)
    kernel = pitch * torch.sqrt(oh[:, None] ** 2 + ow[None, :] ** 2)
    return like((auto * kernel).sum((-2, -1)) / 2, z)


# --------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------
def _four_sums(w: torch.Tensor, eta: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """w (B, P), eta/phi (P,) -> (B, 4) = (E, px, py, pz)."""
    return torch.stack(
        [
            (w * torch.cosh(eta)).sum(-1),
            (w * torch.cos(phi)).sum(-1),
            (w * torch.sin(phi)).sum(-1),
            (w * torch.sinh(eta)).sum(-1),
        ],
        -1,
    )


def _direction(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 4) four-momenta -> rapidity, phi, as FastJet computes them: y = -+ 0.5 log((pT^2 + max(m^2, 0))
    / (E + |pz|)^2) (sign of pz), which equals 0.5 log((E + pz) / (E - pz)) for m^2 >= 0 and stays finite
    for the tachyonic sums (m^2 < 0) that signed pixels can give."""
    e, px, py, pz = p.unbind(-1)
    kt2 = px * px + py * py
    m2 = torch.clamp(e * e - kt2 - pz * pz, min=0.0)
    y = 0.5 * torch.log((kt2 + m2) / (e + pz.abs()) ** 2)
    return torch.where(pz > 0, -y, y), torch.atan2(py, px)


def cone_mask(x, cone_r: float = CONE_R, cone_axis: str = "centre", pitch: float = PITCH):
    """Pixels in the jet cone, dR(pixel centre, axis) < cone_r: (B, H, W, C) -> (B, H, W) bool.

    ``cone_axis``: "centre" (the image centre, the same pixels for every image) or "jet" (the direction of
    each image's calorimeter four-momentum over the whole window)."""
    t = to_torch(x)
    check_image(t)
    b, h, w = t.shape[0], t.shape[-3], t.shape[-2]
    eta, phi = _centres(h, w, pitch, t.device)
    if cone_axis == "centre":
        r2 = eta[:, None] ** 2 + phi[None, :] ** 2
        mask = (r2 < cone_r**2).expand(b, h, w)
    elif cone_axis == "jet":
        e_ = eta[:, None].expand(h, w).reshape(-1)
        p_ = phi[None, :].expand(h, w).reshape(-1)
        y, ph = _direction(_four_sums(t[..., :2].sum(-1).reshape(b, -1), e_, p_))
        dp = torch.remainder(phi[None, None, :] - ph[:, None, None] + torch.pi, 2 * torch.pi) - torch.pi
        mask = (eta[None, :, None] - y[:, None, None]) ** 2 + dp**2 < cone_r**2
    else:
        raise DataError(f"cone_axis must be 'centre' or 'jet', got {cone_axis!r}")
    return like(mask, x)


def hcal_tower_variation(h, region=None, tower: int = HCAL_TOWER):
    """Within-tower variation of HCAL images, ||h - T h||_2 / ||h||_2 with T h the mean of each aligned
    ``tower`` x ``tower`` block: h (B, H, W), optional region (B, H, W) bool (a tower counts when its
    centre pixel is in the region) -> (B,). 0 for uniform towers; nan for an empty HCAL."""
    th = to_torch(h)
    b, hh, ww = th.shape
    if hh % tower or ww % tower:
        raise DataError(
            f"hcal_tower_variation: a {hh} x {ww} image is not a whole number of {tower} x {tower} towers"
        )
    blocks = th.reshape(b, hh // tower, tower, ww // tower, tower)
    mean = blocks.mean(dim=(2, 4), keepdim=True)
    res2 = ((blocks - mean) ** 2).sum(dim=(2, 4))  # (B, nh, nw)
    uniform = blocks.amax(dim=(2, 4)) == blocks.amin(dim=(2, 4))
    res2 = torch.where(uniform, torch.zeros_like(res2), res2)  # exactly 0, whatever the rounding of the mean
    tot2 = (blocks**2).sum(dim=(2, 4))
    if region is not None:
        centre = to_torch(region)[:, tower // 2 :: tower, tower // 2 :: tower] > 0
        res2, tot2 = res2 * centre, tot2 * centre
    return like(torch.sqrt(res2.sum((-2, -1)) / tot2.sum((-2, -1))), h)


def _group_region(
    pix: torch.Tensor,
    chans: torch.Tensor,
    levels: torch.Tensor,
    mask: torch.Tensor,
    eta: torch.Tensor,
    phi: torch.Tensor,
    grid: tuple[int, int],
    *,
    r0: float,
    c2_pixels: int,
    axis_pixels: int,
    axes_kw: dict,
    pitch: float,
    names: Sequence[str] = OBSERVABLES,
) -> dict[str, torch.Tensor]:
    """One group in one region. pix (B, P) signed p_T per pixel (the group's channels summed), chans
    (B, P, c) the group's channels, levels (c,), mask (B, P) region membership, eta/phi (P,); the P
    pixels are a row-major (h, w) = ``grid`` block of the image -> observables, each (B,)."""
    b = pix.shape[0]
    w = torch.where(mask, pix, torch.zeros_like(pix))
    out: dict[str, torch.Tensor] = {}
    p4 = _four_sums(w, eta, phi)
    e, px, py, pz = p4.unbind(-1)
    out["pt"] = torch.sqrt(px * px + py * py)
    out["mass"] = torch.sqrt(torch.clamp(e * e - px * px - py * py - pz * pz, min=0.0))
    s = w.sum(-1)
    y, ph = _direction(p4)
    dp = torch.remainder(phi[None, :] - ph[:, None] + torch.pi, 2 * torch.pi) - torch.pi
    dr_j = torch.sqrt((eta[None, :] - y[:, None]) ** 2 + dp**2)
    out["girth"] = (w * dr_j).sum(-1) / s
    out["ptd"] = torch.sqrt((w * w).sum(-1)) / s
    out["lead_frac"] = torch.where(mask, pix, torch.full_like(pix, -torch.inf)).amax(-1) / s
    m3 = mask[..., None]
    out["n_pos"] = ((chans > 0) & m3).any(-1).sum(-1)
    out["n_zs"] = ((chans >= levels) & m3).any(-1).sum(-1)
    # e2: exact over all region pixels, FFT on the block
    if "e2" in names:
        out["e2"] = e2_image((w / s[:, None]).reshape(b, *grid), pitch)
    if {"e3", "c2"} & set(names):
        out.update(_c2(w, eta, phi, c2_pixels))
    if {"tau1", "tau2", "tau21"} & set(names):
        out.update(_taus(w, s, eta, phi, r0, axis_pixels, axes_kw))
    return {k: v for k, v in out.items() if k in names}


def _c2(w, eta, phi, c2_pixels: int) -> dict[str, torch.Tensor]:
    """e3 and c2 on the c2_pixels largest |w| (module docstring)."""
    n_nz = max(int((w != 0).sum(-1).amax()), 1)  # no need to carry more zeros than the busiest jet
    idx = torch.topk(w.abs(), min(c2_pixels, n_nz), dim=-1).indices
    e2k, e3k = energy_correlators(torch.gather(w, 1, idx), eta[idx], phi[idx])
    return {"e3": e3k, "c2": e3k / (e2k * e2k)}


def _taus(w, s, eta, phi, r0: float, axis_pixels: int, axes_kw: dict) -> dict[str, torch.Tensor]:
    """tau1, tau2, tau21: axes on the axis_pixels largest positive w, sums over all signed w."""
    pos = torch.clamp(w, min=0.0)
    n_pos = max(int((pos > 0).sum(-1).amax()), 1)
    ida = torch.topk(pos, min(axis_pixels, n_pos), dim=-1).indices
    taus, axes = [], None
    for n in (1, 2):
        axes = minimised_axes(torch.gather(pos, 1, ida), eta[ida], phi[ida], n, tau1_axis=axes, **axes_kw)
        taus.append((w * _delta_r(eta, phi, axes).amin(-1)).sum(-1) / (r0 * s))
    return {"tau1": taus[0], "tau2": taus[1], "tau21": taus[1] / taus[0]}


def substructure(
    x,
    thresholds,
    *,
    cone_r: float = CONE_R,
    cone_axis: str = "centre",
    r0: float = R0,
    groups: Sequence[str] = ("calo", "tracks"),
    regions: Sequence[str] = REGIONS,
    names: Sequence[str] = OBSERVABLES,
    c2_pixels: int = C2_PIXELS,
    axis_pixels: int = AXIS_PIXELS,
    n_seed_cells: int = N_SEED_CELLS,
    n_iter: int = N_ITER,
    pitch: float = PITCH,
    chunk: int = 32,
) -> dict:
    """Every observable of the module docstring for a batch of images.

    x (..., H, W, 3) GeV; ``thresholds`` (3,) per-channel zero-suppression levels in GeV (> 0), e.g.
    :func:`zero_suppression_levels` of the ORIGINAL images (use the original's levels for its
    reconstruction too) -> dict ``{group}_{region}_{name}`` (``names``, default all of
    :data:`OBSERVABLES`; the expensive ones are tau1/tau2/tau21 and e3/c2), plus
    ``{ecal,hcal}_{region}_n_{pos,zs}`` and ``hcal_{region}_tower_var``, each of shape (...): numpy in ->
    numpy, torch in -> torch (float64; counts int64). ``chunk`` images are processed at a time."""
    t = to_torch(x)
    check_image(t)
    if t.shape[-1] != 3:
        raise DataError(f"substructure: expected 3 channels (ECAL, HCAL, Tracks), got {t.shape[-1]}")
    for g in groups:
        if g not in GROUPS:
            raise DataError(f"substructure: unknown group {g!r}; known: {', '.join(GROUPS)}")
    for r in regions:
        if r not in REGIONS:
            raise DataError(f"substructure: unknown region {r!r}; known: {', '.join(REGIONS)}")
    for n in names:
        if n not in OBSERVABLES:
            raise DataError(f"substructure: unknown observable {n!r}; known: {', '.join(OBSERVABLES)}")
    if not torch.isfinite(t).all():
        raise DataError("substructure: the images contain NaN or Inf")
    lead_shape, (h, w, c) = t.shape[:-3], t.shape[-3:]
    t = t.reshape(-1, h, w, c)
    levels = _levels(thresholds, c, t.device)
    eta1, phi1 = _centres(h, w, pitch, t.device)
    eta = eta1[:, None].expand(h, w).reshape(-1)
    phi = phi1[None, :].expand(h, w).reshape(-1)
    axes_kw = dict(cell=HCAL_TOWER * pitch, n_seed_cells=n_seed_cells, n_iter=n_iter)
    parts: list[dict[str, torch.Tensor]] = []
    for i in range(0, t.shape[0], chunk):
        xc = t[i : i + chunk]
        bc = xc.shape[0]
        flat = xc.reshape(bc, h * w, c)
        out: dict[str, torch.Tensor] = {}
        for region in regions:
            if region == "cone":
                m = cone_mask(xc, cone_r, cone_axis, pitch)
            else:
                m = torch.ones(bc, h, w, dtype=torch.bool, device=t.device)
            # the smallest block of rows and columns that holds the region of every jet of the chunk
            rows = torch.nonzero(m.any(0).any(1)).flatten()
            cols = torch.nonzero(m.any(0).any(0)).flatten()
            if rows.numel() == 0:
                rows = cols = torch.zeros(1, dtype=torch.int64, device=t.device)
            r_ix = torch.arange(int(rows[0]), int(rows[-1]) + 1, device=t.device)
            c_ix = torch.arange(int(cols[0]), int(cols[-1]) + 1, device=t.device)
            blk = (r_ix[:, None] * w + c_ix[None, :]).reshape(-1)
            m_blk = m.reshape(bc, -1)[:, blk]
            for g in groups:
                ch = list(GROUPS[g])
                chans = flat[:, blk][:, :, ch]
                res = _group_region(
                    chans.sum(-1),
                    chans,
                    levels[ch],
                    m_blk,
                    eta[blk],
                    phi[blk],
                    (r_ix.numel(), c_ix.numel()),
                    r0=r0,
                    c2_pixels=c2_pixels,
                    axis_pixels=axis_pixels,
                    axes_kw=axes_kw,
                    pitch=pitch,
                    names=names,
                )
                for name in OBSERVABLES:
                    if name in res:
                        out[f"{g}_{region}_{name}"] = res[name]
            m_flat = m.reshape(bc, -1)
            for j, cname in enumerate(("ecal", "hcal")):
                v = flat[:, :, j]
                out[f"{cname}_{region}_n_pos"] = ((v > 0) & m_flat).sum(-1)
                out[f"{cname}_{region}_n_zs"] = ((v >= levels[j]) & m_flat).sum(-1)
            out[f"hcal_{region}_tower_var"] = hcal_tower_variation(xc[..., 1], m)
        parts.append(out)
    result = {k: torch.cat([p[k] for p in parts]).reshape(lead_shape) for k in parts[0]}
    if isinstance(x, torch.Tensor):
        return result
    return {k: v.detach().cpu().numpy() for k, v in result.items()}


def relative_error(value_hat, value):
    """Signed relative error (value_hat - value) / value, IEEE semantics (nan for 0/0, +-inf for x/0)."""
    a, b = to_torch(value_hat), to_torch(value)
    return like((a - b) / b, value_hat, value)
