"""The explorer's view of a scenario: reset, enabled actions, step, fingerprint, footprints.

The explorer drives the very kernel that ``mmusim run`` drives (docs/design.md, "One kernel, many
drivers"); like Loom and CHESS, it re-executes schedules instead of restoring saved states:
kernel routines are generators, so a state cannot be copied; every schedule is re-executed from a
fresh boot. ``reset`` boots the scenario's kernel and replays the deterministic prefix that leads to
the exploration root (the first ``record ... as "explore"`` in the scenario under the default
schedule, or the boot itself).

An action is ``(cpu, kind)``: ``"step"`` resumes the CPU's current generator to its next Point;
``"irq"`` takes a pending IPI; ``"evict"`` (``CONFIG_SIM_TLB_EVICTION``) drops the CPU's stale TLB
entries. A step is named after the Point it resumes from, so traces name
the routine and label they model.

The fingerprint covers everything that can influence the future: each CPU's registers, TLB,
current and executing thread, pending IPIs and held locks; every thread's state, stack info,
switch handle and the *whole chain of its suspended generator frames* -- code position and every
local that is a number, a string, a thread, an op or a tuple of those (loops are index loops, so
their position is a local); the cleanup slot, lock holders, ready queue, clock, mappings, the free
runs of the virtual-region bitmap and the free page frames in the order they will be handed out
(both decide where the next stack goes), recorded facts and faults; and the bytes of every
page-table frame (A/D bits included). Data pages are left out: no kernel routine branches on stack
contents.
"""

from __future__ import annotations

import hashlib
import marshal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs

from mmusim.kconfig import Config
from mmusim.kernel import (
    Footprint,
    Kernel,
    KernelAssert,
    KSpinlock,
    KThread,
    Op,
    Point,
    check_all,
    check_quiescent,
)
from mmusim.kernel.invariants import INVARIANT_NAMES
from mmusim.scenario.load import Scenario, load_scenario

Action = tuple[int, str]
START_FACT = "explore"  # `record ... as "explore"` marks the exploration root


@attrs.frozen
class StepInfo:
    """What one action did, for traces: which CPU, thread, routine and label it resumed from."""

    cpu: int
    kind: str
    thread: str
    routine: str
    label: str

    @property
    def key(self) -> tuple[int, str, str]:
        """Identity of the action across states (the sleep set and replay check use it)."""
        return (self.cpu, self.kind, f"{self.routine}: {self.label}")


