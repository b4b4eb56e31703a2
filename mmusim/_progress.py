"""A status line redrawn in place on a terminal: the progress display of long runs.

Drawn by tqdm, the optional extra ``mmusim[progress]``; callers ask ``available()`` first and show
nothing without it. Used by the command line (``mmusim.cli.progress``: ``run``, ``explore``) and
by the pytest plugin (``mmusim.testing.plugin``: property campaigns). Wall-clock time is read only
here, for the display, never by the model.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, TextIO

__all__ = ["REFRESH", "StatusLine", "available", "isatty"]

REFRESH = 0.1  # seconds between two redraws


def available() -> bool:
    """Whether tqdm is installed (``pip install 'mmusim[progress]'``)."""
    return importlib.util.find_spec("tqdm") is not None


def isatty(stream: Any) -> bool:
    """``stream.isatty()``, False for a stream without one or a closed file."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class StatusLine:
    """One line on ``stream``, rewritten in place by ``show`` at most every ``REFRESH`` seconds
    and erased by ``close``; with ``total``, a bar of ``n`` out of it is drawn too. Every write
    happens inside a fresh ``around()`` (the pytest plugin suspends output capturing there)."""

    def __init__(
        self,
        stream: TextIO,
        first: str,
        *,
        total: int | None = None,
        around: Callable[[], AbstractContextManager[Any]] = nullcontext,
    ) -> None:
        from tqdm import tqdm  # the optional extra: imported only when a line is shown

        self.start = time.monotonic()
        self.next_draw = 0.0
        self.around = around
        fmt = "{desc}  {bar:20} {elapsed}" if total else "{desc}  {elapsed}"
        with self.around():
            self.bar = tqdm(total=total, file=stream, leave=False, bar_format=fmt,
                            dynamic_ncols=True, desc=first)  # fmt: skip

    def due(self) -> bool:
        """Whether a redraw is due (at most one every ``REFRESH`` seconds)."""
        return time.monotonic() >= self.next_draw

    def elapsed(self) -> float:
        return max(time.monotonic() - self.start, 1e-9)

    def show(self, text: str, n: int | None = None) -> None:
        """Redraw with ``text`` (and ``n`` on the bar)."""
        self.next_draw = time.monotonic() + REFRESH
        self.bar.set_description_str(text, refresh=False)
        if n is not None:
            self.bar.n = n
        with self.around():
            self.bar.refresh()

    def close(self) -> None:
        with self.around():
            self.bar.close()
