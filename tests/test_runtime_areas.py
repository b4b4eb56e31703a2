"""mmusim.runtime: address-space areas on bare mmusim.hw page tables.

Every address space here runs with ``check=True``: ``_check()`` after every operation. Each rule
is tested at its boundary (the last address that passes and the first that does not), and a
Hypothesis state machine drives random sequences through the three flavours, accessing memory
through a real ``Cpu`` so that a stale TLB entry or a wrong PTE would show.
"""

from __future__ import annotations

import attrs
import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from mmusim.hw import (
    MODES,
    Access,
    ControlState,
    Cpu,
    PageFault,
    PhysMem,
    Tlb,
    Translation,
    Trap,
    translate,
)
from mmusim.runtime import (
    HAIKU,
    LINUX,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_GROWSDOWN,
    MAP_PRIVATE,
    MAP_SHARED,
    NANOS,
    PAGE,
    SEGV_ACCERR,
    SEGV_MAPERR,
    SIGSEGV,
    AddressSpace,
    FaultOutcome,
    HwPager,
    MmError,
    MmFlavour,
    Prot,
    allows,
    costs_delta,
)

LO = 0x40_0000
HI = 0x7FFF_FFFF_F000
RW = Prot.READ | Prot.WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
STACK = ANON | MAP_GROWSDOWN
GAP = 256 * PAGE


@attrs.define
class Machine:
    asp: AddressSpace
    pager: HwPager
    cpus: list[Cpu]

    def walk(self, va: int, access: Access = Access.READ) -> Translation | PageFault:
        res = translate(self.pager.mem, self.cpus[0].ctl, va, access, 3)
        assert isinstance(res, Translation | PageFault)
        return res

    def touch(self, va: int, write: bool = True, cpu: int = 0) -> FaultOutcome | None:
        """A user access through the CPU; a #PF goes to ``fault`` and the access is retried.
        Returns the refusal, or None once the access succeeded."""
        for _ in range(3):
            try:
                if write:
                    self.cpus[cpu].write(va, b"\x5a")
                else:
                    self.cpus[cpu].read(va, 1)
                return None
            except Trap as trap:
                assert trap.cr2 == va
                out = self.asp.fault(va, write=write)
                if not out.resolved:
                    return out
        raise AssertionError(f"access at {va:#x} faults forever")


def machine(
    flavour: MmFlavour = LINUX, ncpus: int = 1, lo: int = LO, hi: int = HI, **kw: int
) -> Machine:
    mem = PhysMem()
    tlbs = [Tlb() for _ in range(ncpus)]
    pager = HwPager(mem, MODES["ia32e"], tlbs=tlbs)
    ctl = ControlState.for_mode("ia32e", pager.cr3, nxe=True)
    cpus = [Cpu(mem, ctl, cpu_id=i, cpl=3, tlb=tlb) for i, tlb in enumerate(tlbs)]
    asp = AddressSpace(pager, lo, hi, flavour=flavour, check=True, **kw)  # type: ignore[arg-type]
    return Machine(asp, pager, cpus)


def refused(out: FaultOutcome, code: int, words: str) -> None:
    assert not out.resolved and out.signal == SIGSEGV and out.si_code == code, out
    assert words in out.reason, out.reason


# -- reserve, commit, PTEs ---------------------------------------------------------------------


def test_mmap_reserves_and_a_fault_commits_one_page_into_the_page_tables() -> None:
    m = machine()
    a = m.asp.mmap(16 * PAGE, RW, name="stack")
    assert m.asp.costs()["committed_pages"] == 0 and m.pager.frames == 0
    assert m.pager.pte_writes == 0
    assert isinstance(m.walk(a + 5 * PAGE), PageFault)
    out = m.asp.fault(a + 5 * PAGE + 12, write=True)
    assert out.action == "commit" and out.resolved
    t = m.walk(a + 5 * PAGE + 12, Access.WRITE)
    assert isinstance(t, Translation) and t.writable and t.user and t.nx
    assert isinstance(m.walk(a + 4 * PAGE), PageFault)  # only that page
    assert (m.pager.frames, m.pager.pte_writes) == (1, 1)
    m.pager._check()


