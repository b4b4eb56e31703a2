"""Reading the text files mmusim takes as input: scenarios, Kconfig fragments, traces.

``read_text`` reads at most a limit of bytes, so a huge file, or a device that never ends, is
refused (``TooLarge``) instead of filling the memory, and stops at a NUL byte (``/dev/zero``
at once); a pipe (``mmusim run <(generate)``) still works. When a file is not UTF-8, ``not_utf8`` names the place (``prj.conf:3:
not UTF-8 text: byte 0xff at column 12``) rather than a byte offset into the file.
"""

from __future__ import annotations

import os
import stat

__all__ = ["TooLarge", "not_utf8", "read_text"]


NUL = "a NUL byte"
"""The reason of the ``UnicodeDecodeError`` ``read_text`` raises for a NUL byte."""


class TooLarge(Exception):
    """The file has more than ``limit`` bytes (or never ends)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"larger than {limit:,} bytes")
        self.limit = limit


def read_text(path: str | os.PathLike[str], limit: int) -> str:
    """The file's text, UTF-8, with universal newlines (as ``Path.read_text``). Raises
    ``OSError``, ``UnicodeDecodeError`` (also for a NUL byte, which no text file has: its reason
    is ``NUL``), or ``TooLarge`` past ``limit`` bytes."""
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        if stat.S_ISREG(st.st_mode) and st.st_size > limit:  # refused unread
            raise TooLarge(limit)
        chunks: list[bytes] = []
        size = 0
        while chunk := f.read(1 << 20):  # a pipe or a device: no more than the limit
            nul = chunk.find(b"\0")
            if nul >= 0:  # no text has one: stop here (/dev/zero stops at once)
                data, at = b"".join([*chunks, chunk]), size + nul
                raise UnicodeDecodeError("utf-8", data, at, at + 1, NUL)
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise TooLarge(limit)
    return b"".join(chunks).decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")


def not_utf8(e: UnicodeDecodeError) -> tuple[int, str]:
    """(line, reason) for ``e``, raised decoding a whole file: the 1-based line of the first byte
    that is not UTF-8 and a reason that names the byte and its column."""
    data = bytes(e.object)
    line = data.count(b"\n", 0, e.start) + 1
    column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
    if e.reason == NUL:
        return line, f"not text: a NUL byte at column {column}"
    return line, f"not UTF-8 text: byte {data[e.start]:#04x} at column {column} ({e.reason})"
