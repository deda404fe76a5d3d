"""Exceptions that carry one clear, user-facing message (the CLI prints them without a traceback)."""


class InrFastError(Exception):
    """Base class: the message names what was wrong and where (file, jet index, expectation)."""


class DataError(InrFastError, ValueError):
    """Bad input data: missing file, not HDF5, missing key, wrong shape or dtype, NaN/Inf, bad index."""


class OutputExistsError(InrFastError, FileExistsError):
    """An output already exists and --overwrite was not given."""


class ConfigError(InrFastError, ValueError):
    """An invalid or unknown configuration key or value."""
