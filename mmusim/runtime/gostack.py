"""Go's goroutine stacks: no guard page, a checked prologue, and growth by a new segment (Go <= 1.2,
``go-segmented``) or by copying the whole stack into one twice as big (Go >= 1.3,
``go-copying``). docs/runtime.md describes it for users.

What is modelled, with where it was read (golang/go):

* The constants of linux/amd64 (``src/internal/abi/stack.go``, ``src/runtime/stack.go``):
  ``stackMin`` = 2048 (``fixedStack``, ``stackSystem`` being 0 on Linux), ``StackSmall`` = 128,
  ``StackBig`` = 4096, ``StackNosplitBase`` = 800, ``stackGuard = stackNosplit + stackSystem +
  StackSmall`` = 928; ``g.stackguard0 = stack.lo + stackGuard``.
* The prologue (``src/cmd/internal/obj/x86/obj6.go`` ``stacksplit``): three tiers by frame size,
  each ending in ``JLS`` (unsigned ``<=``) to ``runtime.morestack`` -- ``prologue_needs_morestack``.
* ``newstack`` (``src/runtime/stack.go``): ``newsize = oldsize * 2``, doubled again until the
  frame plus ``stackGuard`` fits above the used part; above ``maxstacksize`` (1000000000 on
  64-bit, set by ``runtime.main`` in ``src/runtime/proc.go``) it prints ``runtime: goroutine stack
  exceeds 1000000000-byte limit`` and ``throw("stack overflow")`` -- a fatal error, not a panic
  (``GoStackOverflow``). Else ``copystack``: ``stackalloc(newsize)``, ``delta = new.hi - old.hi``,
  the used part ``[sp, old.hi)`` copied, every pointer slot pointing into ``[old.lo, old.hi)``
  given ``+delta`` (``adjustframe`` -> ``adjustpointers``), ``stackfree(old)``.
* Memory: stacks are heap spans (``stackpool`` / ``stackLarge``), not mappings: ``GoHeap`` mmaps
  RW arenas once, populates them, and hands out power-of-two blocks (a buddy allocator: a model
  choice). Freed stack memory is filled with ``POISON`` (as Go's ``stackPoisonCopy`` debugging
  switch fills the old stack after a copy), so a pointer that was not relocated reads poison.
* Segmented stacks (Go 1.2; the Go 1.3 release notes: contiguous stacks eliminate the "hot
  spot" of a calculation that repeatedly steps across a segment boundary, often called the hot
  split): ``morestack`` links a new segment of at least ``segment_size`` (8 KiB: the Go 1.2
  release notes lift the starting stack from 4 KB to 8 KB, the Go 1.4 ones cut it to 2048
  bytes); returning from the frame that split frees it (``lessstack``). The
  modern constants are used for both (a model choice: Go 1.2's differed in detail); the total of
  a goroutine's segments is bounded by ``max_stack`` (``runtime/debug.SetMaxStack``, Go 1.2).

Broken variants (constructor arguments): ``off_by_one_frame`` -- the prologue forgets the
callee's own frame and compares SP alone, so a frame above ``stackGuard - StackSmall`` (800 bytes)
that starts just above the guard writes below the stack; ``forget_pointer`` (``GoCopying``) --
the copy skips the most recently recorded pointer slot, which then points into the freed stack.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Protocol

import attrs
from sortedcontainers import SortedSet

from mmusim.hw import (
    STACK_BIG,
    STACK_GUARD,
    STACK_NOSPLIT,
    STACK_SMALL,
    Cpu,
    Trap,
    checked_prologue_fails,
)
from mmusim.runtime.areas import AddressSpace
from mmusim.runtime.defs import (
    LINUX,
    MAP_ANONYMOUS,
    MAP_PRIVATE,
    PAGE,
    FaultOutcome,
    MmFlavour,
    Prot,
)
from mmusim.runtime.policies import RUNTIME_POLICIES, RtStack, RuntimeStackPolicy

__all__ = [
    "MAX_STACK",
    "POISON",
    "PTR_SIZE",
    "STACK_BIG",
    "STACK_GUARD",
    "STACK_MIN",
    "STACK_NOSPLIT",
    "STACK_SMALL",
    "STACK_SYSTEM",
    "G",
    "CpuMem",
    "GoCopying",
    "GoHeap",
    "GoMemFault",
    "GoRuntime",
    "GoSegmented",
    "GoStackOverflow",
    "GoStackPolicy",
    "Growth",
    "Mem",
    "prologue_needs_morestack",
]

# StackSmall, StackBig, StackNosplit and StackGuard are the compiler's (the prologue's):
# mmusim.hw.prologue has them, and its checked_prologue_fails is the check itself.
STACK_SYSTEM = 0  # stackSystem: 0 on Linux
STACK_MIN = 2048  # stackMin; fixedStack = stackMin + stackSystem rounded up to a power of two
MAX_STACK = 1_000_000_000  # maxstacksize on 64-bit, set by runtime.main
PTR_SIZE = 8
POISON = 0xDD  # a model choice: the byte freed stack memory is filled with
ARENA = 256 * 1024  # the heap's arena size (a model choice)
# Room a new segment keeps above the frame that split, for the arguments copied to it and the
# link back to the old segment (Go 1.2's Stktop): a model choice.
SEGMENT_ROOM = 128
RW = Prot.READ | Prot.WRITE


def prologue_needs_morestack(
    sp: int, frame: int, stackguard0: int, *, off_by_one_frame: bool = False
) -> bool:
    """Does the prologue of a function with a ``frame``-byte frame call ``morestack``? ``sp`` is
    the stack pointer after the CALL pushed the return address: Go's check in its three tiers
    (``mmusim.hw.checked_prologue_fails``, from obj6.go ``stacksplit``).
    ``off_by_one_frame``: the broken prologue that forgets the callee's frame (the first tier,
    ``CMPQ SP, stackguard0``, for every frame)."""
    return checked_prologue_fails(sp, 0 if off_by_one_frame else frame, stackguard0)


def _pow2(n: int) -> int:
    """The least power of two >= ``n`` (``n`` >= 1)."""
    return 1 << (n - 1).bit_length()


# -- memory ----------------------------------------------------------------------------------------


class Mem(Protocol):
    """How the runtime reads and writes stack contents (its bookkeeping stays in Python)."""

    def read(self, va: int, n: int) -> bytes: ...
    def write(self, va: int, data: bytes) -> None: ...


class GoMemFault(Exception):
    """An access of the runtime's ``Mem`` was refused (SIGSEGV): ``outcome`` says why."""

    def __init__(self, outcome: FaultOutcome) -> None:
        super().__init__(str(outcome))
        self.outcome = outcome


