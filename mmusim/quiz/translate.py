"""``mmusim quiz translate``: a seeded page-table problem -- tables in a memory image, control
bits, a list of accesses -- and its worked answer, computed by the walker itself.

A problem is random but sensible: a handful of regions of the kinds an RTOS maps (kernel text and
data, a thread stack between two guard pages, a user page, a read-only user page, at level 3 a
large page), each access aimed inside a region, at its guard, or at a hole, read, write or
execute, at CPL 0 or 3. ``level`` sets what is in play: 1 -- present and not-present, R/W and U/S
with CR0.WP set; 2 -- also XD (EFER.NXE), CR0.WP clear, SMEP; 3 -- also SMAP with EFLAGS.AC and
large pages (CR4.PSE in 32-bit paging).

The answers are the walker's (``mmusim.hw.translate``): the accesses run in order on a copy of
the image, each a fresh walk (no TLB), A/D bits carried from one to the next -- exactly what
``mmusim translate`` does on the image ``--image-out`` writes, which is the image before any access.
The same (seed, mode, level) gives the same problem, byte for byte, on every machine: the one
source of randomness is ``random.Random`` seeded with a string of the three.
"""

from __future__ import annotations

import random
from typing import Any

import attrs

from mmusim.hw import (
    MODES,
    Access,
    ControlState,
    PageFault,
    PageTables,
    PhysMem,
    PteFlags,
    Result,
    Translation,
    translate,
)
from mmusim.render.walk import render_walk

__all__ = ["LEVELS", "Question", "TranslateProblem", "translate_problem"]

LEVELS = (1, 2, 3)
IMAGE_SIZE = 0x4_0000  # 256 KiB: tables from 0x1000, data frames from 0x20000
_ACCESS = {"r": Access.READ, "w": Access.WRITE, "x": Access.EXEC}
_P, _RW, _US, _NX = 1, int(PteFlags.RW), int(PteFlags.US), int(PteFlags.NX)
# Where regions may start: 4 MiB slots below 1 GiB, so every mode (and a 4 MiB page) fits.
_SLOTS = tuple(range(0x0040_0000, 0x4000_0000, 0x0040_0000))


@attrs.frozen
class Question:
    vaddr: int
    access: str  # "r", "w" or "x"
    cpl: int  # 0 or 3


@attrs.frozen
class Region:
    """A mapped range of the problem: what it is, where, its flags (beyond P)."""

    what: str
    va: int
    size: int
    pa: int
    flags: int
    page_size: int = 4096


@attrs.define
class TranslateProblem:
    """One problem: the image (before any access), CR3 and control bits, the regions that were
    mapped (for the text; the answer never reads them), the questions, and the walker's answers
    with the memory after each access (for the worked walk's A/D notes)."""

    seed: int
    mode: str
    level: int
    ctl: ControlState
    image: bytes
    regions: list[Region]
    questions: list[Question]
    answers: list[Result] = attrs.Factory(list)
    walks: list[str] = attrs.Factory(list)

    @property
    def control(self) -> dict[str, bool]:
        c = self.ctl
        return {"wp": c.wp, "nxe": c.nxe, "smep": c.smep, "smap": c.smap, "ac": c.ac,
                "pse": c.pse}  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        """The object ``mmusim quiz translate --json`` prints."""
        return {
            "mode": self.mode,
            "cr3": self.ctl.cr3,
            "control": self.control,
            "questions": [
                {"vaddr": q.vaddr, "access": q.access, "cpl": q.cpl, "answer": _answer(res)}
                for q, res in zip(self.questions, self.answers, strict=True)
            ],
        }

    def text(self) -> str:
        """The problem as a student gets it: mode, CR3, control bits, the tables' present
        entries, the accesses."""
        on = [name.upper() for name, value in self.control.items() if value]
        lines = [
            f"mmusim quiz translate --seed {self.seed} --mode {self.mode} --level {self.level}",
            "",
            f"Paging mode {self.mode}, CR3 = {self.ctl.cr3:#x}; set: {', '.join(on) or 'none'}"
            " (CR0.WP, EFER.NXE, CR4.SMEP/SMAP/PSE, EFLAGS.AC; the rest are clear).",
            "The page tables (every present entry; addresses are physical):",
        ]
        lines += _table_dump(self)
        lines += ["", "For each access, in order (A/D bits carry over, no TLB): the physical",
                  "address, or the fault -- vector, error code, CR2.", ""]  # fmt: skip
        width = 18 if self.mode == "ia32e" else 10
        for i, q in enumerate(self.questions, 1):
            what = {"r": "read", "w": "write", "x": "execute"}[q.access]
            lines.append(f"  {i:>2}. {what:<7} at {q.vaddr:#0{width}x}, CPL {q.cpl}")
        return "\n".join(lines) + "\n"

    def answers_text(self) -> str:
        """The worked answers: each access's walk, level by level, as ``mmusim walk`` prints it."""
        out = ["", "Answers (each walk as `mmusim walk` prints it):"]
        for i, walk in enumerate(self.walks, 1):
            out += ["", f"{i}.", walk]
        return "\n".join(out) + "\n"


def _answer(res: Result) -> dict[str, Any]:
    if isinstance(res, Translation):
        return {"ok": True, "paddr": res.paddr}
    assert isinstance(res, PageFault), res  # the problems use canonical addresses only
    return {"ok": False, "vector": 14, "error_code": res.error_code, "cr2": res.cr2}


