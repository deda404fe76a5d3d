"""The data layer: jet files (read lazily, validated), coordinate grids, per-channel moments,
normalisers, and the Pythia 8 simulator that writes the same layout.

    from inr_fast.data import JetFile
    with JetFile("jets.h5") as f:
        images = f.read(range(8))  # (8, 125, 125, 3) float32 GeV
"""

from inr_fast.data.grid import physical_grid, pixel_grid
from inr_fast.data.jetfile import DataSummary, JetFile, mean_image, resolve_indices
from inr_fast.data.moments import Moments, channel_moments, merge_moments
from inr_fast.data.normalise import (
    ChannelStandardiser,
    Compose,
    Identity,
    IntensityTransform,
    Normaliser,
    PerJetMaxScaler,
    normaliser_from_dict,
)

__all__ = [
    "ChannelStandardiser",
    "Compose",
    "DataSummary",
    "Identity",
    "IntensityTransform",
    "JetFile",
    "Moments",
    "Normaliser",
    "PerJetMaxScaler",
    "channel_moments",
    "mean_image",
    "merge_moments",
    "normaliser_from_dict",
    "physical_grid",
    "pixel_grid",
    "resolve_indices",
]
