"""Simulated quark/gluon jet images: Pythia 8 + FastJet + a parametrised calorimeter → the HDF5 layout.

This is NOT a CMS (Geant4) detector simulation. The calorimeter is a simple, documented parametrisation
that gives images with the layout and the gross features of the CMS Open Data quark/gluon file
(see :mod:`inr_fast.layout`): sparse ECAL hits, blocky HCAL towers, track pT. Use it for tests, demos
and benchmarks, never for physics results.

Generator (Pythia 8 through ``pythia8mc``, FastJet through ``fastjet``)
    Two independent proton-proton generators at ``ecm`` (default 13 TeV), each with its own seed derived
    from ``seed``: a quark-enriched one (``HardQCD:qg2qg``, ``qq2qq``, ``qqbar2qqbarNew``) and a
    gluon-enriched one (``HardQCD:gg2gg``). Multiparton interactions, showers and hadronisation stay on
    (Pythia defaults, Monash tune); particles with c·tau0 > 10 mm are stable (``ParticleDecays:
    limitTau0``, as in LHC generator set-ups). The pT-hat window defaults to [pt_min, 1.1·pt_max]
    (so the jet-pT spectrum is somewhat depleted within ~10 % above pt_min, where jets from lower pT-hat
    are missing). Visible final-state particles (neutrinos excluded) are clustered with anti-kT
    R = 0.4; the *leading* jet of the event must have ``pt_min <= pt < pt_max`` and ``|eta| < eta_max``.
    It is labelled by the nearest outgoing parton of the hard process (event entries 5 and 6, status
    -23) within ΔR < R: quark (``y`` = 1) for d u s c b t, gluon (``y`` = 0) for g; unmatched jets are
    skipped. Jets alternate quark, gluon, quark, ... (jet i is a quark jet when i is even; for odd N the
    extra jet is a quark jet), so ``n`` is balanced between labels. Quark jets come from the
    quark-enriched generator; gluon jets first from the gluon-labelled jets that generator makes on the
    way (qg -> qg gives both), then from the gluon-enriched one. A process-level veto (a Pythia
    UserHooks) drops, before the costly showers and multiparton interactions, hard processes in which no
    outgoing parton of the generator's label has ``|eta| < eta_max + R``: no jet of that label is lost
    (a matched central jet needs such a parton), it only saves time (for the gluon jets taken from the
    quark-enriched generator it means the recoiling quark is within that |eta|).
    ``m0`` and ``pt`` are the mass and pT of that FastJet jet (E-scheme four-vector).

Calorimeter (parametrised; all parameters in :class:`CalorimeterConfig`)
    * Window: 125 x 125 pixels of pitch 0.0174 in (eta, phi), centred on the jet axis; image row i has
      Δeta = (i + 0.5 - 62.5)·0.0174, column j the same in Δphi (wrapped into [-π, π)). Particles go
      in straight lines from the origin (no magnetic field). Every visible final-state particle inside
      the window counts, not only jet constituents; neutrinos are invisible.
    * Stored value: TRANSVERSE energy in GeV per pixel, ET = E / cosh(eta_pixel centre) (for Tracks: the
      track pT). Resolutions, noise and thresholds act on the energy E, as in a real calorimeter. With
      ET stored, the image-based jet pT and mass (pixels as massless four-vectors at their (Δeta, Δphi)
      centres) do not depend on the jet's eta, which the file does not store.
    * ECAL (channel 0): photons and electrons deposit their energy smeared by
      sigma/E = a/sqrt(E) ⊕ c (a = 2.8 %·sqrt(GeV), c = 0.5 %); every hadron deposits a random share
      f ~ U(0, 2·s) of its energy (s = 0.3 on average; this is the hadron's early shower start in the
      ECAL). Each deposit spreads over the 5 x 5 crystals around its impact point with a 2-D Gaussian
      profile integrated over the crystals (sigma 0.5 crystal for e/γ, 1.0 for hadrons; Molière radius
      ≈ one crystal), renormalised to the deposit (energy beyond the window edge is lost). Each
      crystal then gets Gaussian electronic noise (0.04 GeV) and is zero-suppressed below 0.12 GeV.
    * HCAL (channel 1): hadrons deposit the rest, (1 - f)·E, in the tower (aligned 5 x 5 block of
      crystals, 25 x 25 towers) of their impact point. Each tower's energy is smeared by
      sigma/E = 100 %/sqrt(E) ⊕ 5 % plus 0.2 GeV noise, zero-suppressed below 0.8 GeV, converted to
      ET at the tower centre and spread UNIFORMLY over its 25 crystals: each crystal holds tower ET / 25,
      so HCAL is constant on every aligned 5 x 5 block and the channel sum is the sum of tower ETs.
    * Tracks (channel 2): charged particles (hadrons, leptons) with pT > 0.5 GeV, found with 90 %
      efficiency, pT smeared by 1 %, put in the pixel of their direction. Muons leave tracks only
      (their minimum-ionising deposits in ECAL/HCAL are neglected).

Output (HDF5, :mod:`inr_fast.layout`): ``X_jets`` (N, 125, 125, 3) float32, gzip, one chunk per jet;
``y`` (N,) int32 (quark 1, gluon 0); ``m0`` (N,) float32 GeV; ``pt`` (N,) float32 GeV; root attributes
with the configuration (JSON), the Pythia settings of both generators, seed, versions of inr_fast,
Pythia and FastJet, the calorimeter parameters and a note that the calorimeter is parametrised. The
contents are a deterministic function of the configuration (same seed → identical arrays and
attributes; no time stamps). The file is written under a temporary name in the target's folder and
renamed at the end, so an interrupted run never leaves a partial file at the target path.

Speed (measured 2026-11-25 on the development machine, 2 AMD EPYC cores shared with other jobs at a
load average of 3-3.6, one process, default settings, CPU time from ``time.process_time``):
``simulate_jets(SimulateConfig(n=200))`` 44.8-47.5 jets per CPU-second including the start-up (two
Pythia initialisations, ~0.3 s CPU each, plus imports), n=400 51.5 jets per CPU-second; 0.46-0.48 jets
per generated Pythia event. Pythia's parton level (multiparton interactions with interleaved showers)
is ~80 % of the steady-state time, the calorimeter ~5 %, FastJet ~4 %, awkward conversions the rest.
The rate scales with Pythia's speed, ~110 events/s per core at that load, ~150 on a quiet core.
Setting ``pthat_min = 1.1 * pt_min`` gives ~10 % more jets per second at the cost of a more depleted
spectrum near ``pt_min``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import erf
from tqdm import tqdm

from inr_fast import __version__
from inr_fast.atomic import atomic_output
from inr_fast.errors import ConfigError, InrFastError, OutputExistsError
from inr_fast.layout import (
    CHANNELS,
    GLUON,
    HCAL_TOWER,
    IMAGE_SIZE,
    KEY_IMAGES,
    KEY_LABEL,
    KEY_MASS,
    KEY_PT,
    N_CHANNELS,
    PITCH,
    QUARK,
)
from inr_fast.util import refuse_unknown

CALORIMETER_NOTE = (
    "parametrised calorimeter (inr_fast.data.simulate), NOT a CMS Geant4 simulation: ECAL e/gamma with "
    "stochastic smearing and lateral spread plus a share of hadron energy, HCAL hadron energy on 5x5 "
    "crystal towers, Tracks = charged pT; pixel values are transverse energies in GeV"
)

QUARK_PROCESSES = ("HardQCD:qg2qg", "HardQCD:qq2qq", "HardQCD:qqbar2qqbarNew")
GLUON_PROCESSES = ("HardQCD:gg2gg",)
_INVISIBLE = (12, 14, 16)
_EM = (11, 22)
_MUON = 13
_HARD_OUTGOING = (5, 6)  # event-record entries of the two outgoing partons of a 2 -> 2 hard process
_HALF = IMAGE_SIZE / 2.0
_N_TOWERS = IMAGE_SIZE // HCAL_TOWER
_SPREAD_HALF_WIDTH = 2  # lateral profiles cover (2*2+1)^2 crystals


# ----------------------------------------------------------------------------------------- configuration
def _number(owner: str, name: str, value: Any, *, integer: bool = False) -> None:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or (not integer and not math.isfinite(value)):
        kind = "an integer" if integer else "a finite number"
        raise ConfigError(f"{owner}.{name} must be {kind}, got {value!r}")


@dataclass(frozen=True)
class CalorimeterConfig:
    """Parameters of the parametrised calorimeter (energies in GeV, widths in crystals)."""

    ecal_stochastic: float = 0.028  # a in sigma/E = a/sqrt(E) (+) c, GeV^0.5
    ecal_constant: float = 0.005
    ecal_noise: float = 0.04  # per-crystal Gaussian noise, GeV
    ecal_threshold: float = 0.12  # zero suppression per crystal (energy), GeV
    em_spread: float = 0.5  # Gaussian sigma of e/gamma lateral profile, crystals
    hadron_ecal_share: float = 0.3  # mean share of hadron energy left in ECAL, per hadron U(0, 2*share)
    hadron_spread: float = 1.0  # Gaussian sigma of the hadron ECAL profile, crystals
    hcal_stochastic: float = 1.0
    hcal_constant: float = 0.05
    hcal_noise: float = 0.2  # per-tower Gaussian noise, GeV
    hcal_threshold: float = 0.8  # zero suppression per tower (energy), GeV
    track_pt_min: float = 0.5  # GeV
    track_efficiency: float = 0.9
    track_resolution: float = 0.01  # sigma(pT)/pT

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            _number("CalorimeterConfig", f.name, value)
            if value < 0:
                raise ConfigError(f"CalorimeterConfig.{f.name} must be >= 0, got {value!r}")
        if self.em_spread <= 0 or self.hadron_spread <= 0:
            raise ConfigError("CalorimeterConfig.em_spread and hadron_spread must be > 0 crystals")
        if not 0 <= self.hadron_ecal_share <= 0.5:
            raise ConfigError(
                f"CalorimeterConfig.hadron_ecal_share must be in [0, 0.5], got {self.hadron_ecal_share!r}"
            )
        if not 0 < self.track_efficiency <= 1:
            raise ConfigError(
                f"CalorimeterConfig.track_efficiency must be in (0, 1], got {self.track_efficiency!r}"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CalorimeterConfig:
        refuse_unknown(cls, data, cls.__name__)
        return cls(**data)


@dataclass(frozen=True)
class SimulateConfig:
    """Everything that determines a simulated file (with ``n`` and ``seed``, its contents)."""

    n: int = 100  # jets in the file, ceil(n/2) quark + floor(n/2) gluon
    seed: int = 0
    ecm: float = 13000.0  # sqrt(s), GeV
    pt_min: float = 70.0  # leading-jet pT window, GeV
    pt_max: float = 200.0
    eta_max: float = 1.4  # |eta| of the leading jet
    jet_r: float = 0.4  # anti-kT radius, also the parton-matching radius
    pthat_min: float | None = None  # Pythia pT-hat window, GeV; None: pt_min
    pthat_max: float | None = None  # None: 1.1 * pt_max
    calorimeter: CalorimeterConfig = field(default_factory=CalorimeterConfig)

    def __post_init__(self) -> None:
        _number("SimulateConfig", "n", self.n, integer=True)
        _number("SimulateConfig", "seed", self.seed, integer=True)
        for name in ("ecm", "pt_min", "pt_max", "eta_max", "jet_r"):
            _number("SimulateConfig", name, getattr(self, name))
        for name in ("pthat_min", "pthat_max"):
            if getattr(self, name) is not None:
                _number("SimulateConfig", name, getattr(self, name))
        if not isinstance(self.calorimeter, CalorimeterConfig):
            raise ConfigError(
                f"SimulateConfig.calorimeter must be a CalorimeterConfig, got {self.calorimeter!r}"
            )
        if self.n < 1:
            raise ConfigError(f"SimulateConfig.n (number of jets) must be >= 1, got {self.n}")
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"SimulateConfig.seed must be in [0, 2**63), got {self.seed}")
        if self.ecm <= 0:
            raise ConfigError(f"SimulateConfig.ecm (sqrt(s), GeV) must be > 0, got {self.ecm}")
        if not 0 < self.pt_min < self.pt_max:
            raise ConfigError(
                f"SimulateConfig needs 0 < pt_min < pt_max, got pt_min={self.pt_min}, pt_max={self.pt_max}"
            )
        if 2 * self.pt_max >= self.ecm:
            raise ConfigError(
                f"SimulateConfig.pt_max={self.pt_max} GeV is out of reach at ecm={self.ecm} GeV"
            )
        if not 0 < self.eta_max <= 3.0:
            raise ConfigError(f"SimulateConfig.eta_max must be in (0, 3], got {self.eta_max}")
        if not 0 < self.jet_r <= 1.5:
            raise ConfigError(f"SimulateConfig.jet_r must be in (0, 1.5], got {self.jet_r}")
        lo, hi = self.pthat_window
        if not 0 < lo < hi:
            raise ConfigError(f"SimulateConfig needs 0 < pthat_min < pthat_max, got {lo}, {hi}")

    @property
    def pthat_window(self) -> tuple[float, float]:
        lo = self.pt_min if self.pthat_min is None else float(self.pthat_min)
        hi = 1.1 * self.pt_max if self.pthat_max is None else float(self.pthat_max)
        return lo, hi

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SimulateConfig:
        """Build from a plain dict (e.g. JSON); unknown keys are refused with a clear message."""
        refuse_unknown(cls, data, cls.__name__)
        data = dict(data)
        calo = data.get("calorimeter")
        if isinstance(calo, dict):
            data["calorimeter"] = CalorimeterConfig.from_dict(calo)
        return cls(**data)


# ------------------------------------------------------------------------------------------ pure maths
def wrap_phi(dphi: np.ndarray) -> np.ndarray:
    """Angles (any shape) wrapped into [-π, π)."""
    return np.mod(dphi + np.pi, 2 * np.pi) - np.pi


def pixel_eta_centres(jet_eta: float) -> np.ndarray:
    """Absolute eta (125,) of the pixel-row centres of a window centred on ``jet_eta``."""
    return jet_eta + (np.arange(IMAGE_SIZE) + 0.5 - _HALF) * PITCH


def spread_deposits(u: np.ndarray, v: np.ndarray, energy: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Deposits spread with 2-D Gaussian profiles integrated over the crystals, summed on the grid.

    u, v (P,): continuous pixel coordinates (row, column; pixel i spans [i, i + 1)), energy (P,) GeV,
    sigma (P,) profile widths in crystals. Each profile covers the 5 x 5 crystals around the impact
    crystal and is renormalised to the deposit; crystals outside the window are dropped.
    Returns (125, 125) float64.
    """
    k = np.arange(-_SPREAD_HALF_WIDTH, _SPREAD_HALF_WIDTH + 1)
    rows = np.floor(u)[:, None] + k  # (P, 5)
    cols = np.floor(v)[:, None] + k
    scale = 1.0 / (np.sqrt(2.0) * sigma[:, None])

    def profile(pixels: np.ndarray, x: np.ndarray) -> np.ndarray:
        w = 0.5 * (erf((pixels + 1 - x[:, None]) * scale) - erf((pixels - x[:, None]) * scale))
        return w / w.sum(axis=1, keepdims=True)

    weight = profile(rows, u)[:, :, None] * profile(cols, v)[:, None, :] * energy[:, None, None]  # (P,5,5)
    r = np.broadcast_to(rows[:, :, None], weight.shape)
    c = np.broadcast_to(cols[:, None, :], weight.shape)
    inside = (r >= 0) & (r < IMAGE_SIZE) & (c >= 0) & (c < IMAGE_SIZE)
    flat = (r[inside] * IMAGE_SIZE + c[inside]).astype(np.int64)
    grid = np.bincount(flat, weights=weight[inside], minlength=IMAGE_SIZE * IMAGE_SIZE)
    return grid.reshape(IMAGE_SIZE, IMAGE_SIZE)