class Model:
    """A scenario (optionally with extra Kconfig lines, e.g. a mutant) ready for exploration."""

    def __init__(
        self, scenario: Scenario | str | Path, extra_config: Sequence[str] = (), *,
        origin: str = "--mutant", ignore: Sequence[str] = (),
    ) -> None:  # fmt: skip
        loaded = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
        self.scenario = loaded  # as the file says (traces record its own config lines)
        self.extra_config = tuple(extra_config)
        unknown = sorted(set(ignore) - set(INVARIANT_NAMES))
        if unknown:
            raise ValueError(
                f"--ignore {unknown[0]}: no such invariant; allowed: {', '.join(INVARIANT_NAMES)}"
            )
        # Invariants not judged (by the name their messages start with): to look past a window
        # to its consequence, e.g. "self-unmap" with CONFIG_SIM_TLB_EVICTION (docs/explore.md).
        self.ignore = tuple(sorted(set(ignore)))
        self._booted = loaded.with_config(self.extra_config, origin)  # what boot() boots
        self.prefix: list[Action] = []
        self._prefix_known = False
        # Set when the default schedule makes the kernel assert (or runs into the step bound)
        # before the exploration root: (the violation kind, "kernel assert" or "step bound", its
        # message, the steps from boot that reach it, their preemptions). The root is then the
        # boot itself, and the searches report this as their violation.
        self.root_assert: tuple[str, str, tuple[StepInfo, ...], int] | None = None
        # The step bound of every execution: the scenario's max_steps, in engine steps from boot.
        self.max_steps = loaded.max_steps
        self.boots = 0

    @property
    def config(self) -> Config:
        """The configuration it boots: the scenario's, then ``extra_config``."""
        return self._booted.config

    @property
    def ncpus(self) -> int:
        """The CPUs it boots: ``MP_MAX_NUM_CPUS`` of ``config`` (extra lines included)."""
        return self._booted.ncpus

    # -- the interface the search uses -------------------------------------------------------

    def boot(self) -> Kernel:
        self.boots += 1
        return self._booted.boot()

    def find_root(self) -> None:
        """Find the exploration root (``prefix``) and ``root_assert``, once: by running the
        default schedule on a kernel of its own."""
        if not self._prefix_known:
            self.prefix, self.root_assert = _default_run(self, self.boot())
            self._prefix_known = True

    def reset(self) -> Kernel:
        """A fresh kernel at the exploration root."""
        self.find_root()
        k = self.boot()
        for a in self.prefix:
            k.do(a)
        return k

    @staticmethod
    def actions(k: Kernel) -> list[Action]:
        """The enabled actions; when only sleepers remain, the timer tick ``(-1, "tick")``."""
        acts = k.actions()
        if not acts and k.sleepers:
            return [(-1, "tick")]  # the clock jumps to the next wake-up
        return acts

    @staticmethod
    def info(k: Kernel, a: Action) -> StepInfo:
        if a[1] == "tick":
            nxt = k.sleepers[0].wake_tick if k.sleepers else k.clock
            return StepInfo(-1, "tick", "-", "timer", f"clock {k.clock} -> {nxt}")
        c = k.cpus[a[0]]
        if a[1] == "irq":
            ipis = ", ".join(c.pending_ipis)
            return StepInfo(a[0], "irq", c.ctx.name, "interrupt", f"take IPI ({ipis})")
        if a[1] == "evict":
            pages = ", ".join(f"{p:#x}" for p in k.stale_tlb_pages(c))
            return StepInfo(a[0], "evict", c.ctx.name, "tlb", f"evict stale entries {pages}")
        p = c.irq_pending if c.irq is not None else c.ctx.pending
        who = "ISR" if c.irq is not None else c.ctx.name
        return StepInfo(a[0], "step", who, p.routine, p.label)

    @staticmethod
    def step(k: Kernel, a: Action) -> None:
        if a[1] == "tick":
            k.wake_sleepers()
        else:
            k.do(a)

    def violations(self, k: Kernel) -> list[str]:
        """The invariants ``k`` violates, less the ignored ones."""
        return self._unignored(check_all(k))

    def end_violations(self, k: Kernel) -> list[str]:
        """What ``check_quiescent`` finds in the finished run ``k``, less the ignored invariants."""
        return self._unignored(check_quiescent(k))

    def _unignored(self, problems: list[str]) -> list[str]:
        if self.ignore:
            return [m for m in problems if m.split(":", 1)[0] not in self.ignore]
        return problems

    @staticmethod
    def footprint(k: Kernel, a: Action) -> Footprint | None:
        """(reads, writes) of the action, or None if unknown (it conflicts with everything)."""
        if a[1] in ("tick", "evict"):
            return None  # an eviction changes what this CPU's next access does: dependent
        c = k.cpus[a[0]]
        if a[1] == "irq":
            return (frozenset(), frozenset({("ipi", c.id)}))
        p = c.irq_pending if c.irq is not None else c.ctx.pending
        if not isinstance(p, Point) or p.res is None:
            return None
        r, w = p.res
        held = {("lock", lock.name) for lock in c.held}
        if isinstance(p.wait, KSpinlock):
            held.add(("lock", p.wait.name))
        return (r, w | held) if held else (r, w)

    # -- fingerprints -------------------------------------------------------------------------

    @staticmethod
    def fingerprint(k: Kernel) -> bytes:
        parts: list[Any] = []
        for c in k.cpus:
            parts += [
                c.id, c.current.name, c.ctx.name, c.hw.sp, c.hw.cpl, tuple(c.pending_ipis),
                tuple(lock.name for lock in c.held),
                c.running_on.name if c.running_on else None, c.hw.ctl.cr3,
                tuple((e.page, e.frame, e.rights, e.global_) for e in c.hw.tlb.entries()),
            ]  # fmt: skip
            if c.irq is not None:
                _frames(c.irq, parts)
        for t in k.threads.values():
            info = t.stack_info
            parts += [t.name, int(t.state), info.start, info.size, info.mapped.addr, info.mapped.sz,
                      t.switch_handle, t.sp, t.cpl, t.exit_reason, t.generation, t.wake_tick,
                      tuple(w.name for w in t.join_waiters),
                      t.mem_domain.name if t.mem_domain else None, tuple(t.stack_moves)]  # fmt: skip
            if t.gen is not None:
                _frames(t.gen, parts)
            else:
                parts.append(repr(t.pending))
        slot = k.cleanup
        parts += [
            slot.thread.name if slot.thread else None, slot.stack_addr, slot.stack_sz,
            tuple(lk.holder for lk in (k.sched_lock, k.cleanup_lock, k.mm_lock)),
            tuple((e.thread, e.kind, e.addr, e.outcome) for e in k.escapes),
            tuple(t.name for t in k.ready), tuple(t.name for t in k.sleepers), k.clock,
            tuple(sorted(k.regions)), tuple(sorted(k.mappings)), tuple(k.vm.free_runs()),
            k.frames.order(), k.pending_shootdowns, k.shootdowns_owed,
            tuple((n, tuple(map(repr, v))) for n, v in sorted(k.facts.items())),
            tuple(tuple(sorted(f.items())) for f in k.faults), len(k.log),
        ]  # fmt: skip
        md = k.md
        if md is not None:  # memory domains: partitions, their lock, the common table's cache
            parts += [(n, tuple(p.name if p else None for p in d.partitions))
                      for n, d in md.by_name.items()]  # fmt: skip
            parts += [md.lock.holder, md.current_domain.name if md.current_domain else None,
                      md.current_stack]  # fmt: skip
        for state in k.extension_state:  # a layer above the kernel (mmusim.runtime)
            data, gens = state(k)
            parts.append(data)
            for g in gens:
                _frames(g, parts)
        h = hashlib.blake2b(_canonical(parts), digest_size=16)
        for pt in k.all_ptables():  # the tables' bytes, by content (PageTables.digest)
            h.update(pt.digest())
        return h.digest()


