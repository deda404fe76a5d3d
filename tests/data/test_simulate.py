"""inr_fast.data.simulate: the calorimeter against hand-computed deposits, the generator's output against
physics (jet pT from the image, track pT, HCAL towers, quark/gluon multiplicities), the file layout,
determinism and errors."""

from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest

from inr_fast.data.simulate import (
    CalorimeterConfig,
    SimulateConfig,
    calorimeter_image,
    match_label,
    simulate,
    simulate_jets,
    spread_deposits,
    wrap_phi,
)
from inr_fast.errors import ConfigError, OutputExistsError
from inr_fast.layout import GLUON, HCAL_TOWER, IMAGE_SIZE, PITCH, QUARK

pytest.importorskip("pythia8mc")
pytest.importorskip("fastjet")

from inr_fast import __version__, cli

CENTRES = (np.arange(IMAGE_SIZE) + 0.5 - IMAGE_SIZE / 2) * PITCH  # Δeta (rows) and Δphi (columns)
EXACT = CalorimeterConfig(  # no smearing, noise, thresholds or losses: deposits are exactly predictable
    ecal_stochastic=0.0,
    ecal_constant=0.0,
    ecal_noise=0.0,
    ecal_threshold=0.0,
    hadron_ecal_share=0.0,
    hcal_stochastic=0.0,
    hcal_constant=0.0,
    hcal_noise=0.0,
    hcal_threshold=0.0,
    track_efficiency=1.0,
    track_resolution=0.0,
)


def image_kinematics(image: np.ndarray) -> tuple[float, float]:
    """(pT, mass) of a (125, 125) image, pixels as massless four-vectors of pT = value at (Δη, Δφ)."""
    eta, phi = CENTRES[:, None], CENTRES[None, :]
    px, py = (image * np.cos(phi)).sum(), (image * np.sin(phi)).sum()
    pz, e = (image * np.sinh(eta)).sum(), (image * np.cosh(eta)).sum()
    return float(math.hypot(px, py)), float(math.sqrt(max(e * e - px * px - py * py - pz * pz, 0.0)))


def particles(**columns) -> dict[str, np.ndarray]:
    """Final-state arrays from per-particle lists: pid, charge, pt, eta, phi (e from massless kinematics)."""
    out = {k: np.asarray(v, dtype=np.int64 if k == "pid" else np.float64) for k, v in columns.items()}
    out["e"] = out["pt"] * np.cosh(out["eta"])
    return out


# ------------------------------------------------------------------------------- pure calorimeter maths
def test_wrap_phi_values():
    np.testing.assert_allclose(
        wrap_phi(np.array([0.0, 3.5, -3.5, 2 * np.pi + 0.1])), [0, 3.5 - 2 * np.pi, 2 * np.pi - 3.5, 0.1]
    )


def test_spread_deposits_conserves_energy_and_centroid():
    u, v = np.array([62.3, 40.8]), np.array([70.6, 20.1])
    grid = spread_deposits(u, v, np.array([10.0, 4.0]), np.array([0.5, 1.0]))
    assert grid.sum() == pytest.approx(14.0, rel=1e-9)
    first = grid[55:70, 63:78]  # the first deposit alone (the second is far away)
    rows, cols = np.mgrid[55:70, 63:78] + 0.5
    assert (first * rows).sum() / first.sum() == pytest.approx(62.3, abs=0.02)
    assert (first * cols).sum() / first.sum() == pytest.approx(70.6, abs=0.02)
    assert grid[62, 70] > 0.5 * 10.0 * 0.45  # sigma 0.5 crystal: most energy in the impact crystal
    assert np.count_nonzero(grid) == 50  # two 5x5 footprints


def test_spread_deposits_drops_energy_outside_the_window():
    grid = spread_deposits(np.array([0.5]), np.array([62.5]), np.array([1.0]), np.array([1.0]))
    assert 0.5 < grid.sum() < 0.85  # about a third of a centred Gaussian profile leaves through the edge


