"""One row of ``mmusim map`` (``MapRow``), shared by the kernel's rows (``memmap``) and a
process's (``procmap``), and the helpers both use to make rows."""

from __future__ import annotations

import attrs

from mmusim.hw import PteFlags

__all__ = ["MapRow", "append_row", "rights_of"]

_RW = int(PteFlags.RW)
_US = int(PteFlags.US)
_NX = int(PteFlags.NX)


@attrs.frozen
class MapRow:
    """One run of the address space: ``[start, end)``, its rights (``"r-x"``, ``"rw-"``,
    ``"---"`` = not present; a trailing ``"u"`` = user-accessible, ``"rw-u"``), a short ``kind``
    (guard, priv stack, reserved, stack, stack obj, image, anon, bare, mapped, allocated, free),
    a description ``owner`` and the ``subject`` it belongs to (thread or mapping name, for colour)."""

    start: int
    end: int
    rights: str
    kind: str
    owner: str
    subject: str = ""

    @property
    def size(self) -> int:
        return self.end - self.start


def rights_of(entry: int) -> str:
    """``"rw-"`` etc. of a present leaf entry, with ``"u"`` appended when U/S is set."""
    r = "r" + ("w" if entry & _RW else "-") + ("-" if entry & _NX else "x")
    return r + ("u" if entry & _US else "")


def append_row(rows: list[MapRow], row: MapRow) -> None:
    """Add ``row``, merging it into the previous one when they continue each other."""
    if rows:
        last = rows[-1]
        same = (last.rights, last.kind, last.owner, last.subject) == (
            row.rights,
            row.kind,
            row.owner,
            row.subject,
        )
        if same and last.end == row.start:
            rows[-1] = attrs.evolve(last, end=row.end)
            return
    rows.append(row)
