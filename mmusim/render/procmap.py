"""The process's part of the map: a ``[runtime]`` scenario's areas, as ``MapRow``s.

``memory_map(k)`` (``mmusim.render.memmap``) adds these rows when the kernel has a process
(``Process.of(k)``), in place of the anonymous "present, no region recorded" rows the page tables
alone would give for the user window. Each area (``mmusim.runtime.Area``) becomes runs of pages
in the same state, each run one row:

=============  ==================================================================================
kind           what the pages are
=============  ==================================================================================
committed      hold a frame (present, with the rights of their PTE)
reserved       address space of the area with no frame yet: the first touch commits one
guard          refuse every access: PROT_NONE (a protection, or a reservation left inaccessible),
               a ``MADV_GUARD_INSTALL`` marker, or Haiku's ``B_STACK_AREA`` guard
gap            the stack guard gap below a growsdown area: a touch there is SIGSEGV, the area
               never grows into it (its lower end is the area's grows-down boundary)
free           unmapped user address space between areas (below a growsdown area: its room to
               grow, down to the gap or to RLIMIT_STACK)
=============  ==================================================================================

The owner text names the area as ``/proc/self/maps`` would (``'stack' rw-p growsdown``) and
what else holds the pages: a coroutine's stack or guard page, a thread's alternate signal stack.
The subject (the SVG's colour) is the area's name, or the coroutine's.
"""

from __future__ import annotations

from mmusim.kernel import PAGE, Kernel
from mmusim.render.maprow import MapRow, append_row, rights_of
from mmusim.runtime import Area, Process, Prot

__all__ = ["process_rows"]


def process_rows(k: Kernel, p: Process) -> list[MapRow]:
    """The rows of ``p``'s areas, the gaps below its growsdown areas and the holes between
    areas, sorted by address."""
    rows: list[MapRow] = []
    areas = list(p.space)
    prev: Area | None = None
    for area in areas:
        rows.extend(_below(p, prev, area))
        for a, b in _runs(area):
            append_row(rows, _area_row(k, p, area, a, b))
        prev = area
    return rows


def _below(p: Process, prev: Area | None, area: Area) -> list[MapRow]:
    """The rows between ``prev`` (None: the lowest area) and ``area``."""
    hole_lo = prev.end if prev is not None else None
    if not area.growsdown:
        if hole_lo is None or hole_lo == area.start:
            return []
        return [MapRow(hole_lo, area.start, "---", "free", "free user address space")]
    out: list[MapRow] = []
    gap = p.space.flavour.stack_guard_gap
    limit = max(area.end - p.space.rlimit_stack, p.space.lo)  # RLIMIT_STACK's lowest start
    room_lo = limit if hole_lo is None else max(limit, min(hole_lo + gap, area.start))
    if hole_lo is not None and hole_lo < room_lo and gap:
        gap_hi = min(hole_lo + gap, area.start)
        out.append(
            MapRow(
                hole_lo,
                gap_hi,
                "---",
                "gap",
                f"stack guard gap below {area.label} ({gap // PAGE} pages): it never grows here, "
                "a touch is SIGSEGV",
                area.name,
            )
        )
        if gap_hi < room_lo:
            out.append(MapRow(gap_hi, room_lo, "---", "free", "free user address space"))
    if room_lo < area.start:
        why = "RLIMIT_STACK" if room_lo == limit else "the gap"
        out.append(
            MapRow(
                room_lo,
                area.start,
                "---",
                "free",
                f"room for {area.label} to grow down ({why} stops it at {room_lo:#x})",
                area.name,
            )
        )
    elif hole_lo is not None and hole_lo < area.start and not out:
        out.append(MapRow(hole_lo, area.start, "---", "free", "free user address space"))
    return out


def _runs(area: Area) -> list[tuple[int, int]]:
    """``area`` cut where any page's state may change."""
    cuts = {area.start, area.end}
    if area.guard_size:
        cuts.add(area.start + area.guard_size)
    for pages in (area.committed, area.guards, area.page_prot):
        for page in pages:
            cuts.update((page, page + PAGE))
    points = sorted(c for c in cuts if area.start <= c <= area.end)
    return list(zip(points, points[1:], strict=False))


def _area_row(k: Kernel, p: Process, area: Area, a: int, b: int) -> MapRow:
    """The row of ``[a, b)``, uniform pages of ``area``."""
    name = area.label if area.name else "anonymous area"
    flags = " growsdown" if area.growsdown else ""
    prot = area.prot_at(a)
    what = f"{name} {prot.letters()}p{flags}"
    rights = "---"
    if area.in_guard(a):
        kind, state = "guard", "B_STACK_AREA guard (faults are refused)"
    elif a in area.guards:
        kind, state = "guard", "guard marker (MADV_GUARD_INSTALL)"
    elif prot == Prot.NONE:
        kind, state = "guard", "PROT_NONE: any access faults"
    elif a in area.committed:
        kind, state = "committed", "committed"
        leaf = k.pt.lookup(a)
        if leaf is not None:
            rights = rights_of(leaf[2])
    else:
        kind, state = "reserved", "reserved, no frame until touched"
    notes, subject = _holders(p, a, b)
    if area.growsdown and a == area.start:
        notes.append(f"grows down from {area.start:#x}")
    owner = f"{what}: {state}" + "".join(f"; {n}" for n in notes)
    return MapRow(a, b, rights, kind, owner, subject or area.name)


def _holders(p: Process, a: int, b: int) -> tuple[list[str], str]:
    """What else holds ``[a, b)``: coroutine stacks and guards, alternate signal stacks; and the
    subject to colour it by (a coroutine's name, or "")."""
    notes: list[str] = []
    subject = ""
    for co in p.coroutines.values():
        if co.guard is not None and co.guard[0] <= a and b <= co.guard[1]:
            notes.append(f"guard page of coroutine {co.name}")
            subject = co.name
        elif co.lo <= a and b <= co.hi:
            notes.append(f"stack of coroutine {co.name}" + (" (ended)" if co.done else ""))
            subject = co.name
    for thread, st in p.threads.items():
        alt = st.altstack
        if alt is not None and alt.sp < b and a < alt.sp + alt.size:
            notes.append(f"alternate signal stack of {thread}")
    return notes, subject
