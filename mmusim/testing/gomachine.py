"""``GoStackMachine``: a Hypothesis rule-based state machine over Go's goroutine stacks
(``mmusim.runtime.gostack``), checking the runtime's promises as it goes.

A bare machine: an ``AddressSpace`` on ``HwPager`` page tables, one user-mode CPU whose
accesses go through the MMU (``CpuMem``), a ``GoRuntime`` of the policy over the space's
``GoHeap``. The machine keeps each goroutine's live frames in Python (where the call entered, its
lowest local, its stack pointer, what ``morestack`` did). The rules:

* ``spawn`` a goroutine (at most ``MAX_GS``), ``exit`` one (``freeg``);
* ``call`` a function of one of ``FRAMES`` bytes: the CALL pushes the return address, the
  prologue check runs (``needs_morestack``), ``morestack`` if it says so (on a copy the saved
  stack pointers of every frame move by ``delta``, as ``adjustframe`` moves frame pointers),
  then the frame's lowest local is written at SP - frame. The promise: the push and that write
  land inside the goroutine's current stack ``[lo, hi)`` -- there is no guard page to catch them;
* ``ret`` pops a frame (``lessstack`` for the frame that split: it must give back the stack
  pointer of the call);
* ``record`` a pointer to a local of the top frame (``record_pointer``), ``deref`` one: the
  promise, never stale, and equal to the address it was taken of (moved by every copy since);
* ``recurse``: ``n`` nested calls of one frame size (how the stack reaches ``max_stack``);
* ``hot_loop``: ``n`` calls of the least frame that crosses the current boundary, each returning
  at once -- a segmented stack splits every time (the "hot split", a Hypothesis event), a
  copying stack copies at most once (a promise).

``GoStackOverflow`` is the expected fatal outcome of a call whose stack would exceed
``max_stack`` (kept small here, ``MACHINE_MAX_STACK``, unless the policy sets its own): the promise is that it is raised exactly then --
with the size the machine computes independently -- and never when the stack fits. The
goroutine is then freed (Go would end the program).

After every rule (``@invariant``): ``GoHeap._check``, ``GoRuntime._check``,
``AddressSpace._check(deep=False)``; live goroutines' stacks disjoint; every live pointer slot's
value inside its goroutine's stack; every frame's marker intact at its (relocated) address.

Configure it with ``GoStackMachine.configured(policy=...)``, which names the class by the call,
so a falsifying example prints as runnable code::

    from mmusim.runtime.gostack import GoCopying
    GoStackMachine.configured(policy=GoCopying(forget_pointer=True)).check()
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from mmusim.hw import MODE_IA32E, ControlState, Cpu, PhysMem, Tlb
from mmusim.runtime.areas import AddressSpace
from mmusim.runtime.gostack import (
    MAX_STACK,
    PTR_SIZE,
    SEGMENT_ROOM,
    STACK_BIG,
    STACK_GUARD,
    STACK_SMALL,
    CpuMem,
    G,
    GoCopying,
    GoHeap,
    GoRuntime,
    GoSegmented,
    GoStackOverflow,
    GoStackPolicy,
    Growth,
)
from mmusim.runtime.pager import HwPager
from mmusim.runtime.policies import RUNTIME_POLICIES
from mmusim.testing.runtime import PromiseBroken, configured_subclass, event

__all__ = ["FRAMES", "GoStackMachine", "go_policy"]

LO = 0x4000_0000
HI = 0x8000_0000
#: Frame sizes drawn: each side of StackSmall and StackBig, and frames bigger than a segment.
FRAMES: tuple[int, ...] = (8, 64, 128, 129, 512, 1024, 4096, 4097, 10000, 40000)
MAX_GS = 4
MAX_PTRS = 8  # per goroutine: 64 bytes of slots, inside the nosplit room below a checked frame
MACHINE_MAX_STACK = 128 * 1024  # the machine's max_stack: small, so that overflows are reached
ARENA = 64 * 1024
_CONFIGURED: dict[str, type[GoStackMachine]] = {}

PolicyArg = GoStackPolicy | type[GoStackPolicy] | str


def go_policy(policy: PolicyArg) -> GoStackPolicy:
    """A Go policy from an instance, a class, or a name of ``RUNTIME_POLICIES``."""
    if isinstance(policy, str):
        cls = RUNTIME_POLICIES.get(policy)
        if cls is None or not issubclass(cls, GoStackPolicy):
            go = sorted(n for n, c in RUNTIME_POLICIES.items() if issubclass(c, GoStackPolicy))
            raise ValueError(f"unknown Go stack policy {policy!r} (known: {', '.join(go)})")
        return cls()
    if isinstance(policy, type):
        return policy()
    return policy


@attrs.define
class Frame:
    """A live frame: ``entry`` (SP after the return address push, or the new segment's top),
    ``local`` (its lowest local, holding ``marker``), ``sp`` (below the pointers it recorded),
    the growth its call made, the pointers it recorded."""

    size: int
    entry: int
    local: int
    sp: int
    marker: bytes
    growth: Growth | None = None
    ptrs: list[str] = attrs.Factory(list)


class GoStackMachine(RuleBasedStateMachine):
    """Go's stacks under test (module docstring); configure it with ``configured``."""

    policy: ClassVar[PolicyArg] = "go-copying"
    max_stack: ClassVar[int] = MACHINE_MAX_STACK

    def __init__(self) -> None:
        super().__init__()
        pol = go_policy(self.policy)
        if pol.max_stack == MAX_STACK:  # Go's own: the machine's instead
            pol = attrs.evolve(pol, max_stack=self.max_stack)
        self.pol = pol
        mem = PhysMem()
        tlb = Tlb()
        self.pager = HwPager(mem, MODE_IA32E, tlbs=[tlb])
        ctl = ControlState.for_mode("ia32e", self.pager.cr3, nxe=True)
        self.cpu = Cpu(mem, ctl, cpu_id=0, cpl=3, tlb=tlb)
        self.space = AddressSpace(self.pager, LO, HI, flavour=pol.space_flavour())
        self.mem = CpuMem(self.cpu, self.space)
        GoHeap.of(self.space, self.mem, arena=ARENA)  # smaller arenas than the default
        self.rt = GoRuntime(self.space, pol, self.mem)
        self.frames: dict[str, list[Frame]] = {}
        self.targets: dict[str, int] = {}  # pointer name -> the address it was taken of
        self.serial = 0
        self.log: list[str] = []

    @classmethod
    def configured(
        cls, *, policy: PolicyArg | None = None, max_stack: int | None = None
    ) -> type[GoStackMachine]:
        """A subclass with these settings, named by the call that makes it (a falsifying
        example prints as ``state = GoStackMachine.configured(policy=GoCopying(...))()``). The
        same arguments give the same class."""
        return configured_subclass(cls, _CONFIGURED, policy=policy, max_stack=max_stack)

    @classmethod
    def check(cls, settings: Any = None) -> None:
        """Run this machine as a test under ``settings`` (default: the active profile)."""
        run_state_machine_as_test(cls, settings=settings)

    # -- reporting ---------------------------------------------------------------------------

    def describe(self) -> str:
        lines = [f"policy {self.pol!r} ({self.pol.name}), max_stack {self.pol.max_stack}"]
        for name, g in self.rt.gs.items():
            segs = ", ".join(f"{lo:#x}-{hi:#x}" for lo, hi in g.segments)
            lines.append(f"  {name}: stack {segs}, stackguard0 {g.stackguard0:#x}, "
                         f"{len(self.frames[name])} frames, pointers {sorted(g.ptrs)}")  # fmt: skip
        lines += [f"  did: {line}" for line in self.log[-8:]]
        return "\n".join(lines)

    def _fail(self, message: str) -> None:
        err = PromiseBroken(f"policy {self.pol!r}: {message}")
        err.add_note(self.describe())
        raise err

    def _pick(self, which: int) -> G | None:
        gs = list(self.rt.gs.values())
        return gs[which % len(gs)] if gs else None

    def _sp(self, g: G) -> int:
        frames = self.frames[g.name]
        return frames[-1].sp if frames else g.hi

    def _inside(self, g: G, va: int, what: str) -> None:
        """The promise: ``va`` (a word) lands in ``g``'s current stack."""
        if not (g.lo <= va and va + PTR_SIZE <= g.hi):
            self._fail(f"{what} of {g.name} at {va:#x} lands outside its stack "
                       f"{g.lo:#x}-{g.hi:#x} ({g.lo - va} bytes below)")  # fmt: skip

    # -- the calls ---------------------------------------------------------------------------

    def _needed(self, g: G, sp: int, frame: int) -> int:
        """The size the stack would have after growth for ``frame`` at ``sp`` (newstack's
        doubling; a segmented stack's total with the new segment)."""
        if isinstance(self.pol, GoSegmented):
            need = frame + STACK_GUARD + SEGMENT_ROOM
            return g.size + max(self.pol.segment_size, 1 << (need - 1).bit_length())
        size, used = (g.hi - g.lo) * 2, g.hi - sp
        while size - used < frame + STACK_GUARD:
            size *= 2
        return size

    def _call(self, g: G, frame: int) -> bool:
        """One call of a ``frame``-byte function on ``g``; False if the stack overflowed (the
        goroutine is then gone)."""
        frames = self.frames[g.name]
        sp = self._sp(g) - PTR_SIZE  # CALL pushes the return address
        self._inside(g, sp, "the return address push")
        self.mem.write(sp, (0xC0DE0000 + len(frames)).to_bytes(PTR_SIZE, "little"))
        growth = None
        if self.rt.needs_morestack(g, sp, frame):
            needed = self._needed(g, sp, frame)
            try:
                growth = self.rt.morestack(g, sp, frame)
            except GoStackOverflow as e:
                if needed <= self.pol.max_stack or e.newsize != needed:
                    self._fail(f"stack overflow thrown for {e.newsize} bytes, {needed} needed, "
                               f"max_stack {self.pol.max_stack}")  # fmt: skip
                if f"exceeds {self.pol.max_stack}-byte limit" not in str(e):
                    self._fail(f"stack overflow message: {e}")
                event("go: stack overflow (fatal)")
                self._exit(g)
                return False
            if needed > self.pol.max_stack:
                self._fail(f"grew to {g.size} bytes past max_stack {self.pol.max_stack}, silently")
            if growth.kind == "copy":
                for f in frames:  # adjustframe: the saved stack pointers move with the stack
                    f.entry, f.local, f.sp = (x + growth.delta for x in (f.entry, f.local, f.sp))
                for name in g.ptrs:
                    self.targets[name] += growth.delta
            sp = growth.new_sp
            tier = "small" if frame <= STACK_SMALL else "big" if frame > STACK_BIG else "medium"
            event(f"go: {growth.kind} for a {tier} frame")
        local = sp - frame
        self._inside(g, local, f"the lowest local of a {frame}-byte frame")
        marker = (0xF0000000 + self.serial).to_bytes(PTR_SIZE, "little")
        self.serial += 1
        self.mem.write(local, marker)
        frames.append(Frame(frame, sp, local, local, marker, growth))
        return True

    def _ret(self, g: G) -> None:
        f = self.frames[g.name].pop()
        for name in f.ptrs:
            g.ptrs.pop(name, None)
            self.targets.pop(name, None)
        if f.growth is not None and f.growth.kind == "split":
            old = self.rt.lessstack(g, f.growth)
            if old != f.growth.old_sp:
                self._fail(f"lessstack returned {old:#x}, the call's sp was {f.growth.old_sp:#x}")

    def _exit(self, g: G) -> None:
        for f in self.frames.pop(g.name):
            for name in f.ptrs:
                self.targets.pop(name, None)
        self.rt.freeg(g)

    # -- rules -------------------------------------------------------------------------------

    # As RuntimeMachine's: rules that cannot apply return at once rather than having a
    # precondition, so that shrinking does not change which rules later steps pick.

    @rule()
    def spawn(self) -> None:
        if len(self.rt.gs) >= MAX_GS:
            return
        name = f"g{self.serial}"
        self.serial += 1
        g = self.rt.newg(name)
        self.frames[name] = []
        self.log.append(f"spawn {name} at {g.lo:#x}-{g.hi:#x}")

    @rule(which=st.integers(0, MAX_GS - 1))
    def exit(self, which: int) -> None:
        g = self._pick(which)
        if g is None:
            return
        self.log.append(f"exit {g.name}")
        self._exit(g)

    @rule(which=st.integers(0, MAX_GS - 1), frame=st.sampled_from(FRAMES))
    def call(self, which: int, frame: int) -> None:
        g = self._pick(which)
        if g is None:
            return
        self.log.append(f"call {g.name} frame {frame} at sp {self._sp(g) - PTR_SIZE:#x}")
        self._call(g, frame)

    @rule(which=st.integers(0, MAX_GS - 1))
    def ret(self, which: int) -> None:
        g = self._pick(which)
        if g is None or not self.frames[g.name]:
            return
        self.log.append(f"ret {g.name}")
        self._ret(g)

    @rule(which=st.integers(0, MAX_GS - 1))
    def record(self, which: int) -> None:
        """A pointer to the top frame's stack pointer, pushed as a slot below it."""
        g = self._pick(which)
        if g is None or not self.frames[g.name] or len(g.ptrs) >= MAX_PTRS:
            return
        f = self.frames[g.name][-1]
        name = f"p{self.serial}"
        self.serial += 1
        self._inside(g, f.sp - PTR_SIZE, f"pointer slot {name}")
        self.log.append(f"record {name} on {g.name} -> {f.sp:#x}")
        self.targets[name] = f.sp
        f.sp = self.rt.record_pointer(g, name, f.sp)
        f.ptrs.append(name)

    @rule(which=st.integers(0, MAX_GS - 1), pick=st.integers(0, MAX_PTRS - 1))
    def deref(self, which: int, pick: int) -> None:
        g = self._pick(which)
        if g is None or not g.ptrs:
            return
        name = list(g.ptrs)[pick % len(g.ptrs)]
        value, stale = self.rt.deref(g, name)
        self.log.append(f"deref {name} on {g.name}: {value:#x}")
        if stale or value != self.targets[name]:
            self._fail(f"pointer {name} of {g.name} reads {value:#x}, stale={stale}: it was "
                       f"taken of {self.targets[name]:#x}")  # fmt: skip

    @rule(which=st.integers(0, MAX_GS - 1), n=st.integers(1, 20))
    def hot_loop(self, which: int, n: int) -> None:
        """``n`` calls, each returning, of the least frame that crosses the boundary."""
        g = self._pick(which)
        if g is None:
            return
        sp = self._sp(g) - PTR_SIZE
        frame = max(sp - g.stackguard0 + STACK_SMALL, PTR_SIZE)
        self.log.append(f"hot loop on {g.name}: {n} calls of a {frame}-byte frame")
        splits, copies = self.rt.splits, self.rt.copies
        for _ in range(n):
            if not self._call(g, frame):
                return
            self._ret(g)
        splits, copies = self.rt.splits - splits, self.rt.copies - copies
        if isinstance(self.pol, GoCopying) and copies > 1:
            self._fail(f"a hot loop of {n} calls copied the stack {copies} times")
        many = "one call" if n == 1 else "n calls"
        if splits:
            event(f"go: hot loop of {many}: {'a split per call' if splits == n else 'splits'}")
        else:
            event(f"go: hot loop of {many}: {copies} copies")

    @rule(which=st.integers(0, MAX_GS - 1), frame=st.sampled_from(FRAMES), n=st.integers(2, 16))
    def recurse(self, which: int, frame: int, n: int) -> None:
        """``n`` nested calls of a ``frame``-byte function (a recursion), none returning."""
        g = self._pick(which)
        if g is None:
            return
        self.log.append(f"recurse {g.name}: {n} calls of a {frame}-byte frame")
        for _ in range(n):
            if not self._call(g, frame):
                return

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def consistent(self) -> None:
        try:
            self.rt._check()
            self.space._check(deep=False)
        except AssertionError as e:
            self._fail(f"runtime: {e}")

    @invariant()
    def stacks_disjoint(self) -> None:
        spans = sorted((lo, hi, g.name) for g in self.rt.gs.values() for lo, hi in g.segments)
        for (_, end, a), (start, _, b) in zip(spans, spans[1:], strict=False):
            if start < end:
                self._fail(f"stacks of {a} and {b} overlap")

    @invariant()
    def pointers_live(self) -> None:
        """Every live pointer slot holds an address inside its goroutine's stack."""
        for g in self.rt.gs.values():
            for name in g.ptrs:
                value, stale = self.rt.deref(g, name)
                if stale:
                    self._fail(f"pointer {name} of {g.name} holds {value:#x}, outside its stack")

    @invariant()
    def frames_intact(self) -> None:
        """Every frame's marker is where the frame is now (a copy kept the contents)."""
        for name, frames in self.frames.items():
            for f in frames:
                got = self.mem.read(f.local, PTR_SIZE)
                if got != f.marker:
                    self._fail(f"frame of {name} at {f.local:#x} holds {got.hex()}, "
                               f"not its marker {f.marker.hex()}")  # fmt: skip

    def teardown(self) -> None:
        """Every goroutine exits: every block back in the heap, merged into whole arenas."""
        for g in list(self.rt.gs.values()):
            self._exit(g)
        self.consistent()
        if self.rt.heap.used:
            self._fail(f"after every goroutine exited, {len(self.rt.heap.used)} blocks held")
