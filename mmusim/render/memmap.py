"""The kernel address space as a table (like ``/proc/self/maps``) and as a picture.

``memory_map(k)`` answers "what is at each kernel virtual address, with which rights, and whose is
it?". Rights come from the hardware's point of view -- the present leaves of the page tables
(``PageTables.leaves()``): R/W, U/S and NX of the leaf (the kernel's intermediate entries are
permissive, so the leaf alone decides). Ownership comes from the kernel's bookkeeping: the image
sections, the stack objects in ``.noinit``, the mappings in ``k.regions`` and the virtual-region
allocator. Guard pages are *not present*, so only the regions know where they are.

A memory-mapped stack (the layout of ``include/zephyr/arch/x86/thread_stack.h``) shows as four
rows, and the kernel virtual window as a whole looks like this (low addresses left; ``mmusim map``
lists rows from low to high, the SVG draws high addresses at the top)::

    KERNEL_VM_BASE                                                  KERNEL_VM_BASE + KERNEL_VM_SIZE
    +------+------+--------+------------------+--------- ... -+-------+------+-------+-------+-----
    | text | data | page   | .noinit: stack   | free          | front | priv | stack | rear  | ...
    | r-x  | rw-  | tables | objects (the RAM |               | guard | stack| buf.  | guard |
    |      |      | rw-    | behind the alias)|               |  ---  | rw-  | rw-u  |  ---  |
    +------+------+--------+------------------+--------- ... -+-------+------+-------+-------+-----
                                                              M-PAGE  M      start   M+obj

With ``THREAD_STACK_MEM_MAPPED=n`` there are no aliases: a stack lives only in ``.noinit`` and its
first page is the legacy guard, present and read-only once a thread has been created on it
(``z_x86_set_stack_guard``).

A ``[runtime]`` scenario's process adds its user window: areas with committed and reserved
pages, guard pages, grows-down gaps, coroutine stacks (``mmusim.render.procmap``).

Every row is one maximal run of pages with the same rights and the same owner. Rows are sorted,
do not overlap and cover ``[KERNEL_VM_BASE, KERNEL_VM_BASE + KERNEL_VM_SIZE)`` exactly; anything
mapped outside the window is listed too. Output is deterministic: the same kernel state gives the
same rows, text and SVG bytes.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from xml.sax.saxutils import escape

import attrs

from mmusim.hw import PteFlags
from mmusim.kernel import PAGE, Kernel, KThread, Region, StackObject
from mmusim.render.maprow import MapRow, append_row, rights_of
from mmusim.render.procmap import process_rows
from mmusim.runtime import USER_HI, USER_LO, Process

__all__ = [
    "MapRow",
    "human_size",
    "memory_map",
    "render_svg",
    "render_text",
    "rights_of",
    "rows_json",
]


_RW = int(PteFlags.RW)

# Ranks of ownership notes: where two overlap, the higher rank names the page.
_FREE, _SECTION, _OBJECT, _PART, _REGION = range(5)


@attrs.frozen
class _Note:
    """Ownership of ``[start, end)`` as the kernel's bookkeeping tells it."""

    start: int
    end: int
    rank: int
    kind: str
    owner: str
    subject: str = ""


# -- the map -----------------------------------------------------------------------------------


def memory_map(k: Kernel) -> list[MapRow]:
    """The rows of ``k``'s kernel address space, sorted by address. O((L + N) log L + N * R) for
    L present leaves, N rows and R ownership notes."""
    runs = _rights_runs(k)
    notes = _notes(k)
    lo, hi = k.vm_base, k.vm_base + k.vm_size
    points = {lo, hi}
    for n in notes:
        points.update((n.start, n.end))
    for a, b, _ in runs:
        points.update((a, b))
    cuts = sorted(points)
    rows: list[MapRow] = []
    for a, b in zip(cuts, cuts[1:], strict=False):
        rights = _rights_at(runs, a)
        note = _top_note(notes, a, b)
        inside = lo <= a < hi
        if note is None and not inside and rights == "---":
            continue  # unmapped and nobody's, outside the window: not part of the map
        append_row(rows, _row(a, b, rights, note, inside))
    return _with_process(k, rows)