@pytest.mark.parametrize(("mode", "hi"), [("32", 0xC000_0000), ("pae", 0xC000_0000)])
def test_the_other_paging_modes(mode: str, hi: int) -> None:
    pager = HwPager(PhysMem(), MODES[mode])
    assert pager.nx == (mode == "pae")
    asp = AddressSpace(pager, LO, hi, check=True)
    a = asp.mmap(4 * PAGE, RW)
    assert asp.fault(a + PAGE, write=True).action == "commit"
    res = translate(pager.mem, ControlState.for_mode(mode, pager.cr3, nxe=True), a + PAGE, cpl=3)
    assert isinstance(res, Translation) and res.writable and res.nx == (mode == "pae")
    asp.mprotect(a, 4 * PAGE, Prot.READ)
    asp.munmap(a, 4 * PAGE)
    pager._check()


def test_the_cpu_access_is_retried_and_lands_in_the_frame() -> None:
    m = machine()
    a = m.asp.mmap(4 * PAGE, RW)
    assert m.touch(a + 100) is None
    assert m.cpus[0].read(a + 100, 1) == b"\x5a"
    assert m.asp.fault(a + 100, write=True).action == "present"  # spurious: nothing to do


def test_read_only_area_commits_read_only_and_refuses_writes() -> None:
    m = machine()
    a = m.asp.mmap(PAGE, Prot.READ, name="ro")
    assert m.touch(a, write=False) is None
    t = m.walk(a)
    assert isinstance(t, Translation) and not t.writable
    refused(m.asp.fault(a, write=True), SEGV_ACCERR, "write not allowed by r--")
    refused(m.asp.fault(a, write=False, exec=True), SEGV_ACCERR, "fetch")


def test_prot_none_area_is_accerr_and_no_area_is_maperr() -> None:
    m = machine()
    a = m.asp.mmap(PAGE, Prot.NONE, name="reserve")
    refused(m.asp.fault(a, write=False), SEGV_ACCERR, "read not allowed by ---")
    refused(m.asp.fault(a - PAGE, write=False), SEGV_MAPERR, "no area")
    refused(m.asp.fault(LO - 1, write=False), SEGV_MAPERR, "outside")
    assert m.asp.fault(a, write=False).si_addr == a


def test_populate_commits_eagerly_and_refuses_guards() -> None:
    m = machine()
    a = m.asp.mmap(8 * PAGE, Prot.NONE, name="stack")
    m.asp.mprotect(a + PAGE, 7 * PAGE, RW)
    assert m.asp.populate(a + 4 * PAGE, 4 * PAGE) == 4
    assert m.asp.populate(a + 4 * PAGE, 4 * PAGE) == 0
    with pytest.raises(MmError, match=r"populate\(0x[0-9a-f]+, 8192\): EFAULT") as e:
        m.asp.populate(a, 2 * PAGE)
    assert e.value.errno == "EFAULT" and m.pager.frames == 4


# -- Linux growsdown: gap, exemptions, rlimit --------------------------------------------------


def gap_setup(flavour: MmFlavour, prev_prot: Prot = RW, prev_flags: int = ANON) -> Machine:
    """``prev`` one page at LO; a 4-page growsdown ``stack`` far enough above it to grow."""
    m = machine(flavour)
    m.asp.mmap(PAGE, prev_prot, prev_flags | MAP_FIXED, LO, name="prev")
    m.asp.mmap(4 * PAGE, RW, STACK | MAP_FIXED, LO + GAP + 64 * PAGE, name="stack")
    return m


@pytest.mark.parametrize("flavour", [LINUX, NANOS], ids=["linux", "nanos"])
def test_growth_to_exactly_prev_end_plus_gap_succeeds(flavour: MmFlavour) -> None:
    m = gap_setup(flavour)
    out = m.asp.fault(LO + PAGE + GAP, write=True)
    assert out.action == "grow" and out.grown_pages == 63
    stack = m.asp.find(LO + PAGE + GAP)
    assert stack is not None and stack.start == LO + PAGE + GAP and len(stack.committed) == 1
    assert isinstance(m.walk(LO + PAGE + GAP, Access.WRITE), Translation)