def _canonical(parts: list[Any]) -> bytes:
    """One byte string per value of ``parts``: marshal's version 2, which (unlike version 3 and
    later) writes no back-references and no "interned" flags, so equal values give equal bytes
    whichever objects hold them -- and four times faster than ``repr``. A value marshal cannot
    write (a policy's own object in an extension's state) makes the whole list go through
    ``repr``, under its own prefix so the two encodings never meet."""
    try:
        return b"m" + marshal.dumps(parts, 2)
    except ValueError:
        return b"r" + repr(parts).encode()


_ITEMS = (int, str)
# How a local of each type goes into the fingerprint, decided once per type (the isinstance chain
# below), since a generator's locals are mostly of a few types: the kernel, a CPU, a lock, ...
_SKIP, _SCALAR, _THREAD, _OP, _SEQ, _REPR = range(6)
_KINDS: dict[type, int] = {bool: _SCALAR, int: _SCALAR, str: _SCALAR, type(None): _SCALAR}


def _kind(t: type) -> int:
    if issubclass(t, KThread):
        kind = _THREAD
    elif issubclass(t, Op):
        kind = _OP
    elif issubclass(t, list | tuple):
        kind = _SEQ
    elif issubclass(t, bool | int | str | type(None)):
        kind = _REPR  # an IntFlag, say: its repr is its value
    else:
        kind = _SKIP
    _KINDS[t] = kind
    return kind


