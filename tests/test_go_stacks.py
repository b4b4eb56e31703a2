"""Go's goroutine stacks (mmusim.runtime.gostack): the prologue's three tiers at their
boundaries, growth sizes, the hot split against one copy, a pointer the copy forgot going stale,
and GoStackMachine passing the two policies and catching each broken variant."""

from __future__ import annotations

import pytest
from hypothesis import Phase, settings

import mmusim.testing as mt
from mmusim.hw import MODE_IA32E, ControlState, Cpu, PhysMem, Tlb
from mmusim.runtime import (
    STACK_BIG,
    STACK_GUARD,
    STACK_MIN,
    STACK_NOSPLIT,
    STACK_SMALL,
    AddressSpace,
    CpuMem,
    GoCopying,
    GoHeap,
    GoRuntime,
    GoSegmented,
    GoStackOverflow,
    GoStackPolicy,
    HwPager,
    prologue_needs_morestack,
    stack_costs,
)
from mmusim.runtime.gostack import POISON, PTR_SIZE
from mmusim.testing import GoStackMachine, PromiseBroken

CI = settings.get_profile("ci")
FIND = settings(CI, phases=[Phase.explicit, Phase.reuse, Phase.generate])  # no shrinking
GUARD = 0x10_0000 + STACK_GUARD  # a stackguard0


def runtime(policy: GoStackPolicy) -> GoRuntime:
    mem = PhysMem()
    tlb = Tlb()
    pager = HwPager(mem, MODE_IA32E, tlbs=[tlb])
    cpu = Cpu(mem, ControlState.for_mode("ia32e", pager.cr3, nxe=True), cpl=3, tlb=tlb)
    space = AddressSpace(pager, 0x4000_0000, 0x8000_0000, check=True)
    return GoRuntime(space, policy, CpuMem(cpu, space))


def test_constants_are_linux_amd64s() -> None:
    assert (STACK_MIN, STACK_SMALL, STACK_BIG, STACK_GUARD) == (2048, 128, 4096, 928)


@pytest.mark.parametrize(
    ("frame", "sp_at_boundary"),
    [
        (8, GUARD),  # tier 1: SP <= stackguard0
        (STACK_SMALL, GUARD),
        (STACK_SMALL + 1, GUARD + 1),  # tier 2: SP - (frame - StackSmall) <= stackguard0
        (STACK_BIG, GUARD + STACK_BIG - STACK_SMALL),
        (STACK_BIG + 1, GUARD + STACK_BIG + 1 - STACK_SMALL),  # tier 3: the same, no wrap
        (40000, GUARD + 40000 - STACK_SMALL),
    ],
)
def test_prologue_tiers_at_their_boundaries(frame: int, sp_at_boundary: int) -> None:
    assert prologue_needs_morestack(sp_at_boundary, frame, GUARD)
    assert not prologue_needs_morestack(sp_at_boundary + 1, frame, GUARD)
    # What passes leaves the frame above stack.lo + StackNosplit (the nosplit room).
    assert sp_at_boundary + 1 - frame > GUARD - STACK_GUARD + STACK_NOSPLIT


def test_big_frame_check_does_not_wrap() -> None:
    # SP - (frame - StackSmall) would borrow: morestack (JCS), not a huge unsigned value.
    assert prologue_needs_morestack(1000, 40000, 0)
    assert not prologue_needs_morestack(1000, 40000, 0, off_by_one_frame=True)


def test_off_by_one_prologue_forgets_the_frame() -> None:
    sp = GUARD + 1
    assert prologue_needs_morestack(sp, 1024, GUARD)
    assert not prologue_needs_morestack(sp, 1024, GUARD, off_by_one_frame=True)
    assert sp - 1024 < GUARD - STACK_GUARD  # below stack.lo: nothing stops the write


def test_copying_doubles_until_the_frame_fits() -> None:
    rt = runtime(GoCopying())
    g = rt.newg("g")
    assert g.hi - g.lo == STACK_MIN and g.stackguard0 == g.lo + STACK_GUARD
    sp = g.hi - 64
    growth = rt.morestack(g, sp, 8)
    assert growth.kind == "copy" and growth.size == 2 * STACK_MIN
    assert growth.new_sp == sp + growth.delta == g.hi - 64 and growth.delta == g.hi - sp - 64
    big = rt.morestack(g, g.hi - 64, 10000)  # 4096 -> 8192 -> 16384: 64 + 10000 + 928 fits
    assert big.size == 16384 and g.hi - g.lo == 16384
    assert (rt.copies, rt.bytes_copied, g.copies) == (2, 128, 2)
    rt._check()


def test_segmented_links_a_segment_and_lessstack_frees_it() -> None:
    rt = runtime(GoSegmented())
    g = rt.newg("g")
    assert g.hi - g.lo == 8192
    first = (g.lo, g.hi)
    small = rt.morestack(g, g.lo + 900, 64)
    assert small.kind == "split" and small.size == 8192 and small.new_sp == g.hi
    assert g.segments == [first, small.segment]
    big = rt.morestack(g, g.hi - 100, 40000)  # next power of two >= 40000 + 928 + 128
    assert big.size == 65536 and len(g.segments) == 3 and g.size == 8192 * 2 + 65536
    rt._check()
    assert rt.lessstack(g, big) == small.new_sp - 100
    assert rt.lessstack(g, small) == first[0] + 900
    assert (g.lo, g.hi) == first and rt.splits == 2
    rt._check()