@pytest.mark.parametrize("flavour", [LINUX, NANOS], ids=["linux", "nanos"])
def test_growth_one_page_into_the_gap_is_maperr(flavour: MmFlavour) -> None:
    m = gap_setup(flavour)
    for addr in (LO + GAP, LO + PAGE + GAP - 1):  # the page below the boundary
        refused(m.asp.fault(addr, write=True), SEGV_MAPERR, "stack guard gap of 256 pages")
    assert m.asp.find(LO + GAP + 64 * PAGE).start == LO + GAP + 64 * PAGE  # type: ignore[union-attr]


def test_prot_none_prev_does_not_block_growth_on_linux_but_does_on_nanos() -> None:
    linux = gap_setup(LINUX, prev_prot=Prot.NONE)
    assert linux.asp.fault(LO + PAGE, write=True).action == "grow"  # right up to prev
    nanos = gap_setup(NANOS, prev_prot=Prot.NONE)
    refused(nanos.asp.fault(LO + PAGE, write=True), SEGV_MAPERR, "gap")
    # an accessible prev blocks on Linux too
    refused(gap_setup(LINUX).asp.fault(LO + PAGE, write=True), SEGV_MAPERR, "gap")


def test_growsdown_prev_does_not_block_growth_on_linux_but_does_on_nanos() -> None:
    assert gap_setup(LINUX, prev_flags=STACK).asp.fault(LO + PAGE, write=True).resolved
    refused(gap_setup(NANOS, prev_flags=STACK).asp.fault(LO + PAGE, True), SEGV_MAPERR, "gap")


def test_linux_rlimit_stack_counts_one_page_less() -> None:
    m = machine(rlimit_stack=16 * PAGE)
    top = LO + 1024 * PAGE
    m.asp.mmap(PAGE, RW, STACK | MAP_FIXED, top - PAGE, name="stack")
    refused(m.asp.fault(top - 18 * PAGE, write=True), SEGV_MAPERR, "RLIMIT_STACK")
    out = m.asp.fault(top - 17 * PAGE, write=True)  # 17 pages, minus one: 16 = the limit
    assert out.action == "grow" and out.grown_pages == 16


def test_nanos_rlimit_test_uses_the_unaligned_address() -> None:
    top = LO + 1024 * PAGE
    for flavour, ok in ((NANOS, False), (LINUX, True)):
        m = machine(flavour, rlimit_stack=16 * PAGE)
        m.asp.mmap(PAGE, RW, STACK | MAP_FIXED, top - PAGE, name="stack")
        assert m.asp.fault(top - 16 * PAGE - 1, write=True).resolved is ok
    m = machine(NANOS, rlimit_stack=16 * PAGE)
    m.asp.mmap(PAGE, RW, STACK | MAP_FIXED, top - PAGE, name="stack")
    assert m.asp.fault(top - 16 * PAGE, write=True).grown_pages == 15


def test_nanos_gap_test_uses_the_aligned_address() -> None:
    m = gap_setup(NANOS)
    assert m.asp.fault(LO + PAGE + GAP + 123, write=True).action == "grow"


def test_nanos_gap_subtraction_is_unsigned() -> None:
    """``vaddr - PROCESS_STACK_GUARD_GAP`` wraps below the gap, and then nothing blocks."""
    m = machine(NANOS, lo=PAGE)
    m.asp.mmap(PAGE, RW, ANON | MAP_FIXED, PAGE, name="prev")
    m.asp.mmap(PAGE, RW, STACK | MAP_FIXED, 16 * PAGE, name="stack")
    assert m.asp.fault(2 * PAGE, write=True).action == "grow"
    linux = machine(LINUX, lo=PAGE)
    linux.asp.mmap(PAGE, RW, ANON | MAP_FIXED, PAGE, name="prev")
    linux.asp.mmap(PAGE, RW, STACK | MAP_FIXED, 16 * PAGE, name="stack")
    refused(linux.asp.fault(2 * PAGE, write=True), SEGV_MAPERR, "gap")