def _frames(gen: Any, out: list[Any]) -> None:
    """Append the position and the relevant locals of each frame of a suspended generator chain:
    numbers, strings and None as they are, a thread by its name, an op by its fields, a list or
    tuple of numbers and strings as a tuple, a subclass of a scalar (an ``IntFlag``) as its
    ``repr``; other locals (the kernel, a CPU, a lock) are state the fingerprint holds
    elsewhere. The hot path of fingerprints: the kind of each type is decided once (``_kind``)."""
    append = out.append
    kinds = _KINDS
    while gen is not None:
        fr = gen.gi_frame
        if fr is None:
            append("<finished>")
            return
        append((gen.gi_code.co_name, fr.f_lasti))
        for name, v in fr.f_locals.items():
            t = type(v)
            kind = kinds.get(t)
            if kind is None:
                kind = _kind(t)
            if kind == _SCALAR:
                append((name, v))
            elif kind == _SKIP:
                continue
            elif kind == _THREAD:
                append((name, "thread", v.name))
            elif kind == _OP:
                append((name, "op", v.kind, v.line, v.target, v.label, v.n, v.offset))
            elif kind == _SEQ:
                if all(isinstance(x, _ITEMS) for x in v):
                    append((name, tuple(v)))
            else:
                append((name, repr(v)))
        gen = gen.gi_yieldfrom


def step_bound_message(max_steps: int) -> str:
    """The message of a "step bound" violation."""
    return (
        f"the run is not quiescent after the scenario's max_steps ({max_steps:,} engine steps "
        "from boot): it never goes idle, or needs a larger max_steps in its [scenario] section"
    )


def _default_run(
    model: Model, k: Kernel
) -> tuple[list[Action], tuple[str, str, tuple[StepInfo, ...], int] | None]:
    """The default prefix of ``k`` (see ``default_prefix``), and, if the default schedule makes
    the kernel assert before it reaches the exploration root, the assertion: its message and the
    steps from boot (timer ticks included, as the explorer names them) that reach it. The root is
    then the boot itself (an empty prefix)."""
    infos: list[StepInfo] = []
    clock = [k.clock]
    last: list[int] = []
    pre = 0

    def before(a: Action) -> None:
        nonlocal pre
        if k.clock != clock[0]:  # Kernel.run woke sleepers by a clock jump: the explorer's tick
            infos.append(StepInfo(-1, "tick", "-", "timer", f"clock {clock[0]} -> {k.clock}"))
            clock[0] = k.clock
        if last and a[0] >= 0 and a[0] != last[0] and any(x[0] == last[0] for x in k.actions()):
            pre += 1
        if a[0] >= 0:
            last[:] = [a[0]]
        infos.append(model.info(k, a))

    try:
        return default_prefix(k, before=before, max_steps=model.max_steps), None
    except KernelAssert as e:
        if k.steps >= model.max_steps and str(e).startswith("Kernel.run: no quiescence"):
            return [], ("step bound", step_bound_message(model.max_steps), tuple(infos), pre)
        return [], ("kernel assert", str(e), tuple(infos), pre)


def default_prefix(
    k: Kernel, before: Callable[[Action], object] | None = None, max_steps: int = 5_000_000
) -> list[Action]:
    """The actions the default (round-robin) schedule takes until the scenario records the
    ``explore`` fact -- the exploration root. Without that marker the root is the boot itself."""
    taken: list[Action] = []

    def record(a: Action) -> None:
        if before is not None:
            before(a)
        taken.append(a)

    k.run(
        until=lambda kk: START_FACT in kk.facts,
        before=record,
        check_deadlock=False,
        max_steps=max_steps,
    )
    return taken if START_FACT in k.facts else []  # no marker: explore from boot