def _with_process(k: Kernel, rows: list[MapRow]) -> list[MapRow]:
    """``rows`` with a process's user window (``[runtime]``) drawn from its areas
    (``mmusim.render.procmap``) instead of the bare page tables."""
    p = Process.of(k)
    if p is None:
        return rows
    kept = [r for r in rows if not (r.start >= USER_LO and r.end <= USER_HI)]
    return sorted([*kept, *process_rows(k, p)], key=lambda r: r.start)


def _row(a: int, b: int, rights: str, note: _Note | None, inside: bool) -> MapRow:
    present = rights != "---"
    if note is None:
        if present:
            where = "" if inside else ", outside KERNEL_VM"
            return MapRow(a, b, rights, "mapped", f"present, no region recorded{where}")
        return MapRow(a, b, rights, "allocated", "allocated virtual space, nothing mapped yet")
    if note.kind == "free" and present:
        return MapRow(a, b, rights, "mapped", "present in free virtual space (no region)")
    return MapRow(a, b, rights, note.kind, note.owner, note.subject)


def _top_note(notes: list[_Note], a: int, b: int) -> _Note | None:
    best: _Note | None = None
    for n in notes:
        if n.start <= a and b <= n.end and (best is None or n.rank > best.rank):
            best = n
    return best


# -- rights, from the page tables ----------------------------------------------------------------


def _rights_runs(k: Kernel) -> list[tuple[int, int, str]]:
    """Maximal runs of present pages with equal rights, as (start, end, rights), ascending."""
    runs: list[tuple[int, int, str]] = []
    for va, entry, size in k.pt.leaves():
        r = rights_of(entry)
        if runs and runs[-1][1] == va and runs[-1][2] == r:
            runs[-1] = (runs[-1][0], va + size, r)
        else:
            runs.append((va, va + size, r))
    return runs


def _rights_at(runs: list[tuple[int, int, str]], va: int) -> str:
    i = bisect.bisect_right(runs, va, key=lambda run: run[0]) - 1
    if i >= 0 and runs[i][0] <= va < runs[i][1]:
        return runs[i][2]
    return "---"


# -- ownership, from the kernel's bookkeeping ----------------------------------------------------

_SECTIONS = {
    "text": "kernel image: .text",
    "data": "kernel image: .data",
    "page tables": "kernel image: page-table pool",
    ".noinit": "kernel image: .noinit",
}


def _notes(k: Kernel) -> list[_Note]:
    notes = [
        _Note(a, a + size, _FREE, "free", "free virtual space") for a, size in k.vm.free_runs()
    ]
    off = k.virt_offset
    for name, (lo, hi) in k.image.items():
        notes.append(_Note(lo + off, hi + off, _SECTION, "image", _SECTIONS.get(name, name)))
    top = k.vm_base + k.vm_size
    if k.vm.reserved_top:
        what = "K_MEM_VM_RESERVED (DEMAND_PAGING)"
        notes.append(_Note(top - k.vm.reserved_top, top, _SECTION, "reserved", what))
    for obj in (*k.boot_stacks.values(), *k.stacks.values()):
        notes.extend(_object_notes(k, obj))
    for addr in sorted(k.regions):
        notes.extend(_region_notes(k, k.regions[addr]))
    return notes


def _thread_on(k: Kernel, obj: StackObject) -> KThread | None:
    """The thread created on ``obj``: a live one if any, else the last one that was."""
    users = [t for t in k.threads.values() if t.stack is obj and t.generation]
    live = [t for t in users if not t.dead]
    found = live or users
    return found[-1] if found else None


def _isr_cpu(k: Kernel, obj: StackObject) -> int | None:
    for c in k.cpus:
        if c.isr_stack == obj.addr + obj.obj_len:
            return c.id
    return None


