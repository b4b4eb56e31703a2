"""Stack strategies of other systems, as runtime policies: how a stack is laid out in a process's
address space, what guards it, and what that costs.

A ``RuntimeStackPolicy`` is the runtime counterpart of the kernel's ``StackPolicy``: it makes and
unmakes stacks with the address-space calls of its system (``create``/``destroy`` on an
``AddressSpace`` of its ``flavour``), says which addresses must fault (``RtStack.guards``) and
what it promises (``catches``: an escape of less than a page below the stack, ``"overflow"``, or
above it, ``"underflow"``, faults). ``stack_costs`` measures a policy, as data.

==========================  ========  ======================================================
``haiku-areas``             Haiku     the Haiku forum's program: a ``PROT_NONE`` reservation,
                                      the usable part mapped over it ``MAP_FIXED``: three areas
                                      (guard, stack, guard)
``posix-reserve``           Haiku     one reservation, the usable part ``mprotect``-ed RW: one
                                      area, the guards non-present pages inside it (per-page
                                      protections, as Zephyr's guards are PTEs)
``linux-guard-regions``     Linux     one RW mapping, ``MADV_GUARD_INSTALL`` at each end (Linux
                                      6.13): one VMA, the guards PTE markers
``nanos-growsdown``         nanos     a ``MAP_GROWSDOWN`` mapping of one page that grows on
                                      touch up to RLIMIT_STACK, with the 256-page guard gap to
                                      the next lower mapping (nanos ``mmap_growsdown_test``)
``rethinkdb-coroutines``    Linux     RethinkDB's coroutine stacks: the lowest page of each
                                      ``PROT_NONE`` (two VMAs per stack), nothing above
``go-segmented``            Linux     Go <= 1.2: heap blocks, no guard, a checked prologue;
                                      growth links a segment (``mmusim.runtime.gostack``)
``go-copying``              Linux     Go >= 1.3: heap blocks, no guard, a checked prologue;
                                      growth copies the stack into one twice as big
==========================  ========  ======================================================

Deliberately broken variants (each a constructor argument) let the property tests show that the
checks catch them: ``HaikuAreas(guard_present=True)`` leaves the lower guard mapped RW,
``PosixReserve(guard_present=True)`` opens the upper guard with the stack,
``LinuxGuardRegions(guard_present=True)`` never installs the lower marker,
``RethinkdbCoroutines(guard_present=True)`` leaves the stack unprotected (as RethinkDB's cap on
protected coroutines does to idle ones), ``NanosGrowsdown(gap_pages=1)`` runs the flavour with a
one-page gap. ``guard_pages`` (default 1) sizes each guard of the four guard-page policies: a
multi-page guard catches an unprobed frame that would jump a one-page guard.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from mmusim.hw import MODE_IA32E, PhysMem, Tlb
from mmusim.runtime.areas import AddressSpace, costs_delta
from mmusim.runtime.defs import (
    HAIKU,
    LINUX,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_GROWSDOWN,
    MAP_NORESERVE,
    MAP_PRIVATE,
    NANOS,
    PAGE,
    MmFlavour,
    Prot,
)
from mmusim.runtime.pager import HwPager

__all__ = [
    "RUNTIME_POLICIES",
    "HaikuAreas",
    "LinuxGuardRegions",
    "NanosGrowsdown",
    "PosixReserve",
    "RethinkdbCoroutines",
    "RtStack",
    "RuntimeStackPolicy",
    "stack_costs",
]

RW = Prot.READ | Prot.WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS


@attrs.define(repr=False)
class RtStack:
    """A stack a runtime policy made: usable ``[lo, hi)`` (the stack pointer starts at ``hi``),
    the ranges that must fault (``guards``), and what ``destroy`` unmaps (``[start, end)``)."""

    name: str
    lo: int
    hi: int
    guards: tuple[tuple[int, int], ...]
    start: int
    end: int

    def guard_of(self, addr: int) -> bool:
        return any(lo <= addr < hi for lo, hi in self.guards)


class RuntimeStackPolicy:
    """Base class of the runtime's stack policies (module docstring)."""

    name: ClassVar[str] = "custom"
    flavour: ClassVar[MmFlavour] = LINUX
    catches: ClassVar[frozenset[str]] = frozenset({"overflow", "underflow"})
    # The stack's extent is RLIMIT_STACK, one limit for the whole process (a growsdown stack):
    # a user of the policy (the property-test machine) makes every stack that size.
    size_from_rlimit: ClassVar[bool] = False

    def space_flavour(self) -> MmFlavour:
        """The flavour the policy's address space runs (a broken variant may change it)."""
        return self.flavour

    def prepare(self, space: AddressSpace) -> None:
        """Make what the policy's stacks share in ``space`` before the first stack (Go's heap
        arena); ``stack_costs`` calls it before measuring. Default: nothing."""

    def create(self, space: AddressSpace, name: str, size: int) -> RtStack:
        raise NotImplementedError(f"{type(self).__name__}.create")

    def destroy(self, space: AddressSpace, s: RtStack) -> None:
        space.munmap(s.start, s.end - s.start)

    def __repr__(self) -> str:
        """As code that rebuilds it, with the fields that differ from their defaults only
        (``HaikuAreas(guard_present=True)``): a counterexample prints runnable and short."""
        args = []
        cls: Any = type(self)
        if attrs.has(cls):
            for f in attrs.fields(cls):
                value = getattr(self, f.name)
                if value != f.default:
                    args.append(f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(args)})"

    def _guard(self, pages: int) -> int:
        if pages < 1:
            raise ValueError(f"{self.name}: guard_pages {pages} must be at least 1")
        return pages * PAGE