@attrs.define(eq=False)
class CpuMem:
    """``Mem`` on a bare machine: accesses through ``cpu`` (its MMU), a #PF handed to
    ``space.fault`` and the access retried; a refusal raises ``GoMemFault``."""

    cpu: Cpu
    space: AddressSpace

    def read(self, va: int, n: int) -> bytes:
        return self._access(va, n, None)

    def write(self, va: int, data: bytes) -> None:
        self._access(va, len(data), data)

    def _access(self, va: int, n: int, data: bytes | None) -> bytes:
        for _ in range(n // PAGE + 3):
            try:
                if data is None:
                    return self.cpu.read(va, n)
                self.cpu.write(va, data)
                return data
            except Trap as trap:
                if trap.cr2 is None:
                    raise
                out = self.space.fault(trap.cr2, write=data is not None)
                if not out.resolved:
                    raise GoMemFault(out) from trap
        raise AssertionError(f"access of {n} bytes at {va:#x} faults forever")


# -- the heap --------------------------------------------------------------------------------------


class GoHeap:
    """The stack memory of one address space: RW arenas (areas named ``go-heap``), committed
    when made, cut into power-of-two blocks by a buddy allocator (lowest address first:
    deterministic). ``GoHeap.of(space)`` is the space's one heap (kept in
    ``space.extensions``)."""

    def __init__(self, space: AddressSpace, mem: Mem | None = None, arena: int = ARENA) -> None:
        if arena < STACK_MIN or arena & (arena - 1) or arena % PAGE:
            raise ValueError(f"GoHeap: arena size {arena} not a power-of-two number of pages")
        self.space = space
        self.mem = mem
        self.arena = arena
        self.arenas: list[tuple[int, int]] = []
        self.used: dict[int, int] = {}  # block start -> size
        self.free_lists: dict[int, SortedSet] = {}  # size -> starts of free blocks

    @classmethod
    def of(cls, space: AddressSpace, mem: Mem | None = None, *, arena: int = ARENA) -> GoHeap:
        """The heap of ``space`` (made on first use, with one arena of ``arena`` bytes); ``mem``,
        if given, becomes the heap's (freed blocks are poisoned through it)."""
        heap = space.extensions.get("go-heap")
        if heap is None:
            heap = space.extensions["go-heap"] = cls(space, mem, arena)
            heap._grow(heap.arena)
        assert isinstance(heap, GoHeap), heap
        if mem is not None:
            heap.mem = mem
        return heap

    def _grow(self, size: int) -> None:
        """A new arena of at least ``size`` bytes: mmapped RW and populated, so stack memory never
        demand-faults."""
        size = max(self.arena, _pow2(size))
        base = self.space.mmap(size, RW, MAP_PRIVATE | MAP_ANONYMOUS, name="go-heap")
        self.space.populate(base, size)
        self.arenas.append((base, base + size))
        self.free_lists.setdefault(size, SortedSet()).add(base)

    def _arena_of(self, addr: int) -> tuple[int, int]:
        for a in self.arenas:
            if a[0] <= addr < a[1]:
                return a
        raise ValueError(f"GoHeap: {addr:#x} is in no arena")

    def alloc(self, size: int) -> tuple[int, int]:
        """A block of ``size`` bytes rounded up to a power of two (at least ``STACK_MIN``, as
        ``stackalloc`` wants): ``(lo, hi)``."""
        if size <= 0:
            raise ValueError(f"GoHeap.alloc: size {size} must be positive")
        size = _pow2(max(size, STACK_MIN))
        fits = sorted(s for s, starts in self.free_lists.items() if s >= size and starts)
        if not fits:
            self._grow(size)
            return self.alloc(size)
        s = fits[0]
        lo = self.free_lists[s].pop(0)
        while s > size:  # split: keep the lower half, free the upper
            s //= 2
            self.free_lists.setdefault(s, SortedSet()).add(lo + s)
        self.used[lo] = size
        return lo, lo + size

    def free(self, lo: int) -> None:
        """Give the block at ``lo`` back: poisoned (through ``mem``), merged with its buddy."""
        if lo not in self.used:
            raise ValueError(f"GoHeap.free: no block at {lo:#x}")
        size = self.used.pop(lo)
        if self.mem is not None:
            self.mem.write(lo, bytes([POISON]) * size)
        base, end = self._arena_of(lo)
        while size < end - base:
            buddy = base + ((lo - base) ^ size)
            starts = self.free_lists.get(size)
            if starts is None or buddy not in starts:
                break
            starts.remove(buddy)
            lo, size = min(lo, buddy), size * 2
        self.free_lists.setdefault(size, SortedSet()).add(lo)

    def _check(self) -> None:
        """Blocks (used and free) inside arenas, aligned to their size from the arena's base,
        disjoint, tiling each arena (free + used = arena); no two free buddies unmerged; every
        arena page committed and RW."""
        blocks = [(lo, size, "used") for lo, size in self.used.items()]
        blocks += [(lo, size, "free") for size, ss in self.free_lists.items() for lo in ss]
        by_arena: dict[tuple[int, int], list[tuple[int, int, str]]] = {a: [] for a in self.arenas}
        for lo, size, kind in blocks:
            assert size >= STACK_MIN and not size & (size - 1), f"{kind} block size {size}"
            base, end = self._arena_of(lo)
            assert (lo - base) % size == 0, f"{kind} block {lo:#x}+{size} misaligned"
            by_arena[base, end].append((lo, size, kind))
        for (base, end), bs in by_arena.items():
            at = base
            for lo, size, kind in sorted(bs):
                assert lo == at, f"arena {base:#x}: {kind} block at {lo:#x}, expected {at:#x}"
                at = lo + size
            assert at == end, f"arena {base:#x}-{end:#x}: blocks end at {at:#x}"
            for page in range(base, end, PAGE):
                area = self.space.find(page)
                assert area is not None and page in area.committed, f"heap page {page:#x}"
                assert area.prot_at(page) == RW, f"heap page {page:#x} is {area.prot_at(page)!r}"
        for size, ss in self.free_lists.items():
            for lo in ss:
                base, end = self._arena_of(lo)
                if size < end - base:
                    buddy = base + ((lo - base) ^ size)
                    assert buddy not in ss, f"free buddies {lo:#x}, {buddy:#x} unmerged"


# -- goroutines, policies --------------------------------------------------------------------------


@attrs.define(eq=False)
class G:
    """A goroutine's stack: the current block or segment ``[lo, hi)``, ``stackguard0``, every
    segment (oldest first, the current last; one for a copying stack), the pointer slots
    (``ptrs``: name -> address of the stack slot holding a pointer) and counters."""

    name: str
    lo: int
    hi: int
    stackguard0: int
    segments: list[tuple[int, int]]
    ptrs: dict[str, int] = attrs.Factory(dict)
    splits: int = 0
    copies: int = 0
    bytes_copied: int = 0

    @property
    def size(self) -> int:
        return sum(hi - lo for lo, hi in self.segments)

    def holds(self, addr: int) -> bool:
        """Is ``addr`` in the goroutine's live stack memory (any segment)?"""
        return any(lo <= addr < hi for lo, hi in self.segments)

    def _set_current(self, lo: int, hi: int) -> None:
        self.lo, self.hi, self.stackguard0 = lo, hi, lo + STACK_GUARD


@attrs.frozen
class Growth:
    """What one ``morestack`` did: ``kind`` ``"split"`` (a new ``segment``) or ``"copy"`` (the
    stack moved by ``delta`` from ``old``); ``new_sp`` is where the function runs on; ``size``
    the new segment's or stack's size."""

    kind: Literal["split", "copy"]
    new_sp: int
    old_sp: int
    size: int
    delta: int = 0
    segment: tuple[int, int] | None = None
    old: tuple[int, int] | None = None


class GoStackOverflow(Exception):
    """``newstack``'s ``throw("stack overflow")``: the goroutine's stack would exceed
    ``limit``. Fatal to the program in Go (not a recoverable panic)."""

    def __init__(self, g: str, newsize: int, limit: int) -> None:
        self.g, self.newsize, self.limit = g, newsize, limit
        super().__init__(
            f"runtime: goroutine stack exceeds {limit}-byte limit\nfatal error: stack overflow"
        )


@attrs.define(repr=False)
class GoStackPolicy(RuntimeStackPolicy):
    """Go's stacks as a runtime policy: heap blocks, no guard (``catches`` nothing: the prologue
    check is the protection). ``create``/``destroy`` allocate from and free to the space's
    ``GoHeap``; ``prepare`` makes the heap (``stack_costs`` calls it first)."""

    name: ClassVar[str] = "go"
    flavour: ClassVar[MmFlavour] = LINUX
    catches: ClassVar[frozenset[str]] = frozenset()
    off_by_one_frame: bool = False
    max_stack: int = MAX_STACK

    def initial_size(self) -> int:
        return STACK_MIN

    def prepare(self, space: AddressSpace) -> None:
        GoHeap.of(space)

    def create(self, space: AddressSpace, name: str, size: int) -> RtStack:
        lo, hi = GoHeap.of(space).alloc(size)
        return RtStack(name, lo, hi, (), lo, hi)

    def destroy(self, space: AddressSpace, s: RtStack) -> None:
        GoHeap.of(space).free(s.start)


@attrs.define(repr=False)
class GoSegmented(GoStackPolicy):
    """Go <= 1.2: ``morestack`` links a new segment (at least ``segment_size``, Go 1.2's 8 KiB
    starting stack); returning from the frame that split frees it."""

    name: ClassVar[str] = "go-segmented"
    segment_size: int = 8192

    def initial_size(self) -> int:
        return self.segment_size


@attrs.define(repr=False)
class GoCopying(GoStackPolicy):
    """Go >= 1.3 (2048-byte start since Go 1.4): ``morestack`` copies the stack into one twice
    as big (or more) and relocates the pointers into it. ``forget_pointer``: broken, the most
    recently recorded pointer is not relocated."""

    name: ClassVar[str] = "go-copying"
    forget_pointer: bool = False


RUNTIME_POLICIES.update({p.name: p for p in (GoSegmented, GoCopying)})


# -- the runtime -----------------------------------------------------------------------------------


class GoRuntime:
    """The goroutine stacks of one address space under ``policy``, contents through ``mem``."""

    def __init__(self, space: AddressSpace, policy: GoStackPolicy, mem: Mem) -> None:
        self.space = space
        self.policy = policy
        self.mem = mem
        self.heap = GoHeap.of(space, mem)
        self.gs: dict[str, G] = {}
        self.splits = 0
        self.copies = 0
        self.bytes_copied = 0

    def newg(self, name: str, size: int | None = None) -> G:
        """A goroutine with a fresh stack of ``size`` (default: the policy's starting size)."""
        if name in self.gs:
            raise ValueError(f"newg: goroutine {name!r} exists")
        lo, hi = self.heap.alloc(size or self.policy.initial_size())
        g = self.gs[name] = G(name, lo, hi, lo + STACK_GUARD, [(lo, hi)])
        return g

    def freeg(self, g: G) -> None:
        """The goroutine exits: every segment back to the heap (poisoned)."""
        for lo, _ in reversed(g.segments):
            self.heap.free(lo)
        g.segments.clear()
        g.ptrs.clear()
        del self.gs[g.name]

    def needs_morestack(self, g: G, sp: int, frame: int) -> bool:
        """The prologue check of a ``frame``-byte function called with ``sp`` (after the push of
        the return address)."""
        off = self.policy.off_by_one_frame
        return prologue_needs_morestack(sp, frame, g.stackguard0, off_by_one_frame=off)

    def morestack(self, g: G, sp: int, frame: int) -> Growth:
        """Grow ``g``'s stack for a ``frame``-byte function at ``sp``: a new segment or a copy.
        Raises ``GoStackOverflow`` (nothing changed) if the stack would exceed ``max_stack``."""
        if not g.lo <= sp <= g.hi:
            raise ValueError(f"morestack: sp {sp:#x} not in {g.name}'s stack {g.lo:#x}-{g.hi:#x}")
        if isinstance(self.policy, GoSegmented):
            return self._split(g, sp, frame, self.policy)
        assert isinstance(self.policy, GoCopying), self.policy
        return self._copy(g, sp, frame, self.policy)

    def _split(self, g: G, sp: int, frame: int, pol: GoSegmented) -> Growth:
        size = max(pol.segment_size, _pow2(frame + STACK_GUARD + SEGMENT_ROOM))
        if g.size + size > pol.max_stack:
            raise GoStackOverflow(g.name, g.size + size, pol.max_stack)
        lo, hi = self.heap.alloc(size)
        g.segments.append((lo, hi))
        g._set_current(lo, hi)
        g.splits += 1
        self.splits += 1
        return Growth("split", new_sp=hi, old_sp=sp, size=size, segment=(lo, hi))

    def _copy(self, g: G, sp: int, frame: int, pol: GoCopying) -> Growth:
        old_lo, old_hi = g.lo, g.hi
        used = old_hi - sp
        newsize = (old_hi - old_lo) * 2  # newstack: double, until the frame and the guard fit
        while newsize - used < frame + STACK_GUARD:
            newsize *= 2
        if newsize > pol.max_stack:
            raise GoStackOverflow(g.name, newsize, pol.max_stack)
        lo, hi = self.heap.alloc(newsize)
        delta = hi - old_hi
        self.mem.write(sp + delta, self.mem.read(sp, used))  # copystack: the used part
        names = list(g.ptrs)
        skip = names[-1] if pol.forget_pointer and names else None
        for name in names:  # adjustpointers: the slot moves; a value into the old stack too
            slot = g.ptrs[name] = g.ptrs[name] + delta
            if name == skip:
                continue
            value = self._word(slot)
            if old_lo <= value < old_hi:
                self.mem.write(slot, (value + delta).to_bytes(PTR_SIZE, "little"))
        g.segments[:] = [(lo, hi)]
        g._set_current(lo, hi)
        self.heap.free(old_lo)  # stackfree(old), poisoned
        g.copies += 1
        g.bytes_copied += used
        self.copies += 1
        self.bytes_copied += used
        return Growth("copy", new_sp=sp + delta, old_sp=sp, size=newsize, delta=delta,
                      old=(old_lo, old_hi))  # fmt: skip

    def lessstack(self, g: G, growth: Growth) -> int:
        """Return from the frame that split: its segment (the current one) is freed, with the
        pointer slots in it; the old stack pointer is returned."""
        if growth.kind != "split" or not g.segments or growth.segment != g.segments[-1]:
            raise ValueError(f"lessstack: {growth} is not {g.name}'s current segment")
        if len(g.segments) == 1:
            raise ValueError(f"lessstack: {g.name} has no older segment")
        lo, hi = g.segments.pop()
        for name in [n for n, slot in g.ptrs.items() if lo <= slot < hi]:
            del g.ptrs[name]
        self.heap.free(lo)
        g._set_current(*g.segments[-1])
        return growth.old_sp

    def _word(self, va: int) -> int:
        return int.from_bytes(self.mem.read(va, PTR_SIZE), "little")

    def record_pointer(self, g: G, name: str, sp: int) -> int:
        """Push a word holding ``sp`` (the address of a local at SP) below ``sp`` and register
        the slot as the pointer ``name`` (the most recent); returns the new stack pointer."""
        slot = sp - PTR_SIZE
        self.mem.write(slot, sp.to_bytes(PTR_SIZE, "little"))
        g.ptrs.pop(name, None)
        g.ptrs[name] = slot
        return slot

    def deref(self, g: G, name: str) -> tuple[int, bool]:
        """The value of pointer ``name`` and whether it is stale (not in ``g``'s live stack)."""
        value = self._word(g.ptrs[name])
        return value, not g.holds(value)

    def _check(self) -> None:
        """The heap's invariants; every goroutine's segments used blocks of the heap, owned by
        it alone, the current one ``[lo, hi)`` with ``stackguard0 = lo + STACK_GUARD``; a copying
        stack one block; sizes within ``max_stack``; pointer slots inside the stack; counters
        at least the live goroutines' sums."""
        self.heap._check()
        owners: dict[int, str] = {}
        for name, g in self.gs.items():
            assert g.name == name and g.segments, f"goroutine {name}: {g}"
            for lo, hi in g.segments:
                assert self.heap.used.get(lo) == hi - lo, f"{name}: {lo:#x}-{hi:#x} not a block"
                assert lo not in owners, f"{name} and {owners[lo]} share {lo:#x}"
                owners[lo] = name
            assert (g.lo, g.hi) == g.segments[-1], f"{name}: current stack not the last segment"
            assert g.stackguard0 == g.lo + STACK_GUARD, f"{name}: stackguard0 {g.stackguard0:#x}"
            assert isinstance(self.policy, GoSegmented) or len(g.segments) == 1, name
            assert g.size <= self.policy.max_stack, f"{name}: {g.size} bytes of stack"
            for p, slot in g.ptrs.items():
                assert g.holds(slot), f"{name}: pointer slot {p} at {slot:#x} not in its stack"
        for counter in ("splits", "copies", "bytes_copied"):
            live = sum(getattr(g, counter) for g in self.gs.values())
            assert getattr(self, counter) >= live, f"{counter}: {getattr(self, counter)} < {live}"