def test_calorimeter_photon_pion_muon_neutrino_by_hand():
    jet_eta, jet_phi = 0.5, -3.1
    p = particles(
        pid=[22, 211, 13, 12, 22],
        charge=[0, 1, -1, 0, 0],
        pt=[30.0, 20.0, 5.0, 50.0, 7.0],
        eta=[0.52, 0.45, 0.60, 0.50, 2.0],  # the last photon is far outside the window
        phi=[3.14, -3.05, -3.0, -3.1, -3.1],  # phi wraps across ±π around the jet at -3.1
    )
    img = calorimeter_image(p, jet_eta, jet_phi, EXACT, np.random.default_rng(0))
    assert img.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and img.dtype == np.float32
    # ECAL: the photon's energy, stored as transverse energy at the crystal centres (≈ its pT).
    ecal_e = (img[..., 0] * np.cosh(jet_eta + CENTRES)[:, None]).sum()
    assert ecal_e == pytest.approx(30.0 * math.cosh(0.52), rel=1e-5)
    assert img[..., 0].sum() == pytest.approx(30.0, rel=0.01)
    row, col = np.unravel_index(np.argmax(img[..., 0]), img[..., 0].shape)
    assert (row, col) == (int(0.02 / PITCH + 62.5), int(wrap_phi(np.array(3.14 + 3.1)) / PITCH + 62.5))
    # HCAL: the pion's whole energy in one aligned 5x5 tower, tower ET / 25 on each crystal.
    r, c = int(-0.05 / PITCH + 62.5), int(0.05 / PITCH + 62.5)
    tr, tc = r // HCAL_TOWER * HCAL_TOWER, c // HCAL_TOWER * HCAL_TOWER
    tower_eta = jet_eta + CENTRES[tr + HCAL_TOWER // 2]
    expected = 20.0 * math.cosh(0.45) / math.cosh(tower_eta) / HCAL_TOWER**2
    np.testing.assert_allclose(img[tr : tr + 5, tc : tc + 5, 1], expected, rtol=1e-5)
    assert np.count_nonzero(img[..., 1]) == 25
    # Tracks: pion and muon pT in their pixels; the muon leaves nothing in the calorimeters.
    assert img[r, c, 2] == pytest.approx(20.0)
    assert img[int(0.1 / PITCH + 62.5), int(0.1 / PITCH + 62.5), 2] == pytest.approx(5.0)
    assert np.count_nonzero(img[..., 2]) == 2


def test_calorimeter_thresholds_and_hadron_share():
    p = particles(pid=[22, 2112], charge=[0, 0], pt=[0.08, 40.0], eta=[0.0, 0.3], phi=[0.2, -0.2])
    cfg = CalorimeterConfig(ecal_noise=0.0, hcal_noise=0.0)
    img = calorimeter_image(p, 0.0, 0.0, cfg, np.random.default_rng(1))
    # The 0.08 GeV photon is below the ECAL threshold; the neutron (neutral: no track) shares its energy.
    ecal, hcal = img[..., 0].sum(), img[..., 1].sum()
    assert ecal > 0 and hcal > 0 and img[..., 2].sum() == 0
    assert 0.0 < ecal / (ecal + hcal) < 2 * cfg.hadron_ecal_share
    assert ecal + hcal == pytest.approx(40.0, rel=0.5)  # one 40 GeV hadron, 100 %/sqrt(E) resolution


def test_match_label():
    eta, phi, ids = np.array([0.1, -1.0]), np.array([3.1, 0.0]), np.array([21, 2])
    assert match_label(0.0, -3.1, eta, phi, ids, 0.4) == GLUON  # ΔR ≈ 0.12 through the ±π wrap
    assert match_label(-1.2, 0.1, eta, phi, ids, 0.4) == QUARK
    assert match_label(0.8, 1.5, eta, phi, ids, 0.4) is None
    assert match_label(0.1, 3.1, eta, phi, np.array([11, 2]), 0.4) is None  # not a parton


# ------------------------------------------------------------------------------------ configuration
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 0}, "n .*>= 1"),
        ({"n": "10"}, "n must be an integer"),
        ({"n": True}, "n must be an integer"),
        ({"seed": -1}, "seed"),
        ({"pt_min": 200.0, "pt_max": 70.0}, "pt_min < pt_max"),
        ({"eta_max": 0.0}, "eta_max"),
        ({"ecm": float("nan")}, "ecm must be a finite number"),
        ({"pthat_min": 300.0}, "pthat_min < pthat_max"),
        ({"calorimeter": {"ecal_noise": 0.1}}, "calorimeter must be a CalorimeterConfig"),
    ],
)
def test_bad_config_values(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        SimulateConfig(**kwargs)


def test_unknown_keys_refused_and_dict_round_trip():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'pt_minn'.*known keys:.*pt_min"):
        SimulateConfig.from_dict({"n": 4, "pt_minn": 50.0})
    with pytest.raises(ConfigError, match=r"CalorimeterConfig: unknown key\(s\) 'ecal_nois'"):
        SimulateConfig.from_dict({"calorimeter": {"ecal_nois": 0.1}})
    with pytest.raises(ConfigError, match="track_efficiency"):
        CalorimeterConfig(track_efficiency=0.0)
    cfg = SimulateConfig(n=6, seed=9, calorimeter=CalorimeterConfig(ecal_noise=0.05))
    assert SimulateConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert SimulateConfig().pthat_window == (70.0, pytest.approx(220.0))


# ------------------------------------------------------------------------------------ file and CLI
SMALL = SimulateConfig(n=11, seed=3)


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("sim") / "jets.h5"
    return simulate(SMALL, path, progress=False)


def test_file_layout_and_attributes(small_file):
    with h5py.File(small_file, "r") as h5:
        assert set(h5) == {"X_jets", "y", "m0", "pt"}
        x = h5["X_jets"]
        assert (x.shape, x.dtype, x.chunks, x.compression) == (
            (11, 125, 125, 3),
            np.float32,
            (1, 125, 125, 3),
            "gzip",
        )
        assert (h5["y"].dtype, h5["m0"].dtype, h5["pt"].dtype) == (np.int32, np.float32, np.float32)
        y, pt, m0, images = h5["y"][:], h5["pt"][:], h5["m0"][:], x[:]
        attrs = dict(h5.attrs)
    np.testing.assert_array_equal(y, [1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1])  # alternating, the extra one a quark
    assert np.all((pt >= 70.0) & (pt < 200.0)) and np.all((m0 > 0) & (m0 < pt))
    assert np.all(np.isfinite(images)) and images.min() >= 0 and np.all(images.sum(axis=(1, 2)) > 0)
    assert SimulateConfig.from_dict(json.loads(attrs["config"])) == SMALL
    assert attrs["seed"] == 3 and attrs["inr_fast_version"] == __version__
    assert attrs["pythia8mc_version"].startswith("8.3") and attrs["fastjet_version"]
    assert "NOT a CMS Geant4" in attrs["calorimeter_note"] and attrs["channels"] == "ECAL,HCAL,Tracks"
    assert json.loads(attrs["calorimeter"]) == CalorimeterConfig().__dict__
    quark_settings = json.loads(attrs["pythia_settings_quark"])
    assert "HardQCD:qg2qg = on" in quark_settings and "Beams:eCM = 13000" in quark_settings
    assert "HardQCD:gg2gg = on" in json.loads(attrs["pythia_settings_gluon"])
    assert attrs["pythia_events_quark"] >= 6 and attrs["pythia_events_gluon"] >= 0
    assert [p.name for p in small_file.parent.iterdir()] == ["jets.h5"]  # no temporary file left


def test_deterministic_per_seed(small_file):
    again = simulate_jets(SMALL)
    with h5py.File(small_file, "r") as h5:
        for key in ("X_jets", "y", "m0", "pt"):
            np.testing.assert_array_equal(h5[key][:], again[key], err_msg=key)
    other = simulate_jets(SimulateConfig(n=11, seed=4))
    assert not np.array_equal(other["pt"], again["pt"])
    assert not np.array_equal(other["X_jets"], again["X_jets"])


def test_output_exists_and_interrupted_run(small_file, monkeypatch):
    before = small_file.read_bytes()
    with pytest.raises(OutputExistsError, match="jets.h5.*--overwrite"):
        simulate(SMALL, small_file, progress=False)
    assert small_file.read_bytes() == before

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    import inr_fast.data.simulate as sim

    monkeypatch.setattr(sim, "_generate", interrupted)
    target = small_file.parent / "partial.h5"
    with pytest.raises(KeyboardInterrupt):
        simulate(SMALL, target, progress=False)
    assert sorted(p.name for p in small_file.parent.iterdir()) == ["jets.h5"]
    with pytest.raises(ConfigError, match="does not exist"):
        simulate(SMALL, small_file.parent / "missing" / "x.h5")


def test_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / "cli.h5"
    argv = ["simulate", "--out", str(out), "--n", "2", "--seed", "5", "--pt-min", "60", "--no-progress"]
    assert cli.main(argv) == 0
    assert "wrote 2 jets" in capsys.readouterr().out
    with h5py.File(out, "r") as h5:
        assert json.loads(h5.attrs["config"])["pt_min"] == 60.0 and list(h5["y"][:]) == [1, 0]
        assert np.all(h5["pt"][:] >= 60.0)
    assert cli.main(argv) == 2
    assert "output file exists" in capsys.readouterr().err
    assert cli.main([*argv, "--overwrite"]) == 0
    assert cli.main(["simulate", "--out", str(tmp_path / "b.h5"), "--n", "0", "--no-progress"]) == 2
    assert "n (number of jets) must be >= 1" in capsys.readouterr().err


# --------------------------------------------------------------------------------- physics, 200 jets
@pytest.fixture(scope="module")
def sample():
    return simulate_jets(SimulateConfig(n=200, seed=11))


@pytest.mark.slow
def test_sample_is_balanced_and_in_window(sample):
    assert (sample["y"] == QUARK).sum() == 100 and (sample["y"] == GLUON).sum() == 100
    assert np.all((sample["pt"] >= 70) & (sample["pt"] < 200))


@pytest.mark.slow
def test_image_pt_from_ecal_and_hcal_matches_jet_pt(sample):
    calo = sample["X_jets"][..., 0] + sample["X_jets"][..., 1]
    ratio = np.array([image_kinematics(img)[0] for img in calo]) / sample["pt"]
    assert np.mean(np.abs(ratio - 1) < 0.4) >= 0.8
    assert 0.85 < np.median(ratio) < 1.25  # the window also holds underlying-event energy


@pytest.mark.slow
def test_tracks_below_jet_pt(sample):
    tracks = sample["X_jets"][..., 2]
    in_cone = (CENTRES[:, None] ** 2 + CENTRES[None, :] ** 2) < 0.4**2
    assert np.all((tracks * in_cone).sum(axis=(1, 2)) < sample["pt"])  # every jet, inside its cone
    window = tracks.sum(axis=(1, 2))
    assert np.mean(window < sample["pt"]) >= 0.9  # the whole window also sees other activity
    assert 0.4 < np.median((tracks * in_cone).sum(axis=(1, 2)) / sample["pt"]) < 0.8  # ~2/3 charged


@pytest.mark.slow
def test_hcal_constant_on_aligned_towers(sample):
    n_towers = IMAGE_SIZE // HCAL_TOWER
    hcal = sample["X_jets"][..., 1].reshape(-1, n_towers, HCAL_TOWER, n_towers, HCAL_TOWER)
    np.testing.assert_array_equal(hcal, np.broadcast_to(hcal[:, :, :1, :, :1], hcal.shape))
    assert np.all(np.count_nonzero(hcal, axis=(1, 2, 3, 4)) % 25 == 0)
    assert np.count_nonzero(sample["X_jets"][..., 1]) > 0


@pytest.mark.slow
def test_gluon_jets_have_more_nonzero_pixels(sample):
    nonzero = np.count_nonzero(sample["X_jets"], axis=(1, 2, 3))
    quark, gluon = nonzero[sample["y"] == QUARK], nonzero[sample["y"] == GLUON]
    assert gluon.mean() > quark.mean() + 2 * math.hypot(gluon.std(), quark.std()) / math.sqrt(100)
    occupancy = np.count_nonzero(sample["X_jets"]) / sample["X_jets"].size
    assert 0.002 < occupancy < 0.06  # sparse, as in the CMS images (~1-2 % non-zero)