def _smear(energy: np.ndarray, stochastic: float, constant: float, noise: float, rng) -> np.ndarray:
    """Energies (any shape) smeared by sigma = sqrt(a²E + c²E² + noise²), clipped at 0."""
    sigma = np.sqrt(stochastic**2 * energy + (constant * energy) ** 2 + noise**2)
    return np.maximum(energy + sigma * rng.standard_normal(energy.shape), 0.0)


def calorimeter_image(
    particles: dict[str, np.ndarray],
    jet_eta: float,
    jet_phi: float,
    config: CalorimeterConfig,
    rng: np.random.Generator,
) -> np.ndarray:
    """The (125, 125, 3) float32 image [ECAL, HCAL, Tracks] of one event around a jet axis.

    particles: final-state arrays (P,) ``pid`` (PDG id), ``charge``, ``pt``, ``eta``, ``phi``, ``e`` (GeV).
    Values are transverse energies (track pT) in GeV; see the module docstring for the model. The random
    numbers are drawn in a fixed order from ``rng``, so the image is a deterministic function of it.
    """
    pid = np.abs(particles["pid"])
    u = (particles["eta"] - jet_eta) / PITCH + _HALF
    v = wrap_phi(particles["phi"] - jet_phi) / PITCH + _HALF
    inside = (u >= 0) & (u < IMAGE_SIZE) & (v >= 0) & (v < IMAGE_SIZE) & ~np.isin(pid, _INVISIBLE)
    pid, u, v = pid[inside], u[inside], v[inside]
    e, pt, charge = particles["e"][inside], particles["pt"][inside], particles["charge"][inside]
    em = np.isin(pid, _EM)
    hadron = ~em & (pid != _MUON)
    cosh_rows = np.cosh(pixel_eta_centres(jet_eta))  # (125,)

    # ECAL: e/gamma smeared, plus a random share of every hadron's energy.
    e_em = _smear(e[em], config.ecal_stochastic, config.ecal_constant, 0.0, rng)
    share = rng.uniform(0.0, 2.0 * config.hadron_ecal_share, size=int(hadron.sum()))
    e_had = e[hadron]
    deposits = np.concatenate([e_em, share * e_had])
    sigma = np.concatenate([np.full(e_em.size, config.em_spread), np.full(e_had.size, config.hadron_spread)])
    ecal = spread_deposits(
        np.concatenate([u[em], u[hadron]]), np.concatenate([v[em], v[hadron]]), deposits, sigma
    )
    ecal = ecal + config.ecal_noise * rng.standard_normal(ecal.shape)
    ecal = np.where(ecal >= config.ecal_threshold, ecal, 0.0) / cosh_rows[:, None]

    # HCAL: the rest of the hadron energy in aligned 5x5 towers, smeared per tower, uniform over crystals.
    tower_row = (u[hadron] // HCAL_TOWER).astype(np.int64)
    tower_col = (v[hadron] // HCAL_TOWER).astype(np.int64)
    hcal_e = (1.0 - share) * e_had
    towers = np.bincount(tower_row * _N_TOWERS + tower_col, weights=hcal_e, minlength=_N_TOWERS**2)
    towers = towers.reshape(_N_TOWERS, _N_TOWERS)
    towers = _smear(towers, config.hcal_stochastic, config.hcal_constant, config.hcal_noise, rng)
    towers = np.where(towers >= config.hcal_threshold, towers, 0.0)
    tower_cosh = np.cosh(pixel_eta_centres(jet_eta)[HCAL_TOWER // 2 :: HCAL_TOWER])  # (25,) tower centres
    towers = towers / tower_cosh[:, None] / HCAL_TOWER**2
    hcal = np.repeat(np.repeat(towers, HCAL_TOWER, axis=0), HCAL_TOWER, axis=1)

    # Tracks: charged particles above threshold, with efficiency and pT resolution.
    charged = (charge != 0) & (pt > config.track_pt_min)
    found = rng.uniform(size=int(charged.sum())) < config.track_efficiency
    track_pt = pt[charged] * (1.0 + config.track_resolution * rng.standard_normal(found.size))
    pix = u[charged].astype(np.int64) * IMAGE_SIZE + v[charged].astype(np.int64)
    tracks = np.bincount(pix[found], weights=np.maximum(track_pt[found], 0.0), minlength=IMAGE_SIZE**2)

    image = np.stack([ecal, hcal, tracks.reshape(IMAGE_SIZE, IMAGE_SIZE)], axis=-1)
    return image.astype(np.float32)


def match_label(
    jet_eta: float,
    jet_phi: float,
    parton_eta: np.ndarray,
    parton_phi: np.ndarray,
    parton_id: np.ndarray,
    radius: float,
) -> int | None:
    """Label of the nearest parton (2,) within ΔR < radius: QUARK, GLUON, or None (unmatched/other)."""
    dr = np.hypot(parton_eta - jet_eta, wrap_phi(parton_phi - jet_phi))
    best = int(np.argmin(dr))
    if dr[best] >= radius:
        return None
    pid = abs(int(parton_id[best]))
    if 1 <= pid <= 6:
        return QUARK
    if pid == 21:
        return GLUON
    return None


# ------------------------------------------------------------------------------------------- generator
def _pythia_seed(seed: int, label: int) -> int:
    """Pythia's seed for one generator: derived from ``seed`` and the label, in [1, 900_000_000]."""
    state = np.random.SeedSequence([seed, label, 0x5EED]).generate_state(1)[0]
    return int(state) % 900_000_000 + 1


def pythia_settings(config: SimulateConfig, label: int) -> list[str]:
    """The ``readString`` lines of the generator for one label (QUARK or GLUON)."""
    lo, hi = config.pthat_window
    processes = QUARK_PROCESSES if label == QUARK else GLUON_PROCESSES
    return [
        f"Beams:eCM = {config.ecm:.10g}",
        *(f"{p} = on" for p in processes),
        f"PhaseSpace:pTHatMin = {lo:.10g}",
        f"PhaseSpace:pTHatMax = {hi:.10g}",
        "ParticleDecays:limitTau0 = on",
        "ParticleDecays:tau0Max = 10",
        "Random:setSeed = on",
        f"Random:seed = {_pythia_seed(config.seed, label)}",
        "Print:quiet = on",
        "Next:numberCount = 0",
        "Init:showProcesses = off",
        "Init:showChangedSettings = off",
        "Init:showMultipartonInteractions = off",
        "Init:showChangedParticleData = off",
    ]


def _quiet_fastjet() -> None:
    """Silence FastJet's one-time banner on stdout (a process-wide FastJet setting)."""
    try:
        from fastjet._swig import _fastjet_swig as swig

        swig.ClusterSequence_set_fastjet_banner_stream(None)
        swig.ClusterSequence_print_banner()  # marks the banner as shown, prints nothing
    except (ImportError, AttributeError):  # pragma: no cover - other fastjet builds
        pass


def _import_generators():
    try:
        import awkward as ak
        import fastjet
        import pythia8mc
    except ImportError as err:
        raise InrFastError(
            f"inr-fast simulate needs pythia8mc==8.317.2, fastjet and awkward ({err}); "
            "install them with `pip install 'inr_fast[simulate]'`"
        ) from err
    _quiet_fastjet()
    return pythia8mc, fastjet, ak


class _JetSource:
    """One Pythia generator that yields accepted jets per label, in a fixed order.

    Events are generated in batches (``Pythia.nextBatch``); the calorimeter randomness of event k comes
    from ``np.random.default_rng([seed, source, k])``, so an image does not depend on the batch size.
    """

    def __init__(self, config: SimulateConfig, source: int) -> None:
        pythia8mc, fastjet, ak = _import_generators()
        self.config, self.source, self.ak, self.fastjet = config, source, ak, fastjet
        self.settings = pythia_settings(config, source)
        self.pythia = pythia8mc.Pythia("", False)
        for line in self.settings:
            if not self.pythia.readString(line):
                raise InrFastError(f"Pythia refused the setting {line!r}")
        self._hook = _make_process_veto(pythia8mc, source, config.eta_max + config.jet_r)
        self.pythia.setUserHooksPtr(self._hook)
        if not self.pythia.init():
            raise InrFastError(f"Pythia failed to initialise with settings {self.settings}")
        self.jet_def = fastjet.JetDefinition(fastjet.antikt_algorithm, config.jet_r)
        self.events = 0  # events generated so far (after the process-level veto)
        self.pending: dict[int, deque[tuple[np.ndarray, float, float]]] = {QUARK: deque(), GLUON: deque()}
        self._charges: dict[int, float] = {}

    def next_jet(self, label: int, still_needed: int) -> tuple[np.ndarray, float, float]:
        """The next accepted jet of ``label``: (image (125,125,3) float32, pt GeV, m0 GeV).

        ``still_needed`` (jets of this label still to come) only sizes the next batch of events.
        """
        while not self.pending[label]:
            self._fill(batch=int(min(64, 2 * still_needed + 2)))
        return self.pending[label].popleft()

    def _charge(self, pids: np.ndarray) -> np.ndarray:
        unique, inverse = np.unique(pids, return_inverse=True)
        for p in unique.tolist():
            if p not in self._charges:
                self._charges[p] = float(self.pythia.particleData.charge(p))
        return np.array([self._charges[p] for p in unique.tolist()])[inverse]

    def _fill(self, batch: int) -> None:
        ak, cfg = self.ak, self.config
        events = self.pythia.nextBatch(batch)
        first_event = self.events
        self.events += len(events)
        if len(events) == 0:
            return
        prt = events.prt
        pdg = abs(prt.id)
        final = prt[(prt.status > 0) & (pdg != 12) & (pdg != 14) & (pdg != 16)]  # visible final state
        mom = ak.zip(
            {"px": final.p.px, "py": final.p.py, "pz": final.p.pz, "E": final.p.e}, with_name="Momentum4D"
        )
        jets = self.fastjet.ClusterSequence(mom, self.jet_def).inclusive_jets(0.25 * cfg.pt_min)
        jet_pt = np.hypot(jets.px, jets.py)
        lead = ak.firsts(jets[ak.argmax(jet_pt, axis=1, keepdims=True)])
        has_jet = ak.to_numpy(~ak.is_none(lead))
        lead = ak.fill_none(lead, {"px": 0.0, "py": 0.0, "pz": 0.0, "E": 0.0})
        px, py, pz, en = (ak.to_numpy(lead[c]).astype(np.float64) for c in ("px", "py", "pz", "E"))
        pt = np.hypot(px, py)
        eta = np.arcsinh(np.divide(pz, pt, out=np.zeros_like(pz), where=pt > 0))
        phi = np.arctan2(py, px)
        mass = np.sqrt(np.maximum(en**2 - px**2 - py**2 - pz**2, 0.0))
        keep = has_jet & (pt >= cfg.pt_min) & (pt < cfg.pt_max) & (np.abs(eta) < cfg.eta_max)

        hard = prt[:, list(_HARD_OUTGOING)]
        h_px, h_py, h_pz = (ak.to_numpy(hard.p[c]) for c in ("px", "py", "pz"))
        h_pt = np.hypot(h_px, h_py)
        h_eta, h_phi, h_id = np.arcsinh(h_pz / h_pt), np.arctan2(h_py, h_px), ak.to_numpy(hard.id)
        labels = {}
        for i in np.flatnonzero(keep).tolist():
            label = match_label(eta[i], phi[i], h_eta[i], h_phi[i], h_id[i], cfg.jet_r)
            if label is not None:
                labels[i] = label
        if not labels:
            return

        chosen = final[list(labels)]
        counts = ak.to_numpy(ak.num(chosen))
        bounds = np.concatenate([[0], np.cumsum(counts)])
        f_px, f_py, f_pz, f_e = (ak.to_numpy(ak.flatten(chosen.p[c])) for c in ("px", "py", "pz", "e"))
        f_pt = np.hypot(f_px, f_py)
        pids = ak.to_numpy(ak.flatten(chosen.id)).astype(np.int64)
        particles = {
            "pid": pids,
            "charge": self._charge(pids),
            "pt": f_pt,
            "eta": np.arcsinh(f_pz / np.maximum(f_pt, 1e-12)),
            "phi": np.arctan2(f_py, f_px),
            "e": f_e,
        }
        for k, (i, label) in enumerate(labels.items()):
            one = {key: value[bounds[k] : bounds[k + 1]] for key, value in particles.items()}
            rng = np.random.default_rng([cfg.seed, self.source, first_event + i])
            image = calorimeter_image(one, float(eta[i]), float(phi[i]), cfg.calorimeter, rng)
            self.pending[label].append((image, float(pt[i]), float(mass[i])))


def _make_process_veto(pythia8mc, label: int, eta_cut: float):
    """A UserHooks that vetoes hard processes with no outgoing parton of ``label`` at |eta| < eta_cut.

    With eta_cut = eta_max + R this drops, before the costly showers and multiparton interactions, only
    events whose leading jet could never be central and matched to a parton of ``label``.
    """

    class _ProcessVeto(pythia8mc.UserHooks):
        def canVetoProcessLevel(self) -> bool:  # noqa: N802 - Pythia's name
            return True

        def doVetoProcessLevel(self, process) -> bool:  # noqa: N802 - Pythia's name
            for i in _HARD_OUTGOING:
                pid = abs(process[i].id())
                wanted = (1 <= pid <= 6) if label == QUARK else pid == 21
                if wanted and abs(process[i].eta()) < eta_cut:
                    return False
            return True

    return _ProcessVeto()


def simulate_jets(config: SimulateConfig, progress: bool = False) -> dict[str, np.ndarray]:
    """Simulate ``config.n`` jets in memory.

    Returns ``X_jets`` (N, 125, 125, 3) float32, ``y`` (N,) int32, ``m0`` (N,) float32, ``pt`` (N,)
    float32, plus ``events`` (2,) int64: Pythia events generated by the quark and gluon generators.
    """
    out: dict[str, np.ndarray] = {
        KEY_IMAGES: np.zeros((config.n, IMAGE_SIZE, IMAGE_SIZE, N_CHANNELS), np.float32),
        KEY_LABEL: np.zeros(config.n, np.int32),
        KEY_MASS: np.zeros(config.n, np.float32),
        KEY_PT: np.zeros(config.n, np.float32),
    }
    info = _generate(config, progress, lambda i, image, label, pt, m0: _store(out, i, image, label, pt, m0))
    out["events"] = np.array([info["events_quark"], info["events_gluon"]], np.int64)
    return out


def _store(out, i: int, image: np.ndarray, label: int, pt: float, m0: float) -> None:
    out[KEY_IMAGES][i] = image
    out[KEY_LABEL][i] = label
    out[KEY_MASS][i] = m0
    out[KEY_PT][i] = pt


def _generate(config: SimulateConfig, progress: bool, sink) -> dict[str, Any]:
    """Generate the jets in output order (quark at even i, gluon at odd i), handing each to ``sink``.

    Quark jets come from the quark-enriched generator. Gluon jets come first from the gluon-labelled
    jets that the quark-enriched generator made on the way (qg -> qg gives both), then from the
    gluon-enriched generator; both orders are fixed, so the output is a deterministic function of the
    configuration.
    """

    quark_source, gluon_source = _JetSource(config, QUARK), _JetSource(config, GLUON)
    need = {QUARK: (config.n + 1) // 2, GLUON: config.n // 2}
    with tqdm(total=config.n, unit="jet", desc="simulate", disable=not progress) as bar:
        for i in range(config.n):
            label = QUARK if i % 2 == 0 else GLUON
            if label == QUARK or not quark_source.pending[GLUON]:
                source = quark_source if label == QUARK else gluon_source
                image, pt, m0 = source.next_jet(label, need[label])
            else:
                image, pt, m0 = quark_source.pending[GLUON].popleft()
            need[label] -= 1
            sink(i, image, label, pt, m0)
            bar.update(1)
    return {
        "events_quark": quark_source.events,
        "events_gluon": gluon_source.events,
        "settings_quark": quark_source.settings,
        "settings_gluon": gluon_source.settings,
    }


# ----------------------------------------------------------------------------------------------- file
def _versions() -> dict[str, str]:
    from importlib import metadata

    found = {"inr_fast_version": __version__}
    for package in ("pythia8mc", "fastjet"):
        try:
            found[f"{package}_version"] = metadata.version(package)
        except metadata.PackageNotFoundError:  # pragma: no cover
            found[f"{package}_version"] = "unknown"
    return found


def simulate(
    config: SimulateConfig, out_path: str | os.PathLike, overwrite: bool = False, progress: bool = True
) -> Path:
    """Simulate ``config.n`` jets into the HDF5 file ``out_path`` and return its path.

    Raises OutputExistsError when the file exists and ``overwrite`` is false, ConfigError when the
    folder does not exist. The file appears at ``out_path`` only once complete.
    """
    import h5py

    out = Path(out_path)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out}: output file exists; pass --overwrite (overwrite=True) to replace it")
    if out.is_dir():
        raise ConfigError(f"{out}: is a folder; --out must name an HDF5 file")
    if not out.parent.is_dir():
        raise ConfigError(f"{out}: output folder {out.parent} does not exist")
    with atomic_output(out, overwrite=overwrite, mkdir=False) as tmp:
        with h5py.File(tmp, "w") as h5:
            shape = (config.n, IMAGE_SIZE, IMAGE_SIZE, N_CHANNELS)
            images = h5.create_dataset(
                KEY_IMAGES,
                shape=shape,
                dtype=np.float32,
                chunks=(1, *shape[1:]),
                compression="gzip",
                compression_opts=4,
                shuffle=True,
            )
            labels = np.zeros(config.n, np.int32)
            mass = np.zeros(config.n, np.float32)
            pts = np.zeros(config.n, np.float32)

            def sink(i: int, image: np.ndarray, label: int, pt: float, m0: float) -> None:
                images[i] = image
                labels[i], pts[i], mass[i] = label, pt, m0

            info = _generate(config, progress, sink)
            h5.create_dataset(KEY_LABEL, data=labels)
            h5.create_dataset(KEY_MASS, data=mass)
            h5.create_dataset(KEY_PT, data=pts)
            attrs = {
                "generator": "Pythia 8 (pythia8mc) pp -> jets; FastJet anti-kT; leading jet, parton-matched",
                "config": json.dumps(config.to_dict(), sort_keys=True),
                "seed": config.seed,
                "pythia_settings_quark": json.dumps(info["settings_quark"]),
                "pythia_settings_gluon": json.dumps(info["settings_gluon"]),
                "pythia_events_quark": info["events_quark"],
                "pythia_events_gluon": info["events_gluon"],
                "calorimeter": json.dumps(dataclasses.asdict(config.calorimeter), sort_keys=True),
                "calorimeter_note": CALORIMETER_NOTE,
                "channels": ",".join(CHANNELS),
                "pixel_pitch": PITCH,
                "hcal_tower": HCAL_TOWER,
                "units": "X_jets: transverse energy per pixel in GeV (Tracks: track pT); m0, pt: GeV",
                "label_convention": f"y: quark = {QUARK}, gluon = {GLUON}",
                **_versions(),
            }
            for key, value in attrs.items():
                h5.attrs[key] = value
    return out