def _object_notes(k: Kernel, obj: StackObject) -> list[_Note]:
    """A ``.noinit`` stack object: one row when threads use it through a mapping (it is the RAM
    behind the alias), else split like the stack it is (legacy guard | reserved | buffer)."""
    cpu = _isr_cpu(k, obj)
    t = _thread_on(k, obj)
    if k.mapped_stacks and cpu is None:
        return [_backing_note(k, obj, t)]
    if cpu is not None:
        buffer = _desc(f"interrupt stack of CPU {cpu}", obj.name)
        return _object_parts(k, obj, obj.name, buffer, f"ISR {cpu}")
    if t is None:
        return _object_parts(k, obj, obj.name, f"stack of {obj.name} (unused)", "", "unused")
    status = "dead" if t.dead else ""
    buffer = _desc(f"stack of {t.name}", obj.name, status)
    return _object_parts(k, obj, t.name, buffer, t.name, status)


def _backing_note(k: Kernel, obj: StackObject, t: KThread | None) -> _Note:
    """The object behind mapped-stack aliases: same physical RAM, still mapped here too."""
    phys = obj.addr - k.virt_offset
    aliases = [
        f"{r.owner}'s stack at {r.addr:#x}"
        for _, r in sorted(k.regions.items())
        if r.kind == "stack" and r.phys == phys
    ]
    what = f"backs {', '.join(aliases)}" if aliases else "not mapped"
    subject = t.name if t is not None else ""
    end = obj.addr + obj.obj_len
    return _Note(obj.addr, end, _OBJECT, "stack obj", f"stack object {obj.name} ({what})", subject)


def _object_parts(
    k: Kernel, obj: StackObject, who: str, buffer: str, subject: str, status: str = ""
) -> list[_Note]:
    """An object used in place: [legacy guard] | [privilege stack / reserved] | buffer. ``who``
    names the owner in the descriptions of the first two, ``buffer`` describes the last."""
    geo = k.geometry
    user_capable = obj.user_capable and geo.userspace
    a, rsv, end = obj.addr, geo.reserved(user_capable), obj.addr + obj.obj_len
    notes = []
    pos = a
    if geo.legacy_guard:
        hit = k.pt.lookup(a)
        if hit is not None and not hit[2] & _RW:
            kind, what = "guard", f"legacy guard (read-only) of {who}"
        else:
            kind, what = "reserved", f"legacy guard page of {who}, not armed"
        notes.append(_Note(a, a + PAGE, _PART, kind, _desc(what, status), subject))
        pos += PAGE
    if pos < a + rsv:
        kind, what = _reserved_what(user_capable, geo.privileged_stack_size, who, status)
        notes.append(_Note(pos, a + rsv, _PART, kind, what, subject))
    notes.append(_Note(a + rsv, end, _PART, "stack", buffer, subject))
    return notes


def _reserved_what(user_capable: bool, priv: int, who: str, status: str) -> tuple[str, str]:
    """Kind and description of the reserved area between the object start and the buffer."""
    if user_capable and priv:
        return "priv stack", _desc(f"privilege stack of {who}", status)
    return "reserved", _desc(f"reserved area of {who}", "K_KERNEL_STACK_RESERVED", status)


def _desc(base: str, *notes: str) -> str:
    """``base (a; b)`` with the empty notes left out."""
    shown = [n for n in notes if n]
    return f"{base} ({'; '.join(shown)})" if shown else base


def _region_notes(k: Kernel, r: Region) -> list[_Note]:
    """A mapping of ``k.regions``: guard | stack parts | guard, guard | mapping | guard, or bare."""
    if r.kind == "stack":
        return _stack_region_notes(k, r)
    what = "k_mem_map" if r.kind == "anon" else f"k_mem_map_phys_{r.kind}"
    body = f"{what} {r.owner}"
    if r.phys is not None and r.kind != "anon":
        body += f" (phys {r.phys:#x})"
    notes = [_Note(r.addr, r.addr + r.size, _REGION, r.kind, body, r.owner)]
    if r.guards:
        notes += _guards(r, what, "")
    return notes


def _guards(r: Region, what: str, status: str) -> list[_Note]:
    notes = []
    for lo, hi in r.guard_ranges():
        side = "front" if hi <= r.addr else "rear"
        desc = _desc(f"{side} guard of {r.owner}", what, status)
        notes.append(_Note(lo, hi, _REGION, "guard", desc, r.owner))
    return notes