def _size(size: int) -> int:
    if size <= 0:
        raise ValueError(f"stack size {size} must be positive")
    return -(-size // PAGE) * PAGE


@attrs.define(repr=False)
class GuardPagePolicy(RuntimeStackPolicy):
    """A policy whose guards are pages of its own layout: ``guard_pages`` sizes each guard (more
    than one: a defence against big frames); ``guard_present`` is the broken variant, one guard
    left usable (which one: each policy's docstring)."""

    guard_present: bool = False
    guard_pages: int = 1

    def _between_guards(self, name: str, base: int, size: int, g: int, missing: str) -> RtStack:
        """The stack ``[base + g, base + g + size)`` between a lower and an upper guard of ``g``
        bytes, the ``missing`` one ("lower" or "upper") left out when ``guard_present``."""
        lower, upper = (base, base + g), (base + g + size, base + 2 * g + size)
        guards: tuple[tuple[int, int], ...] = (lower, upper)
        if self.guard_present:
            guards = (upper,) if missing == "lower" else (lower,)
        return RtStack(name, base + g, base + g + size, guards, base, base + size + 2 * g)


@attrs.define(repr=False)
class HaikuAreas(GuardPagePolicy):
    """The Haiku forum's program (reserve 16 MiB ``PROT_NONE``, map all but the first and last
    page RW): ``list_area`` shows three areas, "probably bad because a lot of coroutines can be
    created". ``guard_present``: broken, the lower guard mapped RW too."""

    name: ClassVar[str] = "haiku-areas"
    flavour: ClassVar[MmFlavour] = HAIKU

    def create(self, space: AddressSpace, name: str, size: int) -> RtStack:
        size, g = _size(size), self._guard(self.guard_pages)
        base = space.mmap(size + 2 * g, Prot.NONE, ANON | MAP_NORESERVE, name=f"{name}:reserve")
        lo = base if self.guard_present else base + g
        space.mmap(base + g + size - lo, RW, ANON | MAP_FIXED, lo, name)
        return self._between_guards(name, base, size, g, "lower")


@attrs.define(repr=False)
class PosixReserve(GuardPagePolicy):
    """One reservation, the usable part ``mprotect``-ed RW, the guards the non-present pages at
    each end of the same area (Haiku keeps per-page protections instead of splitting).
    ``guard_present``: broken, the mprotect also opens the upper guard."""

    name: ClassVar[str] = "posix-reserve"
    flavour: ClassVar[MmFlavour] = HAIKU

    def create(self, space: AddressSpace, name: str, size: int) -> RtStack:
        size, g = _size(size), self._guard(self.guard_pages)
        base = space.mmap(size + 2 * g, Prot.NONE, ANON | MAP_NORESERVE, name=name)
        space.mprotect(base + g, size + (g if self.guard_present else 0), RW)
        return self._between_guards(name, base, size, g, "upper")


@attrs.define(repr=False)
class LinuxGuardRegions(GuardPagePolicy):
    """One RW mapping with ``MADV_GUARD_INSTALL`` on its first and last page (Linux 6.13): no VMA
    split, the guards are PTE markers. ``guard_present``: broken, the lower marker is never
    installed."""

    name: ClassVar[str] = "linux-guard-regions"
    flavour: ClassVar[MmFlavour] = LINUX

    def create(self, space: AddressSpace, name: str, size: int) -> RtStack:
        size, g = _size(size), self._guard(self.guard_pages)
        base = space.mmap(size + 2 * g, RW, ANON, name=name)
        if not self.guard_present:
            space.madvise_guard_install(base, g)
        space.madvise_guard_install(base + g + size, g)
        return self._between_guards(name, base, size, g, "lower")


@attrs.define(repr=False)
class NanosGrowsdown(RuntimeStackPolicy):
    """nanos' ``mmap_growsdown_test``: map the gap plus the stack, keep only the top page mapped
    ``MAP_GROWSDOWN``; the stack grows on touch up to RLIMIT_STACK, and the gap below it is kept
    free (``PROCESS_STACK_GUARD_GAP``, 256 pages). ``gap_pages``: the flavour's gap (broken: 1).
    The stack's usable extent is its size; what guards it is the gap below."""

    name: ClassVar[str] = "nanos-growsdown"
    flavour: ClassVar[MmFlavour] = NANOS
    catches: ClassVar[frozenset[str]] = frozenset({"overflow"})
    size_from_rlimit: ClassVar[bool] = True
    gap_pages: int = NANOS.stack_guard_gap // PAGE

    def space_flavour(self) -> MmFlavour:
        return attrs.evolve(NANOS, stack_guard_gap=self.gap_pages * PAGE)

    def create(self, space: AddressSpace, name: str, size: int) -> RtStack:
        size = _size(size)
        gap = space.flavour.stack_guard_gap
        whole = space.mmap(gap + size, RW, ANON, name=name)
        top = whole + gap + size
        space.munmap(whole, gap + size - PAGE)
        space.mmap(PAGE, RW, ANON | MAP_GROWSDOWN | MAP_FIXED, top - PAGE, name)
        lo = top - size
        return RtStack(name, lo, top, ((lo - gap, lo),) if gap else (), top - PAGE, top)

    def destroy(self, space: AddressSpace, s: RtStack) -> None:
        area = space.find(s.hi - PAGE)
        assert area is not None
        space.munmap(area.start, s.hi - area.start)


@attrs.define(repr=False)
class RethinkdbCoroutines(GuardPagePolicy):
    """RethinkDB's ``artificial_stack_t`` with ``enable_overflow_protection``: the lowest page of
    the allocation ``PROT_NONE`` (``checked_mprotect_page``), so a protected stack costs two
    VMAs; nothing above it (``catches`` overflow only)."""

    name: ClassVar[str] = "rethinkdb-coroutines"
    flavour: ClassVar[MmFlavour] = LINUX
    catches: ClassVar[frozenset[str]] = frozenset({"overflow"})
    # guard_present: broken, the stack left unprotected -- what RethinkDB's MAX_PROTECTED_COROS
    # cap does to an idle coroutine (coroutines.cc unprotects the least recently entered beyond
    # the cap). RethinkDB protects one page; guard_pages > 1 is a variant.

    def create(self, space: AddressSpace, name: str, size: int) -> RtStack:
        size, g = _size(size), self._guard(self.guard_pages)
        base = space.mmap(size, RW, ANON, name=name)
        if self.guard_present:
            return RtStack(name, base + g, base + size, (), base, base + size)
        space.mprotect(base, g, Prot.NONE)
        return RtStack(name, base + g, base + size, ((base, base + g),), base, base + size)


# Go's two (mmusim.runtime.gostack, which builds on this module) add themselves when that module
# is imported -- as the package's __init__ always does first.
RUNTIME_POLICIES: dict[str, type[RuntimeStackPolicy]] = {
    p.name: p for p in (HaikuAreas, PosixReserve, LinuxGuardRegions, NanosGrowsdown,
                        RethinkdbCoroutines)
}  # fmt: skip


def stack_costs(
    policy: RuntimeStackPolicy, size: int = 64 * 1024, *, live: int = 0
) -> dict[str, dict[str, int]]:
    """What one stack of ``size`` bytes costs under ``policy``, as data: ``{"create": {...},
    "destroy": {...}, "held": {...}}`` -- each the ``AddressSpace.costs`` keys (areas, virtual
    pages, committed pages, frames, page-table pages, PTE writes, shootdowns), measured on a
    bare machine (``HwPager``, two CPUs' TLBs) with ``live`` other stacks of the policy in place.
    ``held`` is what the live stack holds once created and its top page touched."""
    mem = PhysMem()
    pager = HwPager(mem, MODE_IA32E, tlbs=[Tlb(), Tlb()])
    space = AddressSpace(pager, 0x4000_0000, 0x7F00_0000_0000, flavour=policy.space_flavour(),
                         rlimit_stack=max(size, PAGE))  # fmt: skip
    policy.prepare(space)  # shared by every stack (Go's heap): not the measured stack's cost
    for i in range(live):
        policy.create(space, f"live{i}", size)
    before = space.costs()
    s = policy.create(space, "measured", size)
    outcome = space.fault(s.hi - 8, write=True)  # the first push
    assert outcome.resolved, outcome
    made = space.costs()
    policy.destroy(space, s)
    gone = space.costs()
    return {
        "create": costs_delta(before, made),
        "held": {k: made[k] - before[k] for k in ("areas", "virtual_pages", "committed_pages")},
        "destroy": costs_delta(made, gone),
    }
