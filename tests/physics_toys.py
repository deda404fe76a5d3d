"""Toy quark/gluon jet images for the physics tests (no Pythia): random particle lists through the
project's parametrised calorimeter (:func:`inr_fast.simulate.calorimeter_image`), so the images have
the real layout, zero suppression and uniform 5 x 5 HCAL towers (exact ties), in milliseconds."""

from __future__ import annotations

import numpy as np

from inr_fast.data.simulate import CalorimeterConfig, calorimeter_image


def toy_particles(rng: np.random.Generator, quark: bool) -> dict[str, np.ndarray]:
    """One jet's particles around (eta, phi) = (0, 0): quark-like jets have fewer, harder particles in
    a narrower cone than gluon-like ones (so the two classes are separable but overlap)."""
    pt_jet = rng.uniform(80.0, 140.0)
    n = int(rng.poisson(12 if quark else 22)) + 3
    width = 0.05 if quark else 0.09
    n_prongs = 1 if rng.uniform() < (0.8 if quark else 0.5) else 2
    centres = rng.normal(0.0, 0.12, size=(n_prongs, 2))
    centres[0] = 0.0
    which = rng.integers(0, n_prongs, size=n)
    eta = centres[which, 0] + rng.normal(0.0, width, n)
    phi = centres[which, 1] + rng.normal(0.0, width, n)
    frac = rng.dirichlet(np.full(n, 0.7 if quark else 1.0))
    pt = pt_jet * frac
    kind = rng.uniform(size=n)
    pid = np.where(kind < 0.4, 22, np.where(kind < 0.85, 211, 130))
    charge = np.where(pid == 211, 1, 0)
    return {"pid": pid, "charge": charge, "pt": pt, "eta": eta, "phi": phi, "e": pt * np.cosh(eta)}


def toy_jets(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n toy jets (n, 125, 125, 3) float32 GeV and labels (n,) int (1 = quark-like, 0 = gluon-like,
    alternating)."""
    rng = np.random.default_rng(seed)
    config = CalorimeterConfig()
    labels = np.array([1 - (i % 2) for i in range(n)])
    images = np.stack([calorimeter_image(toy_particles(rng, bool(q)), 0.0, 0.0, config, rng) for q in labels])
    return images, labels
