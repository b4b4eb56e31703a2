"""The runtime's stack policies (mmusim.runtime.policies): each keeps its promise (``catches``)
at the boundary of the stack, costs what its system's layout costs, and its broken variant
fails the same check."""

from __future__ import annotations

import pytest

from mmusim.hw import MODE_IA32E, PhysMem, Tlb
from mmusim.runtime import PAGE, AddressSpace, HwPager, Prot
from mmusim.runtime.policies import (
    RUNTIME_POLICIES,
    HaikuAreas,
    LinuxGuardRegions,
    NanosGrowsdown,
    PosixReserve,
    RethinkdbCoroutines,
    RuntimeStackPolicy,
    stack_costs,
)

SIZE = 16 * PAGE


def space_for(policy: RuntimeStackPolicy) -> AddressSpace:
    pager = HwPager(PhysMem(), MODE_IA32E, tlbs=[Tlb(), Tlb()])
    return AddressSpace(pager, 0x4000_0000, 0x7F00_0000_0000, flavour=policy.space_flavour(),
                        rlimit_stack=SIZE, check=True)  # fmt: skip


def escapes_caught(policy: RuntimeStackPolicy) -> set[str]:
    """Which one-byte escapes from a fresh stack fault (as a SIGSEGV), after the whole stack
    has been written (a growsdown stack has grown to its size)."""
    space = space_for(policy)
    s = policy.create(space, "s", SIZE)
    for page in range(s.hi - PAGE, s.lo - 1, -PAGE):  # use the whole stack, top down
        assert space.fault(page, write=True).resolved, (policy, hex(page))
    caught = set()
    if not space.fault(s.lo - 1, write=True).resolved:
        caught.add("overflow")
    if not space.fault(s.hi, write=True).resolved:
        caught.add("underflow")
    space._check()
    return caught


@pytest.mark.parametrize("name", sorted(RUNTIME_POLICIES))
def test_each_policy_keeps_its_promise(name: str) -> None:
    policy = RUNTIME_POLICIES[name]()
    assert policy.catches <= escapes_caught(policy)


def test_the_broken_variants_break_the_promise() -> None:
    assert "overflow" not in escapes_caught(HaikuAreas(guard_present=True))
    assert "overflow" in escapes_caught(HaikuAreas())
    assert "underflow" not in escapes_caught(PosixReserve(guard_present=True))
    assert "overflow" not in escapes_caught(LinuxGuardRegions(guard_present=True))
    assert "overflow" not in escapes_caught(RethinkdbCoroutines(guard_present=True))


def test_a_one_page_gap_lets_the_next_mapping_into_the_stacks_room() -> None:
    # The gap is kept below a growsdown area's current start. With nanos' 256 pages, the next
    # mapping lands far below the room the stack will grow into; with a one-page gap it lands
    # inside that room, and the stack's pushes there go silently into the neighbour.
    for gap in (256, 1):
        policy = NanosGrowsdown(gap_pages=gap)
        space = space_for(policy)
        s = policy.create(space, "s", SIZE)
        low = space.mmap(PAGE, Prot.READ | Prot.WRITE, name="neighbour")
        if gap == 256:
            assert low + PAGE <= s.lo  # below the room (the gap counts from the current start)
            continue
        assert s.lo <= low < s.hi  # inside the stack's room
        outcome = space.fault(low + 8, write=True)  # the stack grows into it: a plain commit
        assert outcome.resolved
        area = space.find(low)
        assert area is not None and area.name == "neighbour"


def test_costs_are_those_of_each_systems_layout() -> None:
    areas = {n: stack_costs(p(), SIZE)["create"]["areas"] for n, p in RUNTIME_POLICIES.items()}
    assert areas == {
        "haiku-areas": 3,  # guard, stack, guard: three areas ("probably bad")
        "posix-reserve": 1,  # one area, the guards per-page protections
        "linux-guard-regions": 1,  # guard markers: no VMA split
        "nanos-growsdown": 1,
        "rethinkdb-coroutines": 2,  # "a single protected coroutine consumes two regions"
        "go-segmented": 0,  # a block of the heap arena (made by prepare, before the count)
        "go-copying": 0,
    }
    c = stack_costs(RUNTIME_POLICIES["linux-guard-regions"](), SIZE)
    assert c["create"]["guard_markers"] == 2 and c["create"]["frames"] == 1  # the touched top
    assert c["destroy"]["frames"] == -1 and c["destroy"]["shootdowns"] == 1  # two CPUs
    assert stack_costs(HaikuAreas(), SIZE, live=10)["create"]["areas"] == 3


@pytest.mark.parametrize("cls", [HaikuAreas, PosixReserve, LinuxGuardRegions, RethinkdbCoroutines])
def test_a_multi_page_guard_catches_a_frame_that_jumps_one_page(cls: type) -> None:
    # An unprobed frame of two pages writes 1.5 pages below the stack: past a one-page guard --
    # into the next stack below, or its own upper guard (a fault blamed on the wrong stack) --
    # but inside a three-page guard, whose fault is the stack's own.
    for pages in (1, 3):
        policy = cls(guard_pages=pages)
        space = space_for(policy)
        s = policy.create(space, "s", SIZE)
        policy.create(space, "below", SIZE)  # top-down placement: just below s
        landing = s.lo - PAGE - PAGE // 2
        outcome = space.fault(landing, write=True)
        if pages == 3:
            assert not outcome.resolved and s.guard_of(landing), (cls.__name__, outcome)
        else:
            assert not s.guard_of(landing), (cls.__name__, outcome)
            area = space.find(landing)
            assert area is not None and area.name.startswith("below"), area


def test_policies_print_as_code_with_their_non_default_fields() -> None:
    assert repr(HaikuAreas()) == "HaikuAreas()"
    assert repr(HaikuAreas(guard_present=True)) == "HaikuAreas(guard_present=True)"
    assert repr(LinuxGuardRegions(guard_pages=4)) == "LinuxGuardRegions(guard_pages=4)"
    with pytest.raises(ValueError, match="guard_pages 0 must be at least 1"):
        PosixReserve(guard_pages=0).create(space_for(PosixReserve()), "s", SIZE)