def _stack_region_notes(k: Kernel, r: Region) -> list[_Note]:
    status = _stack_status(k, r)
    obj = _object_at(k, r.phys)
    user_capable = obj is not None and obj.user_capable and k.geometry.userspace
    rsv = _stack_reserved(k, r, obj)
    buf = _desc(f"stack of {r.owner}", f"alias of {obj.name}" if obj else "", status)
    notes = _guards(r, "thread stack", status)
    if rsv:
        priv = k.geometry.privileged_stack_size
        kind, what = _reserved_what(user_capable, priv, r.owner, status)
        notes.append(_Note(r.addr, r.addr + rsv, _REGION, kind, what, r.owner))
    notes.append(_Note(r.addr + rsv, r.addr + r.size, _REGION, "stack", buf, r.owner))
    return notes


def _stack_reserved(k: Kernel, r: Region, obj: StackObject | None) -> int:
    """``stack_info.start - mapped.addr`` of the thread whose mapping ``r`` is; for a mapping no
    thread points at any more (pending cleanup, leaked), the same from the object's geometry."""
    t = k.threads.get(r.owner)
    if t is not None and t.stack_info.mapped.addr == r.addr:
        return t.stack_info.start - r.addr
    if obj is None:
        return 0
    return k.geometry.reserved(obj.user_capable and k.geometry.userspace)


def _object_at(k: Kernel, phys: int | None) -> StackObject | None:
    for obj in (*k.boot_stacks.values(), *k.stacks.values()):
        if phys is not None and obj.addr - k.virt_offset == phys:
            return obj
    return None


def _stack_status(k: Kernel, r: Region) -> str:
    """Why a stack mapping is still here when its thread no longer is."""
    if k.cleanup.stack_addr == r.addr:
        return "dead, unmap pending"
    t = k.threads.get(r.owner)
    if t is None or t.stack_info.mapped.addr != r.addr:
        return "no thread points at it"  # leaked (SIM_ABORT_CLEANUP_LEAK), or being set up
    return "dead, still mapped" if t.dead else ""


# -- text --------------------------------------------------------------------------------------


def human_size(n: int) -> str:
    """``4096`` -> ``4K``, ``0x200000`` -> ``2M``; exact (``0x7e9000`` -> ``8100K``)."""
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return f"{n}B"


def _addr_digits(rows: Iterable[MapRow]) -> int:
    return 16 if any(r.end > 1 << 32 for r in rows) else 8


def render_text(rows: list[MapRow]) -> str:
    """A ``/proc/self/maps``-like table: range, size, rights, kind, description; one row per run."""
    digits = _addr_digits(rows)
    sizes = [human_size(r.size) for r in rows]
    size_w = max([4, *map(len, sizes)])
    kind_w = max([4, *(len(r.kind) for r in rows)])
    rng_w = 2 * (digits + 2) + 1
    lines = [f"{'START-END':<{rng_w}}  {'SIZE':>{size_w}}  PERM  {'KIND':<{kind_w}}  OWNER"]
    for r, size in zip(rows, sizes, strict=True):
        rng = f"0x{r.start:0{digits}x}-0x{r.end:0{digits}x}"
        lines.append(f"{rng}  {size:>{size_w}}  {r.rights:<4}  {r.kind:<{kind_w}}  {r.owner}")
    return "\n".join(lines) + "\n"


def rows_json(rows: list[MapRow]) -> list[dict[str, int | str]]:
    """The rows as JSON-ready objects (integers for addresses and sizes)."""
    return [
        {
            "start": r.start,
            "end": r.end,
            "size": r.size,
            "rights": r.rights,
            "kind": r.kind,
            "owner": r.owner,
            "subject": r.subject,
        }
        for r in rows
    ]


# -- SVG ---------------------------------------------------------------------------------------