def test_growth_then_prot_check_accerr_on_a_prot_none_stack() -> None:
    m = machine()
    m.asp.mmap(PAGE, Prot.NONE, STACK | MAP_FIXED, LO + 64 * PAGE, name="stack")
    refused(m.asp.fault(LO + 60 * PAGE, write=True), SEGV_ACCERR, "write not allowed")
    assert m.asp.find(LO + 60 * PAGE) is not None  # it grew first, as Linux does


def test_placement_keeps_the_gap_below_a_growsdown_area_and_map_fixed_does_not() -> None:
    m = machine()
    s = m.asp.mmap(8 * PAGE, RW, STACK, name="stack")
    assert s == HI - 8 * PAGE
    a = m.asp.mmap(PAGE, RW, name="below")
    assert a + PAGE == s - GAP
    b = m.asp.mmap(PAGE, RW, ANON | MAP_FIXED, s - 2 * PAGE, name="clash")
    assert b == s - 2 * PAGE
    refused(m.asp.fault(s - PAGE, write=True), SEGV_MAPERR, "gap")
    assert m.asp.mmap(PAGE, RW, addr=LO + 8 * PAGE) == LO + 8 * PAGE  # a free hint is taken


# -- map_count, splits, merges -----------------------------------------------------------------


def small_linux(limit: int) -> MmFlavour:
    return attrs.evolve(LINUX, max_map_count=limit)


def test_default_ceiling_is_65530() -> None:
    assert LINUX.max_map_count == 65530 and NANOS.max_map_count is None


def test_mprotect_enomem_on_the_split_that_exceeds_max_map_count() -> None:
    m = machine(small_linux(4))
    areas = [m.asp.mmap(4 * PAGE, RW, name=f"a{i}") for i in range(3)]
    with pytest.raises(MmError) as e:
        m.asp.mprotect(areas[0] + PAGE, PAGE, Prot.NONE)  # needs two splits: 3 -> 4 -> refused
    assert e.value.errno == "ENOMEM"
    assert str(e.value) == (
        f"mprotect({areas[0] + PAGE:#x}, 4096, PROT_NONE): ENOMEM: vm.max_map_count (4) reached"
    )
    assert len(m.asp) == 4  # the first split stays made, as in Linux
    ok = machine(small_linux(5))
    a = ok.asp.mmap(4 * PAGE, RW, name="a")
    ok.asp.mmap(4 * PAGE, RW, name="b")
    ok.asp.mprotect(a + PAGE, PAGE, Prot.NONE)
    assert len(ok.asp) == 4


def test_mprotect_back_merges_on_linux() -> None:
    m = machine()
    a = m.asp.mmap(32 * PAGE, RW, name="coro")
    before = m.asp.costs()
    m.asp.mprotect(a, PAGE, Prot.NONE)  # RethinkDB's guard: +1 area
    assert costs_delta(before, m.asp.costs())["areas"] == 1
    m.asp.mprotect(a, PAGE, RW)
    assert costs_delta(before, m.asp.costs())["areas"] == 0


def test_boundary_move_needs_no_split_at_the_ceiling() -> None:
    m = machine(small_linux(2))
    a = m.asp.mmap(4 * PAGE, RW, ANON | MAP_FIXED, LO, name="s")
    m.asp.mmap(4 * PAGE, Prot.NONE, ANON | MAP_FIXED, a + 4 * PAGE, name="s")
    assert len(m.asp) == 2
    m.asp.mprotect(a + 4 * PAGE, PAGE, RW)  # vma_merge moves the boundary up
    assert len(m.asp) == 2 and m.asp.find(a + 4 * PAGE).prot == RW  # type: ignore[union-attr]
    m.asp.mprotect(a + 4 * PAGE, PAGE, Prot.NONE)  # and back down
    assert len(m.asp) == 2 and m.asp.find(a + 5 * PAGE).start == a + 4 * PAGE  # type: ignore[union-attr]
    with pytest.raises(MmError, match="ENOMEM"):  # a real split still needs room
        m.asp.mprotect(a + PAGE, PAGE, Prot.NONE)


