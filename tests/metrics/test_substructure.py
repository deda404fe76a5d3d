"""Substructure observables: hand-computed jets, brute-force loops, FastJet, and the stability of the
N-subjettiness axes on pixel images (uniform HCAL towers make exact ties)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from inr_fast.data.stats import zero_suppression_levels
from inr_fast.errors import DataError
from inr_fast.layout import PITCH
from inr_fast.metrics import substructure as ss
from tests.physics_toys import toy_jets

LEVELS = np.array([0.02, 0.006, 0.49])  # ECAL, HCAL, Tracks zero-suppression levels (GeV)
ETA = (np.arange(125) - 62) * PITCH  # pixel centres; the image centre pixel (62, 62) is (0, 0)


@pytest.fixture(scope="module")
def toys():
    images, labels = toy_jets(12, seed=5)
    return images.astype(np.float64), labels


def _pixels(img: np.ndarray, channels, region: str = "window"):
    """(H, W, C) -> list of (w, eta, phi) of the non-zero pixels of the summed channels."""
    w = img[..., list(channels)].sum(-1)
    out = []
    for i, j in zip(*np.nonzero(w), strict=True):
        if region == "cone" and ETA[i] ** 2 + ETA[j] ** 2 >= 0.16:
            continue
        out.append((float(w[i, j]), float(ETA[i]), float(ETA[j])))
    return out


def _dr(a, b) -> float:
    return math.hypot(a[1] - b[1], a[2] - b[2])


# ------------------------------------------------------------------------------------- by hand
def _three_pixel_jet(channel_split: bool = False) -> np.ndarray:
    x = np.zeros((125, 125, 3))
    if channel_split:  # the calo group sums ECAL + HCAL per pixel
        x[62, 62, 0], x[62, 62, 1] = 20.0, 10.0
    else:
        x[62, 62, 0] = 30.0  # A at (0, 0)
    x[62, 66, 0] = 10.0  # B at (0, 4 pitch), in the cone
    x[92, 62, 0] = 5.0  # C at (30 pitch, 0) = 0.522, outside the cone
    return x


def test_three_pixel_jet_by_hand():
    x = _three_pixel_jet()
    x[..., 2] = x[..., 0]  # the same particles as tracks
    out = ss.substructure(x, LEVELS)
    fb, ec = 4 * PITCH, 30 * PITCH
    # cone: A and B
    px, py = 30 + 10 * math.cos(fb), 10 * math.sin(fb)
    phi_j = math.atan2(py, px)
    cone = {
        "pt": math.hypot(px, py),
        "mass": math.sqrt(600 * (1 - math.cos(fb))),
        "girth": (30 * phi_j + 10 * (fb - phi_j)) / 40,
        "ptd": math.sqrt(1000) / 40,
        "lead_frac": 0.75,
        "n_pos": 2,
        "n_zs": 2,
        "e2": 0.75 * 0.25 * fb,
        "e3": 0.0,
        "c2": 0.0,
        "tau1": 10 * fb / (40 * 0.4),  # the geometric median sits on A (30 > 10)
        "tau2": 0.0,
        "tau21": 0.0,
    }
    # window: A, B, C
    e = 40 + 5 * math.cosh(ec)
    px, py, pz = 35 + 10 * math.cos(fb), 10 * math.sin(fb), 5 * math.sinh(ec)
    y_j, phi_j = 0.5 * math.log((e + pz) / (e - pz)), math.atan2(py, px)
    d_bc = math.hypot(ec, fb)
    window = {
        "pt": math.hypot(px, py),
        "mass": math.sqrt(e * e - px * px - py * py - pz * pz),
        "girth": (
            30 * math.hypot(y_j, phi_j) + 10 * math.hypot(y_j, fb - phi_j) + 5 * math.hypot(ec - y_j, phi_j)
        )
        / 45,
        "ptd": math.sqrt(900 + 100 + 25) / 45,
        "lead_frac": 30 / 45,
        "n_pos": 3,
        "n_zs": 3,
        "e2": (300 * fb + 150 * ec + 50 * d_bc) / 45**2,
        "e3": 1500 * fb * ec * d_bc / 45**3,
        # |10 u_B + 5 u_C| = sqrt(125) < 30: the median of all three is A; two axes: {A, B} on A, {C}
        "tau1": (10 * fb + 5 * ec) / (45 * 0.4),
        "tau2": 10 * fb / (45 * 0.4),
    }
    window["c2"] = window["e3"] / window["e2"] ** 2
    window["tau21"] = window["tau2"] / window["tau1"]
    for group in ("calo", "tracks"):
        for region, ref in (("cone", cone), ("window", window)):
            for name, value in ref.items():
                got = out[f"{group}_{region}_{name}"]
                assert got == pytest.approx(value, rel=1e-6, abs=1e-12), (group, region, name)
    # the calo group is ECAL + HCAL per pixel; per-channel counts and thresholds
    split = ss.substructure(_three_pixel_jet(channel_split=True), [12.0, 12.0, 12.0])
    for name in ("pt", "mass", "girth", "e2", "tau1", "tau2"):
        assert split[f"calo_window_{name}"] == pytest.approx(window[name], rel=1e-6, abs=1e-12)
    assert split["calo_cone_n_zs"] == 1  # A: ECAL 20 >= 12; B: 10 < 12
    assert split["ecal_window_n_pos"] == 3 and split["hcal_window_n_pos"] == 1
    assert split["ecal_window_n_zs"] == 1 and split["hcal_window_n_zs"] == 0
    assert split["tracks_window_n_pos"] == 0


def test_signed_pixels_and_counts():
    x = _three_pixel_jet()
    x[62, 58, 0] = -0.5  # a negative pixel in the cone: summed into the linear observables, never counted
    x[62, 58, 1] = 0.3  # ... but its HCAL is positive: the pixel counts once, through HCAL
    x[70, 62, 1] = -0.2  # negative HCAL alone: not counted
    out = ss.substructure(x, [0.1, 0.1, 0.1], groups=("calo",))
    assert out["calo_cone_n_pos"] == 3 and out["calo_cone_n_zs"] == 3
    assert out["ecal_cone_n_pos"] == 2 and out["hcal_cone_n_pos"] == 1
    w = np.array([30.0, 10.0, -0.2, -0.2])  # A, B, (62, 58): -0.5 + 0.3, (70, 62): -0.2
    eta = np.array([0.0, 0.0, 0.0, 8 * PITCH])
    phi = np.array([0.0, 4 * PITCH, -4 * PITCH, 0.0])
    s = w.sum()
    assert out["calo_cone_ptd"] == pytest.approx(math.sqrt((w * w).sum()) / s, rel=1e-12)
    assert out["calo_cone_lead_frac"] == pytest.approx(30 / s, rel=1e-12)
    z = w / s
    e2 = sum(
        z[i] * z[j] * math.hypot(eta[i] - eta[j], phi[i] - phi[j])
        for i, j in itertools.combinations(range(4), 2)
    )
    assert out["calo_cone_e2"] == pytest.approx(e2, rel=1e-10)


def test_hcal_tower_variation_by_hand():
    x = np.zeros((2, 125, 125, 3))
    x[:, 60:65, 60:65, 1] = 0.04  # one uniform tower (the central one)
    x[:, 0:5, 0:5, 1] = 0.1  # one in the corner, outside the cone
    x[1, 61, 63, 1] += 0.01
    out = ss.substructure(x, LEVELS, groups=())
    assert out["hcal_window_tower_var"][0] == 0.0 and out["hcal_cone_tower_var"][0] == 0.0
    d, h = 0.01, 0.04
    cone = math.sqrt(24 / 25 * d * d / (24 * h * h + (h + d) ** 2))
    window = math.sqrt(24 / 25 * d * d / (24 * h * h + (h + d) ** 2 + 25 * 0.1**2))
    assert out["hcal_cone_tower_var"][1] == pytest.approx(cone, rel=1e-12)
    assert out["hcal_window_tower_var"][1] == pytest.approx(window, rel=1e-12)
    assert out["hcal_window_n_pos"].tolist() == [50, 50]


# --------------------------------------------------------------------------- brute-force loops
def _loops_e2_e3(p):
    s = sum(w for w, _, _ in p)
    z = [w / s for w, _, _ in p]
    n = len(p)
    e2 = sum(z[i] * z[j] * _dr(p[i], p[j]) for i, j in itertools.combinations(range(n), 2))
    e3 = sum(
        z[i] * z[j] * z[k] * _dr(p[i], p[j]) * _dr(p[i], p[k]) * _dr(p[j], p[k])
        for i, j, k in itertools.combinations(range(n), 3)
    )
    return e2, e3


def test_energy_correlators_against_loops():
    rng = np.random.default_rng(3)
    x = np.zeros((3, 125, 125, 3))
    for b in range(3):
        rows, cols = rng.integers(40, 85, 14), rng.integers(40, 85, 14)
        x[b, rows, cols, 0] = rng.exponential(5.0, 14) * np.where(rng.uniform(size=14) < 0.2, -0.1, 1.0)
    out = ss.substructure(x, LEVELS, groups=("calo",))
    few = ss.substructure(x, LEVELS, groups=("calo",), c2_pixels=6)
    for b in range(3):
        for region in ("cone", "window"):
            p = _pixels(x[b], (0, 1), region)
            e2, e3 = _loops_e2_e3(p)
            assert out[f"calo_{region}_e2"][b] == pytest.approx(e2, rel=1e-10)
            assert out[f"calo_{region}_e3"][b] == pytest.approx(e3, rel=1e-10)
            assert out[f"calo_{region}_c2"][b] == pytest.approx(e3 / e2**2, rel=1e-10)
            # c2_pixels = 6: e3 and c2 of the 6 largest |w|, normalised by their own sum; e2 stays exact
            top = sorted(p, key=lambda q: -abs(q[0]))[:6]
            e2k, e3k = _loops_e2_e3(top)
            assert few[f"calo_{region}_c2"][b] == pytest.approx(e3k / e2k**2, rel=1e-10)
            assert few[f"calo_{region}_e2"][b] == pytest.approx(e2, rel=1e-10)


def test_e2_image_fft_equals_pairs():
    z = np.random.default_rng(0).standard_normal((2, 9, 7))
    eta = (np.arange(9) - 4) * PITCH
    phi = (np.arange(7) - 3) * PITCH
    e, p = np.meshgrid(eta, phi, indexing="ij")
    for b in range(2):
        pts = list(zip(z[b].ravel(), e.ravel(), p.ravel(), strict=True))
        ref = sum(a[0] * c[0] * _dr(a, c) for a, c in itertools.combinations(pts, 2))
        assert ss.e2_image(z)[b] == pytest.approx(ref, rel=1e-10)


# --------------------------------------------------------------------------------------- FastJet
def _pseudojets(fj, p):
    return [
        fj.PseudoJet(w * math.cos(f), w * math.sin(f), w * math.sinh(e), w * math.cosh(e)) for w, e, f in p
    ]


def test_four_vectors_and_girth_against_fastjet(toys):
    fj = pytest.importorskip("fastjet")
    images = toys[0][:4].copy()
    rng = np.random.default_rng(1)
    signed = images + 0.003 * rng.standard_normal(images.shape)  # a reconstruction-like signed floor
    for x in (images, signed):
        out = ss.substructure(x, LEVELS)
        for b in range(len(x)):
            for group, ch in (("calo", (0, 1)), ("tracks", (2,))):
                for region in ("cone", "window"):
                    p = _pixels(x[b], ch, region)
                    pjs = _pseudojets(fj, p)
                    jet = fj.PseudoJet(0.0, 0.0, 0.0, 0.0)
                    for q in pjs:
                        jet = jet + q
                    key = f"{group}_{region}"
                    assert out[f"{key}_pt"][b] == pytest.approx(jet.pt(), rel=1e-9)
                    # FastJet's m() is -sqrt(-m^2) for m^2 < 0; ours clamps m^2 at 0
                    mass = math.sqrt(max(jet.m2(), 0.0))
                    assert out[f"{key}_mass"][b] == pytest.approx(mass, rel=1e-7, abs=1e-9)
                    # girth: distances in (rapidity, phi) from the jet axis, as PseudoJet.delta_R
                    axis = fj.PseudoJet(0.0, 0.0, 0.0, 0.0)
                    axis.reset_PtYPhiM(1.0, jet.rap(), jet.phi(), 0.0)
                    pos = _pseudojets(fj, [(1.0, e, f) for _, e, f in p])
                    girth = sum(w * axis.delta_R(q) for (w, _, _), q in zip(p, pos, strict=True))
                    assert out[f"{key}_girth"][b] == pytest.approx(girth / sum(w for w, _, _ in p), rel=1e-9)


def _fastjet_axes(fj, p, n, scheme):
    jd = fj.JetDefinition(fj.kt_algorithm, fj.JetDefinition.max_allowable_R, scheme)
    cs = fj.ClusterSequence(_pseudojets(fj, p), jd)
    return np.array([[j.rap(), j.phi_std()] for j in cs.exclusive_jets(n)])


def _tau_loop(p, axes, r0=0.4):
    num = sum(w * min(math.hypot(e - a[0], f - a[1]) for a in axes) for w, e, f in p)
    return num / (r0 * sum(w for w, _, _ in p))


def test_nsubjettiness_minimised_axes_beat_fastjet_exclusive_axes(toys):
    fj = pytest.importorskip("fastjet")
    images = toys[0][:6]
    out = ss.substructure(images, LEVELS)
    for b in range(len(images)):
        for group, ch in (("calo", (0, 1)), ("tracks", (2,))):
            for region in ("cone", "window"):
                p = _pixels(images[b], ch, region)
                w = torch.tensor([[q[0] for q in p]], dtype=torch.float64)
                eta = torch.tensor([q[1] for q in p], dtype=torch.float64)
                phi = torch.tensor([q[2] for q in p], dtype=torch.float64)
                for n in (1, 2):
                    if len(p) <= n:
                        continue
                    for scheme in (fj.WTA_pt_scheme, fj.E_scheme):
                        axes = _fastjet_axes(fj, p, n, scheme)
                        ref = _tau_loop(p, axes)
                        # the tau_N sum for given axes equals the loop
                        got = ss.nsubjettiness(w, eta, phi, torch.tensor(axes[None]))
                        assert float(got[0]) == pytest.approx(ref, rel=1e-12)
                        # the minimised axes give a smaller (or equal) sum; 40 Weiszfeld steps converge
                        # tau1 to ~1e-6 relative
                        assert out[f"{group}_{region}_tau{n}"][b] <= ref * (1 + 1e-5), (group, region, n)


def _geometric_median_cost(w, pts):
    """min over y of sum w_i |pts_i - y| by many Weiszfeld steps from every point and the centroid."""
    from scipy.optimize import minimize

    f = lambda y: float((w * np.hypot(pts[:, 0] - y[0], pts[:, 1] - y[1])).sum())
    starts = list(pts) + [(w[:, None] * pts).sum(0) / w.sum()]
    return min(
        minimize(f, s, method="Nelder-Mead", options={"xatol": 1e-12, "fatol": 1e-14}).fun for s in starts
    )


def test_minimised_axes_reach_the_global_minimum_of_small_jets():
    rng = np.random.default_rng(11)
    x = np.zeros((4, 125, 125, 3))
    for b in range(4):
        rows, cols = rng.integers(50, 75, 5), rng.integers(50, 75, 5)
        x[b, rows, cols, 0] = rng.exponential(5.0, 5) + 0.5
    out = ss.substructure(x, LEVELS, groups=("calo",), regions=("window",), names=("tau1", "tau2"))
    for b in range(4):
        p = _pixels(x[b], (0, 1))
        w = np.array([q[0] for q in p])
        pts = np.array([[q[1], q[2]] for q in p])
        s = 0.4 * w.sum()
        tau1 = _geometric_median_cost(w, pts) / s
        best = np.inf  # every split of the pixels into two clusters, each with its own median
        for r in range(1, len(p)):
            for sub in itertools.combinations(range(len(p)), r):
                rest = [i for i in range(len(p)) if i not in sub]
                sub = list(sub)
                cost = _geometric_median_cost(w[sub], pts[sub]) + _geometric_median_cost(w[rest], pts[rest])
                best = min(best, cost)
        assert out["calo_window_tau1"][b] == pytest.approx(tau1, rel=1e-5)
        assert out["calo_window_tau2"][b] == pytest.approx(best / s, rel=1e-5)


def test_tau21_is_stable_under_tiny_noise_where_wta_kt_axes_are_not(toys):
    """1e-6 GeV on every non-zero pixel: FastJet's exclusive WTA-kT axes jump between the tied pixels of
    uniform HCAL towers; the minimised axes do not."""
    fj = pytest.importorskip("fastjet")
    images = toys[0]
    noisy = images + 1e-6 * np.random.default_rng(2).uniform(-1, 1, images.shape) * (images != 0)
    kw = dict(groups=("calo",))
    a, b = ss.substructure(images, LEVELS, **kw), ss.substructure(noisy, LEVELS, **kw)
    for region in ("cone", "window"):
        for name in ("tau1", "tau2", "tau21", "c2", "e2", "girth"):
            key = f"calo_{region}_{name}"
            assert np.abs(b[key] / a[key] - 1).max() < 1e-4, key
    wta = []
    for x in (images, noisy):
        t = []
        for img in x:
            p = _pixels(img, (0, 1), "cone")
            t.append(
                _tau_loop(p, _fastjet_axes(fj, p, 2, fj.WTA_pt_scheme))
                / _tau_loop(p, _fastjet_axes(fj, p, 1, fj.WTA_pt_scheme))
            )
        wta.append(np.array(t))
    assert np.abs(wta[1] / wta[0] - 1).max() > 1e-2  # the premise: WTA-kT tau21 jumps by per cents


# ----------------------------------------------------------------------------- API and errors
def test_types_shapes_cone_axis_and_errors(toys):
    images = toys[0][:2]
    out_np = ss.substructure(images, LEVELS, groups=("tracks",))
    out_t = ss.substructure(torch.tensor(images), torch.tensor(LEVELS), groups=("tracks",))
    lead = ss.substructure(images[None], LEVELS, groups=("tracks",))
    for k, v in out_np.items():
        assert isinstance(v, np.ndarray) and v.shape == (2,)
        assert isinstance(out_t[k], torch.Tensor)
        np.testing.assert_allclose(out_t[k].numpy(), v, rtol=1e-12)
        assert lead[k].shape == (1, 2)
        np.testing.assert_allclose(lead[k][0], v, rtol=1e-12)
    assert out_np["tracks_cone_n_pos"].dtype == np.int64
    # cone_axis="jet": a jet shifted by 21 pixels in phi gets the same cone observables
    x = _three_pixel_jet()[None]
    shifted = np.roll(x, 21, axis=2)
    a = ss.substructure(x, LEVELS, groups=("calo",), regions=("cone",), cone_axis="jet")
    b = ss.substructure(shifted, LEVELS, groups=("calo",), regions=("cone",), cone_axis="jet")
    c = ss.substructure(shifted, LEVELS, groups=("calo",), regions=("cone",))
    for name in ("pt", "mass", "e2", "tau1"):
        assert b[f"calo_cone_{name}"] == pytest.approx(a[f"calo_cone_{name}"], rel=1e-9)
    assert c["calo_cone_n_pos"][0] == 1  # with the image-centre axis, B falls out of the cone
    levels = zero_suppression_levels(images)
    assert levels.tolist() == [images[..., c][images[..., c] > 0].min() for c in range(3)]
    with pytest.raises(DataError, match="no positive pixel"):
        zero_suppression_levels(np.zeros((1, 125, 125, 3)))
    # chunks compose: the minimum of the chunks' levels is the levels of the whole
    empty = zero_suppression_levels(np.zeros((1, 125, 125, 3)), allow_empty=True)
    assert np.isinf(empty).all()
    chunks = [zero_suppression_levels(c, allow_empty=True) for c in (images[:1], images[1:], images[:0])]
    np.testing.assert_array_equal(np.minimum.reduce(chunks), levels)
    with pytest.raises(DataError, match="one zero-suppression level per channel"):
        ss.substructure(images, [0.1, 0.1])
    with pytest.raises(DataError, match="finite and > 0"):
        ss.substructure(images, [0.1, 0.0, 0.1])
    with pytest.raises(DataError, match="unknown region"):
        ss.substructure(images, LEVELS, regions=("ring",))
    with pytest.raises(DataError, match="NaN"):
        ss.substructure(np.full((1, 125, 125, 3), np.nan), LEVELS)