# Band heights grow with log2(pages), clamped: a 4K guard stays visible, 8M of free space does not
# swamp the picture. Columns: address | band | size | rights | description.
_MIN_H, _PER_DOUBLING, _MAX_H = 20, 6, 84
_ADDR_X, _BAND_X, _BAND_W, _TOP = 8, 150, 240, 60
_SIZE_X, _RIGHTS_X, _OWNER_X = 446, 456, 496  # size is right-aligned at _SIZE_X
_GAP_H = 16  # a break between rows that do not touch (mappings outside the window)
_CHAR_W = 7  # monospace 11px, rounded up: for the width of the picture
_LEGEND_LINE = 18

_KIND_FILL = {
    "free": "#f0f0f0",
    "allocated": "#fdd0a2",
    "mapped": "#fdae6b",
    "reserved": "#d9d9d9",
    "gap": "#fcbba1",
}
_SECTION_FILL = {
    "kernel image: .text": "#6baed6",
    "kernel image: .data": "#9ecae1",
    "kernel image: page-table pool": "#c6dbef",
    "kernel image: .noinit": "#deebf7",
}
_PALETTE = (
    "#66c2a5", "#fc8d62", "#8da0cb", "#e78ac3", "#a6d854", "#ffd92f", "#e5c494",
    "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d",
)  # fmt: skip
_SUBJECT_OPACITY = {"stack obj": "0.35", "priv stack": "0.6", "reserved": "0.45", "free": "0.15"}

_STYLE = (
    "text{font-family:monospace;font-size:11px;fill:#222222}"
    ".addr{fill:#444444}"
    ".size{text-anchor:end}"
    ".kind{text-anchor:middle}"
    ".guard-label{text-anchor:middle;font-weight:bold;fill:#b2182b}"
    ".title{font-size:14px;font-weight:bold}"
)


def render_svg(rows: list[MapRow], title: str) -> str:
    """A standalone SVG: one band per row, high addresses at the top, guard pages hatched red and
    labelled GUARD (one ``GUARD`` text per guard row), free space grey, stacks coloured per owner.
    Deterministic: the same rows and title give the same bytes."""
    digits = _addr_digits(rows)
    colours = _colours(rows)
    body: list[str] = []
    y = _TOP
    below: int | None = None  # start of the band drawn last (the one above this one)
    for r in reversed(rows):
        if below is not None and r.end != below:
            mid = _BAND_X + _BAND_W // 2
            body.append(f'<text x="{mid}" y="{y + 11}" class="kind">...</text>')
            y += _GAP_H
        if below is None or r.end != below:
            body.extend(_boundary(r.end, y, digits))
        h = _band_height(r.size)
        body.extend(_band(r, y, h, colours))
        y += h
        body.extend(_boundary(r.start, y, digits))
        below = r.start
    longest = max([len(r.owner) for r in rows] or [0])
    width = max(_OWNER_X + longest * _CHAR_W + 10, len(title) * 9 + 20)
    legend: tuple[tuple[str, str, str], ...] = _LEGEND
    if any(r.kind in _PROCESS_KINDS for r in rows):  # a [runtime] process's rows
        legend += _PROCESS_LEGEND
    height = y + 24 + _LEGEND_LINE * len(legend) + 8
    head = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">',
        f"<title>{escape(title)}</title>",
        *_defs(),
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{_ADDR_X}" y="22" class="title">{escape(title)}</text>',
        f'<text x="{_ADDR_X}" y="40">high addresses at the top; not to scale: a band\'s height '
        "grows with log2 of its size</text>",
    ]
    return "\n".join([*head, *body, *_legend(y + 24, legend), "</svg>"]) + "\n"


