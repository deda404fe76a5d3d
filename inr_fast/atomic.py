"""Atomic outputs: write to a temporary file beside the target, then move it into place.

A reader (or a resumed run) sees the old file or the complete new one, never a part; an interrupted
write leaves no temporary file behind; the result gets the usual permissions (0666 less the umask),
not ``mkstemp``'s 0600; and an existing target is replaced only when asked.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from inr_fast.errors import ConfigError, OutputExistsError


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, overwrite: bool = False, mkdir: bool = True) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; on a clean exit it becomes ``path``.

    Without ``overwrite`` an existing ``path`` raises :class:`OutputExistsError`, before any work
    and again at the end (a hard link refuses atomically if the file appeared meanwhile). Any
    exception, KeyboardInterrupt included, removes the temporary file.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder; expected a file name")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: already exists; pass --overwrite to replace it")
    try:
        if mkdir:
            path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise ConfigError(f"{path}: cannot write into folder {path.parent} ({err.strerror or err})") from None
    os.close(fd)
    tmp = Path(name)
    try:
        os.chmod(tmp, _umask_mode())
        yield tmp
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise OutputExistsError(f"{path}: already exists; pass --overwrite to replace it") from None
            except OSError:  # file systems without hard links
                if path.exists():
                    raise OutputExistsError(
                        f"{path}: already exists; pass --overwrite to replace it"
                    ) from None
                os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, overwrite: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (fsync'd before the rename)."""
    with atomic_output(path, overwrite=overwrite) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return Path(path)


def check_writable(path: str | os.PathLike, what: str) -> Path:
    """A clear ConfigError unless the folder ``path`` exists and is writable, or can be created (its
    nearest existing parent is a writable folder); returns ``path``."""
    path = Path(path)
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{what} {path}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path}: cannot write into {probe} (permission denied)")
    return path
