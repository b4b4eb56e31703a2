"""``mmusim quiz tlb``: a page-table entry changes while two CPUs may hold it in their TLBs --
with no invalidation, with ``invlpg`` on the CPU that changed it only, or with a shootdown (an
``invlpg`` on every CPU). Which CPU then uses a stale translation?

The story is run on the machine itself (``mmusim.hw.Cpu`` with a ``Tlb`` each, one set of page
tables): the answers are what the CPUs do, not a rule of thumb. A translation is *stale* when the
access went through although a fresh walk of the tables as they are now would give another
physical address or a fault (Intel SDM 4.10.4: a CPU may use a cached translation until it is
invalidated). Note what the model does for a write through a cached entry whose D bit is clear:
the CPU walks again to set D (SDM 4.8), and the walk sees the new entry.
"""

from __future__ import annotations

import random
from typing import Any

import attrs

from mmusim.hw import (
    MODES,
    Access,
    ControlState,
    Cpu,
    PageTables,
    PhysMem,
    PteFlags,
    Tlb,
    Translation,
    Trap,
    translate,
)

__all__ = ["CHANGES", "INVALIDATIONS", "TlbProblem", "tlb_problem"]

VA = 0x0040_2000
OLD_PA, NEW_PA = 0x2_0000, 0x2_1000
CHANGES = ("unmap", "read-only", "remap")
INVALIDATIONS = ("none", "invlpg on CPU 0", "shootdown")
_RW, _NX = int(PteFlags.RW), int(PteFlags.NX)


@attrs.define
class TlbProblem:
    seed: int
    mode: str
    change: str
    invalidation: str
    warm: list[tuple[int, str]]  # (cpu, access) made before the change
    questions: list[tuple[int, str]]  # (cpu, access) made after it
    answers: list[dict[str, Any]] = attrs.Factory(list)

    def text(self) -> str:
        what = {"unmap": "clears the entry (not present)",
                "read-only": "clears R/W (read-only)",
                "remap": f"points it at another frame, {NEW_PA:#x}"}[self.change]  # fmt: skip
        inv = {"none": "and invalidates nothing",
               "invlpg on CPU 0": "and runs invlpg on CPU 0 only",
               "shootdown": "and shoots the entry down on both CPUs (invlpg on each)"}[
            self.invalidation]  # fmt: skip
        lines = [
            f"mmusim quiz tlb --seed {self.seed} --mode {self.mode}",
            "",
            f"Two CPUs share one set of page tables ({self.mode} paging). Linear address {VA:#x}",
            f"is mapped read-write to physical {OLD_PA:#x} (CPL 0, CR0.WP set).",
            "First:",
        ]
        lines += [f"  CPU {c} {_verb(a)} {VA:#x}" for c, a in self.warm] or ["  (nothing)"]
        lines += [f"Then CPU 0 {what}, {inv}.", "Then, in order -- which physical address, or",
                  "which fault, and is the translation used stale?"]  # fmt: skip
        lines += [f"  {i}. CPU {c} {_verb(a)} {VA:#x}" for i, (c, a) in
                  enumerate(self.questions, 1)]  # fmt: skip
        return "\n".join(lines) + "\n"

    def answers_text(self) -> str:
        out = ["", "Answers:"]
        for i, a in enumerate(self.answers, 1):
            if a["ok"]:
                stale = (" -- STALE: the tables now say "
                         f"{a['now']}" if a["stale"] else " (what the tables say)")  # fmt: skip
                out.append(f"  {i}. physical {a['paddr']:#x}{stale}")
            else:
                out.append(f"  {i}. #PF, error code {a['error_code']:#x}, CR2 {a['cr2']:#x}")
        return "\n".join(out) + "\n"

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "vaddr": VA, "change": self.change,
                "invalidation": self.invalidation,
                "warm": [{"cpu": c, "access": a} for c, a in self.warm],
                "questions": [{"cpu": c, "access": a, "answer": ans}
                              for (c, a), ans in zip(self.questions, self.answers, strict=True)]}  # fmt: skip


def _verb(access: str) -> str:
    return "reads" if access == "r" else "writes"


def tlb_problem(seed: int, mode: str = "ia32e") -> TlbProblem:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r} (allowed: 32, pae, ia32e)")
    rng = random.Random(f"mmusim-quiz/tlb/{mode}/{seed}")
    warm = [(c, rng.choice("rrw")) for c in rng.sample([0, 1], rng.choice([1, 2, 2]))]
    p = TlbProblem(seed, mode, rng.choice(CHANGES), rng.choice(INVALIDATIONS), warm,
                   [(c, rng.choice("rw")) for c in (rng.sample([0, 1], 2) + [rng.choice([0, 1])])])  # fmt: skip
    mem = PhysMem(0x4_0000)
    frames = iter(range(0x1000, 0x2_0000, 0x1000))
    pt = PageTables(mem, MODES[mode], lambda: next(frames))
    pt.map(VA, OLD_PA, _RW)
    ctl = ControlState.for_mode(mode, cr3=pt.root, wp=True)
    cpus = [Cpu(mem, ctl, cpu_id=i, tlb=Tlb()) for i in (0, 1)]
    for c, a in warm:
        _access(cpus[c], a)
    if p.change == "unmap":
        pt.unmap(VA)
    elif p.change == "read-only":
        pt.set_flags(VA, 0)
    else:
        pt.unmap(VA)
        pt.map(VA, NEW_PA, _RW)
    if p.invalidation != "none":
        for c in (0, 1) if p.invalidation == "shootdown" else (0,):
            cpus[c].invlpg(VA)
    for c, a in p.questions:
        p.answers.append(_answer(mem, ctl, cpus[c], a))
    return p


def _access(cpu: Cpu, access: str) -> None:
    if access == "r":
        cpu.read(VA, 8)
    else:
        cpu.write(VA, b"\x5a" * 8)


def _answer(mem: PhysMem, ctl: ControlState, cpu: Cpu, access: str) -> dict[str, Any]:
    acc = Access.READ if access == "r" else Access.WRITE
    try:
        paddr = cpu.translate(VA, acc)
    except Trap as trap:
        return {"ok": False, "vector": trap.vector, "error_code": trap.error_code, "cr2": trap.cr2}
    fresh = translate(PhysMem.from_image(mem.to_image(0x4_0000)), ctl, VA, acc, 0)
    now = f"{fresh.paddr:#x}" if isinstance(fresh, Translation) else "a #PF"
    stale = not isinstance(fresh, Translation) or fresh.paddr != paddr
    return {"ok": True, "paddr": paddr, "stale": stale, "now": now}