def _band_height(size: int) -> int:
    pages = max(1, size // PAGE)
    return min(_MAX_H, _MIN_H + int(_PER_DOUBLING * math.log2(pages)))


def _colours(rows: list[MapRow]) -> dict[str, str]:
    """One palette colour per subject, in order of first appearance (deterministic)."""
    out: dict[str, str] = {}
    for r in rows:
        if r.subject and r.subject not in out:
            out[r.subject] = _PALETTE[len(out) % len(_PALETTE)]
    return out


def _fill(r: MapRow, colours: dict[str, str]) -> tuple[str, str]:
    """(fill, fill-opacity) of a band: guards hatched, the image by section, owned rows by
    owner (paler for an owner's .noinit object and reserved parts), the rest by kind."""
    if r.kind == "guard":
        return "url(#guard-hatch)", "1"
    if r.kind == "gap":
        return _KIND_FILL["gap"], "1"
    if r.kind == "image":
        return _SECTION_FILL.get(r.owner, "#9ecae1"), "1"
    if r.subject:
        return colours[r.subject], _SUBJECT_OPACITY.get(r.kind, "1")
    return _KIND_FILL.get(r.kind, "#ffffff"), "1"


def _boundary(addr: int, y: int, digits: int) -> list[str]:
    """The address label and tick at the line between two bands."""
    return [
        f'<line x1="{_BAND_X - 14}" y1="{y}" x2="{_BAND_X}" y2="{y}" stroke="#888888"/>',
        f'<text x="{_ADDR_X}" y="{y + 4}" class="addr">0x{addr:0{digits}x}</text>',
    ]


def _band(r: MapRow, y: int, h: int, colours: dict[str, str]) -> list[str]:
    fill, opacity = _fill(r, colours)
    mid = y + h // 2 + 4
    cx = _BAND_X + _BAND_W // 2
    if r.kind == "guard":
        stroke = 'stroke="#b2182b" stroke-width="2"'
        label = f'<text x="{cx}" y="{mid}" class="guard-label">GUARD</text>'
    else:
        stroke = 'stroke="#555555"'
        label = f'<text x="{cx}" y="{mid}" class="kind">{escape(r.kind)}</text>'
    return [
        f'<g class="row {_css(r.kind)}">',
        f'<rect x="{_BAND_X}" y="{y}" width="{_BAND_W}" height="{h}" fill="{fill}" '
        f'fill-opacity="{opacity}" {stroke}/>',
        label,
        f'<text x="{_SIZE_X}" y="{mid}" class="size">{human_size(r.size)}</text>',
        f'<text x="{_RIGHTS_X}" y="{mid}">{escape(r.rights)}</text>',
        f'<text x="{_OWNER_X}" y="{mid}">{escape(r.owner)}</text>',
        "</g>",
    ]


def _css(kind: str) -> str:
    return "kind-" + kind.replace(" ", "-")


def _defs() -> list[str]:
    return [
        "<defs>",
        '<pattern id="guard-hatch" width="8" height="8" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)">',
        '<rect width="8" height="8" fill="#fde0dd"/>',
        '<line x1="0" y1="0" x2="0" y2="8" stroke="#d6604d" stroke-width="3"/>',
        "</pattern>",
        "</defs>",
        f"<style>{_STYLE}</style>",
    ]


_LEGEND = (
    ("url(#guard-hatch)", "1", "guard page: not present (legacy: read-only), an overflow faults"),
    ("#f0f0f0", "1", "free kernel virtual space"),
    ("#6baed6", "1", "kernel image: .text, .data, page-table pool"),
    ("#66c2a5", "1", "a stack or mapping: one colour per owner"),
    ("#66c2a5", "0.45", "its privilege stack / reserved area; paler still: its .noinit object"),
)


# What a process's rows add to the picture (mmusim.render.procmap), shown when it has some.
_PROCESS_KINDS = ("committed", "gap")
_PROCESS_LEGEND = (
    ("#66c2a5", "1", "a process's area: committed pages (a frame each); paler: reserved"),
    ("#fcbba1", "1", "stack guard gap below a growsdown area: a touch is SIGSEGV"),
)


def _legend(y: int, items: tuple[tuple[str, str, str], ...] = _LEGEND) -> list[str]:
    out = []
    for i, (fill, opacity, text) in enumerate(items):
        yy = y + _LEGEND_LINE * i
        out.append(
            f'<rect x="{_BAND_X}" y="{yy}" width="24" height="12" fill="{fill}" '
            f'fill-opacity="{opacity}" stroke="#555555"/>'
        )
        out.append(f'<text x="{_BAND_X + 32}" y="{yy + 10}">{escape(text)}</text>')
    return out