def _table_dump(p: TranslateProblem) -> list[str]:
    """Every present entry of every table the walks can reach, by level, in address order."""
    mem = PhysMem.from_image(p.image)
    plan = p.ctl.plan
    esize = p.ctl.mode.entry_size
    out: list[str] = []

    def read(addr: int) -> int:
        return mem.read_u64(addr) if esize == 8 else mem.read_u32(addr)

    def dump(table: int, level: int, count: int) -> None:
        lp = plan.levels[level]
        name = lp.level.entry_name
        for i in range(count):
            e = read(table + i * esize)
            if not e & _P:
                continue
            leaf = level == len(plan.levels) - 1 or bool(lp.large_size and e & int(PteFlags.PS))
            flags = " ".join(n for b, n in ((_RW, "RW"), (_US, "US"), (int(PteFlags.PS), "PS"),
                                            (_NX, "XD")) if e & b)  # fmt: skip
            out.append(f"  {name:<6}{i:>3} @ {table + i * esize:#07x} = {e:#0{2 + 2 * esize}x}"
                       f"  {'leaf' if leaf else 'table'}; {flags or '-'}")  # fmt: skip
            if not leaf:
                dump(e & lp.addr_mask, level + 1, 4096 // esize)

    top = plan.levels[0]
    dump(p.ctl.root, 0, 4 if top.level.register else 4096 // esize)
    return out


def translate_problem(seed: int, mode: str = "ia32e", level: int = 1) -> TranslateProblem:
    """The problem of ``seed`` in paging ``mode`` ("32", "pae", "ia32e") at ``level`` (1-3)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r} (allowed: 32, pae, ia32e)")
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r} (allowed: 1, 2, 3)")
    rng = random.Random(f"mmusim-quiz/translate/{mode}/{level}/{seed}")
    has_nx = mode != "32"
    nxe = has_nx and (level >= 2 and rng.random() < 0.8)
    pse = mode == "32" and level >= 3
    smap = level >= 3 and rng.random() < 0.6
    ctl = ControlState.for_mode(
        mode,
        cr3=0x1000,
        wp=level == 1 or rng.random() < 0.6,
        nxe=nxe,
        smep=level >= 2 and rng.random() < 0.5,
        smap=smap,
        ac=smap and rng.random() < 0.4,  # EFLAGS.AC matters only with SMAP
        pse=pse,
    )
    mem = PhysMem(IMAGE_SIZE)
    frames = iter(range(0x1000, 0x2_0000, 0x1000))
    data = iter(range(0x2_0000, IMAGE_SIZE, 0x1000))
    pt = PageTables(mem, MODES[mode], lambda: next(frames))
    nx = _NX if nxe else 0
    slots = rng.sample(_SLOTS, 6)
    regions: list[Region] = []

    def region(what: str, pages: int, flags: int, guard: bool = False) -> None:
        base = slots.pop() + (0x1000 if guard else 0) + rng.randrange(0, 64) * 0x1000
        for i in range(pages):
            pa = next(data)
            pt.map(base + i * 0x1000, pa, flags)
            mem.write(pa, f"{what} page {i}\0".encode())
        regions.append(Region(what, base, pages * 0x1000, -1, flags))

    region("kernel text", 1, 0)
    region("kernel data", 1, _RW | nx)
    region("thread stack", 2, _RW | nx, guard=True)  # a guard page below and above
    region("user page", 1, _US | _RW | nx)
    if level >= 2:
        region("user read-only page", 1, _US | (nx if rng.random() < 0.5 else 0))
    if level >= 3 and (mode != "32" or pse):
        size = 0x40_0000 if mode == "32" else 0x20_0000
        va = slots.pop()
        flags = _RW | nx | (_US if rng.random() < 0.5 else 0)
        pt.map(va, 0x0, flags, page_size=size)  # a direct map of low memory
        regions.append(Region("large page (direct map)", va, size, 0, flags, size))
    pt._check()
    image = mem.to_image(IMAGE_SIZE)
    questions = [_question(rng, regions, level) for _ in range(6 + 2 * level)]
    problem = TranslateProblem(seed, mode, level, ctl, image, regions, questions)
    work = PhysMem.from_image(image)
    for q in questions:
        res = translate(work, ctl, q.vaddr, _ACCESS[q.access], q.cpl)
        problem.answers.append(res)
        problem.walks.append(render_walk(work, ctl, q.vaddr, _ACCESS[q.access], q.cpl, res))
    return problem


def _question(rng: random.Random, regions: list[Region], level: int) -> Question:
    r = rng.choice(regions)
    where = rng.random()
    if where < 0.7:  # inside
        va = r.va + rng.randrange(0, r.size // 8) * 8
    elif where < 0.85:  # the page below (a guard, for the stack)
        va = r.va - 0x1000 + rng.randrange(0, 512) * 8
    else:  # the page above
        va = r.va + r.size + rng.randrange(0, 512) * 8
    access = rng.choice("rrwwx" if level >= 2 else "rrww")
    cpl = 3 if ("user" in r.what or rng.random() < 0.3) and rng.random() < 0.8 else 0
    return Question(va, access, cpl)