def test_mmap_may_reach_the_ceiling_plus_one_and_no_further() -> None:
    m = machine(small_linux(2))
    for i in range(3):
        m.asp.mmap(PAGE, RW, name=f"m{i}")
    with pytest.raises(MmError, match="ENOMEM: vm.max_map_count"):
        m.asp.mmap(PAGE, RW, name="m3")


def test_munmap_in_the_middle_at_the_ceiling_is_enomem_at_an_end_is_fine() -> None:
    m = machine(small_linux(1))
    a = m.asp.mmap(4 * PAGE, RW)
    with pytest.raises(MmError, match=r"munmap\(.*ENOMEM"):
        m.asp.munmap(a + PAGE, PAGE)
    m.asp.munmap(a, PAGE)
    assert len(m.asp) == 1


def test_mprotect_of_a_hole_is_enomem() -> None:
    m = machine()
    a = m.asp.mmap(PAGE, RW, ANON | MAP_FIXED, LO)
    with pytest.raises(MmError, match="ENOMEM: .* is not mapped"):
        m.asp.mprotect(a, 2 * PAGE, Prot.READ)


# -- Haiku -----------------------------------------------------------------------------------


def test_haiku_mprotect_does_not_split_middle_munmap_does() -> None:
    m = machine(HAIKU)
    a = m.asp.mmap(8 * PAGE, RW, name="area")
    assert m.touch(a + 2 * PAGE) is None
    m.asp.mprotect(a + 2 * PAGE, PAGE, Prot.NONE)
    assert len(m.asp) == 1
    assert isinstance(m.walk(a + 2 * PAGE), PageFault)  # PROT_NONE: frame kept, not present
    assert m.pager.resident(a + 2 * PAGE)
    refused(m.asp.fault(a + 2 * PAGE, write=False), SEGV_ACCERR, "---")
    assert m.touch(a + 3 * PAGE) is None
    m.asp.mprotect(a + 2 * PAGE, PAGE, RW)  # back: present again, same frame
    assert m.cpus[0].read(a + 2 * PAGE, 1) == b"\x5a"
    m.asp.munmap(a + 4 * PAGE, PAGE)  # cut_area
    assert len(m.asp) == 2


def test_haiku_stack_area_guard_is_maperr_inside_one_area() -> None:
    m = machine(HAIKU)
    a = m.asp.mmap(20 * PAGE, RW, name="t_1_stack", guard_size=4 * PAGE)
    assert len(m.asp) == 1
    refused(m.asp.fault(a + 4 * PAGE - 1, write=True), SEGV_MAPERR, "B_STACK_AREA guard")
    assert m.asp.fault(a + 4 * PAGE, write=True).action == "commit"
    with pytest.raises(MmError, match="EINVAL"):
        m.asp.mmap(PAGE, RW, STACK)
    with pytest.raises(MmError, match="EINVAL"):
        machine(LINUX).asp.mmap(2 * PAGE, RW, guard_size=PAGE)


# -- guard markers (Linux 6.13) --------------------------------------------------------------


def test_guard_marker_zaps_without_splitting_and_is_maperr() -> None:
    m = machine(ncpus=2)
    a = m.asp.mmap(8 * PAGE, RW, name="stack")
    assert m.touch(a) is None and m.touch(a + PAGE, cpu=1) is None
    before = m.asp.costs()
    m.asp.madvise_guard_install(a, PAGE)
    d = costs_delta(before, m.asp.costs())
    assert d["areas"] == 0 and d["frames"] == -1 and d["guard_markers"] == 1
    assert d["pte_writes"] == 1 and d["shootdowns"] == 1
    assert m.cpus[0].tlb.peek(a) is None
    refused(m.asp.fault(a, write=True), SEGV_MAPERR, "guard marker")
    m.asp.mprotect(a, 8 * PAGE, Prot.READ)  # markers survive protection changes
    refused(m.asp.fault(a, write=False), SEGV_MAPERR, "guard marker")
    refused(m.asp.fault(a, write=True), SEGV_ACCERR, "write")  # rights are checked first
    m.asp.madvise_guard_remove(a, PAGE)
    assert m.asp.fault(a, write=False).action == "commit"
    with pytest.raises(MmError, match="EINVAL"):
        machine(NANOS).asp.madvise_guard_install(a, PAGE)


