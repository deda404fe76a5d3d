"""Constants of the jet-image HDF5 layout (the CMS Open Data quark/gluon file, and what we write).

Datasets: ``X_jets`` (N, 125, 125, 3) float32 channels-last, channel order [ECAL, HCAL, Tracks],
energies in GeV; ``y`` (N,) label (quark = 1, gluon = 0 in files we write); ``m0`` (N,) jet mass;
``pt`` (N,) jet pT. Image axis 0 is eta (rows), axis 1 is phi (columns); pixel pitch is one ECAL
crystal, 0.0174 in eta and phi; HCAL towers cover 5 x 5 crystals.
"""

IMAGE_SIZE = 125
N_CHANNELS = 3
CHANNELS = ("ECAL", "HCAL", "Tracks")
PITCH = 0.0174
HCAL_TOWER = 5
KEY_IMAGES = "X_jets"
KEY_LABEL = "y"
KEY_MASS = "m0"
KEY_PT = "pt"
REQUIRED_KEYS = (KEY_IMAGES, KEY_LABEL, KEY_MASS, KEY_PT)
QUARK, GLUON = 1, 0
#: label value -> name (the convention of the files we write; the public file's is not certain).
LABEL_NAMES = {QUARK: "quark", GLUON: "gluon"}


def label_name(label: int) -> str:
    """'quark' (1), 'gluon' (0), else 'label k'."""
    return LABEL_NAMES.get(int(label), f"label {int(label)}")
