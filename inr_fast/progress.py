"""Progress of long jobs, and the package's log messages.

:class:`Progress` draws a tqdm bar when stderr is a terminal; when it is a file or a pipe it writes a
plain line at most every ``interval`` seconds and one at the end (no cursor codes in logs). Messages go
through the ``inr_fast`` logger; :func:`configure_logging` is what ``--quiet`` / ``--verbose`` set.
"""

from __future__ import annotations

import logging
import sys
import time

from tqdm.auto import tqdm

log = logging.getLogger("inr_fast")


def configure_logging(verbosity: int = 0) -> None:
    """Send ``inr_fast`` messages to stderr as plain lines: verbosity -1 warnings only (``--quiet``),
    0 information (default), 1 and more debug (``--verbose``)."""
    level = logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG
    log.setLevel(level)
    if not any(getattr(h, "_inr_fast", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("inr-fast: %(message)s"))
        handler._inr_fast = True  # type: ignore[attr-defined]
        log.addHandler(handler)
    log.propagate = False


class Progress:
    """Jobs done out of ``total`` (jets, chunks, shapes), with a short status text (e.g. the steps of
    the jets still training). A bar on a terminal, plain lines otherwise, nothing when not ``enabled``.
    Use as a context manager or call :meth:`close`."""

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str = "jet",
        enabled: bool = True,
        initial: int = 0,
        interval: float = 10.0,
        stream=None,
    ):
        self.total, self.desc, self.unit, self.n = int(total), desc, unit, int(initial)
        self.enabled = enabled
        self.stream = sys.stderr if stream is None else stream
        self.interval = interval
        self.status = ""
        self._t0 = self._last = time.monotonic()
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._bar = None
        if enabled and tty:
            self._bar = tqdm(total=self.total, initial=self.n, desc=desc, unit=unit, file=self.stream)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        self._maybe_print()

    def set_status(self, text: str) -> None:
        """A short status shown beside the count (the bar's postfix, or the plain line's tail)."""
        self.status = text
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)
        self._maybe_print()

    def line(self) -> str:
        elapsed = time.monotonic() - self._t0
        pct = f" ({100 * self.n / self.total:.0f} %)" if self.total else ""
        tail = f", {self.status}" if self.status else ""
        return f"{self.desc}: {self.n} of {self.total} {self.unit}s{pct}{tail}, {elapsed:.0f} s"

    def _maybe_print(self, force: bool = False) -> None:
        if not self.enabled or self._bar is not None:
            return
        now = time.monotonic()
        if force or now - self._last >= self.interval:
            self._last = now
            print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.enabled and self.total:
            self._maybe_print(force=True)
        self.enabled = False