# -- arguments -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.munmap(LO + 1, PAGE), rf"munmap\({LO + 1:#x}, 4096\): EINVAL: address"),
        (lambda s: s.mprotect(LO, 0, Prot.READ), r"mprotect\(.*\): EINVAL: length"),
        (lambda s: s.mmap(0, RW), r"mmap\(0x0, 0, PROT_READ\|PROT_WRITE, .*\): EINVAL"),
        (lambda s: s.mmap(PAGE, RW, ANON | MAP_FIXED), "EINVAL: MAP_FIXED without"),
        (lambda s: s.mmap(PAGE, RW, MAP_SHARED | MAP_GROWSDOWN), "EINVAL: MAP_GROWSDOWN"),
        (lambda s: s.munmap(HI - PAGE, 2 * PAGE), "EINVAL: range outside"),
        (lambda s: s.madvise_guard_install(LO + 3, PAGE), r"madvise\(.*GUARD_INSTALL\): EINVAL"),
    ],
)
def test_bad_arguments_are_einval_naming_the_call(call, message) -> None:  # type: ignore[no-untyped-def]
    m = machine()
    with pytest.raises(MmError, match=message) as e:
        call(m.asp)
    assert e.value.errno == "EINVAL"


# -- costs, TLBs -----------------------------------------------------------------------------


def test_cost_of_a_glibc_style_stack_created_used_and_destroyed() -> None:
    m = machine(ncpus=2)
    before = m.asp.costs()
    a = m.asp.mmap(16 * PAGE, Prot.NONE, name="thread")
    m.asp.mprotect(a + PAGE, 15 * PAGE, RW)  # guard at the lowest page
    for i in (15, 14, 13):
        assert m.touch(a + i * PAGE, cpu=i % 2) is None
    made = costs_delta(before, m.asp.costs())
    assert made["areas"] == 2 and made["virtual_pages"] == 16
    assert (made["frames"], made["pte_writes"], made["shootdowns"]) == (3, 3, 0)
    assert made["table_pages"] == 3  # PDPT, PD, PT below the root
    m.asp.munmap(a, 16 * PAGE)
    gone = costs_delta(before, m.asp.costs())
    assert (gone["areas"], gone["frames"], gone["pte_writes"], gone["shootdowns"]) == (0, 0, 6, 1)
    for cpu in m.cpus:
        assert not cpu.tlb.cached()
    assert m.touch(a + 15 * PAGE) == m.asp.fault(a + 15 * PAGE, True)  # no stale translation
    m.pager._check()


def test_one_cpu_invalidates_without_a_shootdown() -> None:
    m = machine(ncpus=1)
    a = m.asp.mmap(PAGE, RW)
    assert m.touch(a) is None
    m.asp.mprotect(a, PAGE, Prot.READ)
    assert m.cpus[0].tlb.peek(a) is None and m.pager.shootdowns == 0
    refused(m.touch(a) or m.asp.fault(a, True), SEGV_ACCERR, "write")


# -- _check can fail -------------------------------------------------------------------------


def test_check_catches_a_committed_page_without_a_pte() -> None:
    m = machine()
    a = m.asp.mmap(2 * PAGE, RW)
    m.asp.find(a).committed.add(a)  # type: ignore[union-attr]
    with pytest.raises(AssertionError, match="holds no frame"):
        m.asp._check()


def test_check_catches_a_pte_for_an_uncommitted_page() -> None:
    m = machine()
    a = m.asp.mmap(2 * PAGE, RW)
    m.asp.fault(a, True)
    m.asp.find(a).committed.clear()  # type: ignore[union-attr]
    with pytest.raises(AssertionError, match="frames|present, not committed"):
        m.asp._check()