@pytest.mark.parametrize(("policy", "splits", "copies"),
                         [(GoSegmented(), 100, 0), (GoCopying(), 0, 1)], ids=repr)  # fmt: skip
def test_a_hot_loop_splits_every_time_but_copies_once(
    policy: GoStackPolicy, splits: int, copies: int
) -> None:
    rt = runtime(policy)
    g = rt.newg("g")
    sp = g.lo + STACK_GUARD + 64  # just above the guard
    frame = 512
    for _ in range(100):  # a loop calling a 512-byte function, each call returning
        if rt.needs_morestack(g, sp, frame):
            growth = rt.morestack(g, sp, frame)
            if growth.kind == "split":
                rt.lessstack(g, growth)
            else:
                sp = growth.new_sp
    assert (rt.splits, rt.copies) == (splits, copies)
    rt._check()


def test_a_pointer_the_copy_forgot_goes_stale_and_reads_poison() -> None:
    for forget in (False, True):
        rt = runtime(GoCopying(forget_pointer=forget))
        g = rt.newg("g")
        local = g.hi - 32
        sp = rt.record_pointer(g, "p", local)
        rt.morestack(g, sp - PTR_SIZE, 512)
        value, stale = rt.deref(g, "p")
        if not forget:
            assert not stale and value == local + (g.hi - (local + 32))
            continue
        assert stale and value == local  # still the old stack's address
        assert rt.mem.read(value, PTR_SIZE) == bytes([POISON]) * PTR_SIZE
        rt._check()


def test_stack_overflow_is_thrown_past_max_stack() -> None:
    rt = runtime(GoCopying(max_stack=8192))
    g = rt.newg("g")
    rt.morestack(g, g.hi - 8, 4000)  # 2048 -> 8192: fits
    with pytest.raises(GoStackOverflow, match="exceeds 8192-byte limit") as info:
        rt.morestack(g, g.lo + STACK_GUARD, 64)
    assert info.value.newsize == 16384 and g.hi - g.lo == 8192  # nothing changed
    assert "1000000000-byte limit" in str(GoStackOverflow("g", 2 << 30, 1_000_000_000))
    seg = runtime(GoSegmented(max_stack=16384))
    g = seg.newg("g")
    seg.morestack(g, g.lo + 900, 8)
    with pytest.raises(GoStackOverflow):
        seg.morestack(g, g.lo + 900, 8)


def test_stacks_are_heap_blocks_that_never_fault() -> None:
    rt = runtime(GoCopying())
    heap = GoHeap.of(rt.space)
    assert heap is rt.heap and len(rt.space) == 1
    (area,) = rt.space
    assert area.name == "go-heap" and len(area.committed) == area.pages
    gs = [rt.newg(f"g{i}") for i in range(4)]
    rt.freeg(gs[1])
    assert rt.mem.read(gs[1].lo, 4) == bytes([POISON]) * 4
    for g in gs[2:]:
        rt.morestack(g, g.hi - 8, 70000)  # 128 KiB each: a second arena
    assert len(heap.arenas) == 2
    rt._check()
    rt.space._check()
    c = stack_costs(GoCopying())
    assert c["create"]["areas"] == 0 and c["create"]["frames"] == 0


def test_machine_passes_go_segmented_and_go_copying() -> None:
    GoStackMachine.configured(policy=GoSegmented()).check(CI)
    GoStackMachine.configured(policy="go-copying").check(CI)


@pytest.mark.parametrize(
    ("policy", "match"),
    [
        (GoCopying(off_by_one_frame=True), "lands outside its stack"),
        (GoSegmented(off_by_one_frame=True), "lands outside its stack"),
        (GoCopying(forget_pointer=True), "pointer p\\d+ of g\\d+ (holds|reads)"),
    ],
    ids=repr,
)
def test_machine_catches_each_broken_variant(policy: GoStackPolicy, match: str) -> None:
    with pytest.raises(PromiseBroken, match=match):
        GoStackMachine.configured(policy=policy).check(FIND)


def test_configured_machines_are_shared_and_print_as_code() -> None:
    a = GoStackMachine.configured(policy=GoCopying(forget_pointer=True))
    assert a is GoStackMachine.configured(policy=GoCopying(forget_pointer=True))
    assert a.__name__ == "GoStackMachine.configured(policy=GoCopying(forget_pointer=True))"
    with pytest.raises(ValueError, match="unknown Go stack policy 'haiku-areas'"):
        GoStackMachine.configured(policy="haiku-areas")()


def test_counterexample_prints_as_code_that_reproduces_it() -> None:
    machine = GoStackMachine.configured(policy=GoSegmented(off_by_one_frame=True))
    with pytest.raises(PromiseBroken) as info:
        machine.check(CI)
    notes = "\n".join(getattr(info.value, "__notes__", []))
    code = notes[
        notes.index("state = ") : notes.index("state.teardown()") + len("state.teardown()")
    ]
    invariants = {"consistent", "stacks_disjoint", "pointers_live", "frames_intact"}
    steps = [line for line in code.splitlines() if line[6:-2] not in invariants]
    assert steps == [
        "state = GoStackMachine.configured(policy=GoSegmented(off_by_one_frame=True))()",
        "state.spawn()",
        "state.recurse(frame=1024, n=8, which=0)",
        "state.teardown()",
    ], code  # shrunk to: one goroutine, eight 1024-byte frames (the eighth 64 bytes below)
    with pytest.raises(PromiseBroken, match=r"1024-byte frame of g0 .* \(64 bytes below\)"):
        exec(compile(code, "<counterexample>", "exec"), dict(vars(mt), GoSegmented=GoSegmented))
