"""``mmusim quiz guard``: a few threads with memory-mapped stacks (``CONFIG_THREAD_STACK_MEM_MAPPED``,
a non-present guard page on each side); one thread writes a word at an address -- in a guard of
its own stack, of another thread's, inside a stack, or between. Whose guard is it, which reason
code does Zephyr give, and what does it print?

The answer is the kernel's: the scenario runs on the model (``mmusim.kernel``), the address is
found in the memory map taken just before the write (``mmusim.render.memmap``), and the reason
and the console lines are what the fault handler produced -- so the point of the exercise shows
itself: ``z_x86_check_guard_page`` asks only about ``_current``'s guard, and a write into another
thread's guard is a plain CPU exception (reason 0), not a stack overflow (reason 2).
"""

from __future__ import annotations

import random
from typing import Any

import attrs

from mmusim.kconfig import load_config
from mmusim.kernel import K_FOREVER, Kernel, Op, StackObject
from mmusim.kernel.fatal import REASONS
from mmusim.render.maprow import MapRow
from mmusim.render.memmap import memory_map, render_text

__all__ = ["PLACES", "GuardProblem", "guard_problem"]

PLACES = ("its own front guard", "its own rear guard", "another thread's front guard",
          "another thread's rear guard", "another thread's stack")  # fmt: skip
_THREADS = ("t1", "t2", "t3")


@attrs.define
class GuardProblem:
    seed: int
    board: str
    writer: str
    vaddr: int
    rows: list[MapRow]  # the map just before the write
    region: str  # what holds the address (the map row's description)
    reason: int | None  # the fault's reason code, None if the write went through
    console: list[str]  # what Zephyr printed
    blamed: str | None

    def text(self) -> str:
        lines = [f"mmusim quiz guard --seed {self.seed}", "",
                 f"Board {self.board}, CONFIG_THREAD_STACK_MEM_MAPPED=y. Threads t1, t2 and t3 "
                 "sleep on their", "mapped stacks; the kernel address space just before the "
                 "write (the stacks' part):", ""]  # fmt: skip
        shown = [r for r in self.rows if r.subject in _THREADS]
        lines += ["  " + line for line in render_text(shown).splitlines()]
        lines += ["", f"Thread {self.writer} writes a word at {self.vaddr:#x}. Whose memory or "
                  "guard is it? Does it fault,", "and if so with which reason code, blamed on "
                  "whom, and what does Zephyr print?"]  # fmt: skip
        return "\n".join(lines) + "\n"

    def answers_text(self) -> str:
        out = ["", "Answer:", f"  {self.vaddr:#x} is in: {self.region}"]
        if self.reason is None:
            out.append("  no fault: the write went through (the memory is mapped read-write)")
        else:
            out.append(f"  #PF; reason {self.reason} ({REASONS[self.reason]}), blamed on "
                       f"{self.blamed}; Zephyr prints:")  # fmt: skip
            out += [f"    {line}" for line in self.console]
        return "\n".join(out) + "\n"

    def to_json(self) -> dict[str, Any]:
        return {"board": self.board, "writer": self.writer, "vaddr": self.vaddr,
                "answer": {"region": self.region, "fault": self.reason is not None,
                           "reason": self.reason, "blamed": self.blamed,
                           "console": self.console}}  # fmt: skip


def guard_problem(seed: int, board: str = "qemu_x86_64") -> GuardProblem:
    rng = random.Random(f"mmusim-quiz/guard/{board}/{seed}")
    sizes = [rng.choice([4096, 8192, 16384]) for _ in _THREADS]
    writer = rng.choice(_THREADS)
    place = rng.choice(PLACES)
    target = writer if place.startswith("its own") else rng.choice(
        [t for t in _THREADS if t != writer])  # fmt: skip
    cfg = load_config(board, extra_lines=[("quiz", 1, "CONFIG_THREAD_STACK_MEM_MAPPED=y")])
    stacks = tuple(StackObject(f"s_{t}", size, False) for t, size in zip(_THREADS, sizes,
                                                                          strict=True))  # fmt: skip
    main: list[Op] = []
    for t in _THREADS:
        body = "writer" if t == writer else "sleeper"
        main.append(Op("create", target=t, stack=f"s_{t}", label=body, prio=-1, n=K_FOREVER))
    main += [Op("record", target=f"{target}.mapped_addr", label="base"),
             Op("record", target=f"{target}.stack_start", label="buf"),
             Op("record", target="t1.state", label="ready")]  # fmt: skip
    main += [Op("start", target=t) for t in _THREADS if t != writer]
    main += [Op("start", target=writer), Op("join", target=writer)]
    k = Kernel(cfg.values, stacks=stacks, main_body=tuple(main),
               bodies={"sleeper": (Op("sleep", n=K_FOREVER),)})  # fmt: skip
    # Where the write goes, relative to a fact main records before starting the writer: the
    # mapping's start (a guard below it, or past the whole object), or the buffer's start.
    obj_len = k.stacks[f"s_{target}"].obj_len  # the mapping covers the whole object
    if "front guard" in place:
        label, offset = "base", -rng.randrange(1, 512) * 8
    elif "rear guard" in place:
        label, offset = "base", obj_len + rng.randrange(0, 512) * 8
    else:
        label, offset = "buf", rng.randrange(0, sizes[_THREADS.index(target)] // 8) * 8
    k.bodies["writer"] = (Op("write", label=label, offset=offset),)
    k.run(until=lambda kk: "ready" in kk.facts)
    vaddr = int(k.facts[label][-1]) + offset
    k.run(until=lambda kk: bool(kk.faults) or kk.thread(writer).exit_reason != "")
    rows = memory_map(k)
    region = next((r.owner for r in rows if r.start <= vaddr < r.end), "unmapped memory")
    k.run()
    fault = next((f for f in k.faults if f["faulting"] == writer), None)
    console = [line for line in k.log if line.startswith("E:")]
    return GuardProblem(seed, board, writer, vaddr, rows, region,
                        fault["reason"] if fault else None, console if fault else [],
                        fault["thread"] if fault else None)  # fmt: skip