def test_check_catches_an_area_placed_in_the_gap() -> None:
    m = machine()
    s = m.asp.mmap(PAGE, RW, STACK, name="stack")
    m.asp.mmap(PAGE, RW, ANON | MAP_FIXED, s - 2 * PAGE)
    m.asp._check()  # MAP_FIXED may go there
    m.asp.find(s - 2 * PAGE).fixed = False  # type: ignore[union-attr]
    with pytest.raises(AssertionError, match="in the gap below"):
        m.asp._check()


# -- random sequences --------------------------------------------------------------------------

SMALL = 16  # pages in the state machine's address space: small, so that operations collide
TEST_FLAVOURS = {
    "linux": attrs.evolve(LINUX, stack_guard_gap=4 * PAGE, max_map_count=10),
    "nanos": attrs.evolve(NANOS, stack_guard_gap=4 * PAGE),
    "haiku": HAIKU,
}
pages = st.integers(0, SMALL - 1)
prots = st.sampled_from([Prot.NONE, Prot.READ, RW, RW | Prot.EXEC])


class AreasMachine(RuleBasedStateMachine):
    flavour: MmFlavour = LINUX

    def __init__(self) -> None:
        super().__init__()
        self.m = machine(self.flavour, ncpus=2, lo=LO, hi=LO + SMALL * PAGE, rlimit_stack=8 * PAGE)

    def _try(self, fn, *args, **kw) -> None:  # type: ignore[no-untyped-def]
        try:
            fn(*args, **kw)
        except MmError as e:
            assert e.errno in {"ENOMEM", "EINVAL", "EFAULT"}, e
            assert "(" in str(e) and e.errno in str(e)

    @rule(n=st.integers(1, 8), prot=prots, grows=st.booleans(), at=st.none() | pages)
    def mmap(self, n: int, prot: Prot, grows: bool, at: int | None) -> None:
        flags = (STACK if grows else ANON) | (MAP_FIXED if at is not None else 0)
        addr = None if at is None else LO + at * PAGE
        self._try(self.m.asp.mmap, n * PAGE, prot, flags, addr, name="g" if grows else "")

    @rule(at=pages, n=st.integers(1, 8))
    def munmap(self, at: int, n: int) -> None:
        self._try(self.m.asp.munmap, LO + at * PAGE, n * PAGE)

    @rule(at=pages, n=st.integers(1, 8), prot=prots)
    def mprotect(self, at: int, n: int, prot: Prot) -> None:
        self._try(self.m.asp.mprotect, LO + at * PAGE, n * PAGE, prot)

    @rule(at=pages, n=st.integers(1, 3), install=st.booleans())
    def guard(self, at: int, n: int, install: bool) -> None:
        fn = self.m.asp.madvise_guard_install if install else self.m.asp.madvise_guard_remove
        self._try(fn, LO + at * PAGE, n * PAGE)

    @rule(at=pages, n=st.integers(1, 4))
    def populate(self, at: int, n: int) -> None:
        self._try(self.m.asp.populate, LO + at * PAGE, n * PAGE)

    @rule(at=pages, off=st.integers(0, PAGE - 1), write=st.booleans(), cpu=st.integers(0, 1))
    def access(self, at: int, off: int, write: bool, cpu: int) -> None:
        va = LO + at * PAGE + off
        out = self.m.touch(va, write, cpu)
        area = self.m.asp.find(va)
        if out is None:  # the access went through: the areas must allow it
            page = va & ~(PAGE - 1)
            assert area is not None and allows(area.prot_at(page), write, False)
            assert page in area.committed and page not in area.guards
        else:
            assert out.si_addr == va and out.si_code in (SEGV_MAPERR, SEGV_ACCERR)
            if out.si_code == SEGV_ACCERR:
                assert area is not None

    @invariant()
    def consistent(self) -> None:
        self.m.asp._check()
        self.m.pager._check()


@pytest.mark.parametrize("name", sorted(TEST_FLAVOURS))
def test_random_sequences_keep_the_invariants(name: str) -> None:
    cls = type(f"AreasMachine_{name}", (AreasMachine,), {"flavour": TEST_FLAVOURS[name]})
    cls.TestCase().runTest()  # type: ignore[attr-defined]
