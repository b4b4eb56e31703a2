"""Where a file stops being UTF-8: the line and column of the first byte that does not decode.

The scenario, Kconfig fragment and trace loaders read text files as UTF-8; when one is not, their
error names the place (``prj.conf:3: not UTF-8 text: byte 0xff at column 12``) rather than a byte
offset into the file.
"""

from __future__ import annotations

__all__ = ["not_utf8"]


def not_utf8(e: UnicodeDecodeError) -> tuple[int, str]:
    """(line, reason) for ``e``, raised decoding a whole file: the 1-based line of the first byte
    that is not UTF-8 and a reason that names the byte and its column."""
    data = bytes(e.object)
    line = data.count(b"\n", 0, e.start) + 1
    column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
    return line, f"not UTF-8 text: byte {data[e.start]:#04x} at column {column} ({e.reason})"
