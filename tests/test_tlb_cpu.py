"""Unit tests for ``Tlb`` and ``Cpu`` (Intel SDM Vol. 3A §4.4.1, §4.7, §4.10;
canonical addresses: Vol. 1 §3.3.7.1).

Page tables are written by hand (``Tables`` below), not with ``mmusim.hw.pagetables``. Data frames
hold distinct byte patterns, so a read shows which frame a translation went to.
"""

from __future__ import annotations

import pytest

from helpers import NX, PS, PTR, RW, US, A, D, G, P, frame_counter
from mmusim.hw import (
    Access,
    ControlState,
    Cpu,
    PageFault,
    PhysMem,
    Tlb,
    TlbEntry,
    Trap,
)
from mmusim.hw.tlb import R_DIRTY, R_NX, R_USER, R_WRITABLE

# -------------------------------------------------------------------------------------------------
# Tlb
# -------------------------------------------------------------------------------------------------


def test_tlb_fill_and_lookup_4k() -> None:
    tlb = Tlb()
    assert tlb.lookup(0x1234_5678) is None
    e = tlb.fill(0x1234_5678, 0xABC000, 4096, R_USER | R_WRITABLE, False)
    assert e == TlbEntry(0x1234_5000, 0xABC000, 4096, R_USER | R_WRITABLE, False)
    assert tlb.lookup(0x1234_5000) == e
    assert tlb.lookup(0x1234_5FFF) == e
    assert tlb.lookup(0x1234_6000) is None
    assert tlb.lookup(0x1234_4FFF) is None
    assert len(tlb) == 1
    assert (tlb.hits, tlb.misses) == (2, 3)
    tlb._check()


def test_tlb_fill_replaces_same_page() -> None:
    tlb = Tlb()
    tlb.fill(0x5000, 0x1000, 4096, 0, False)
    tlb.fill(0x5ABC, 0x9000, 4096, R_DIRTY, True)
    assert len(tlb) == 1
    e = tlb.lookup(0x5000)
    assert e is not None and (e.frame, e.rights, e.global_) == (0x9000, R_DIRTY, True)


def test_tlb_invlpg() -> None:
    tlb = Tlb()
    tlb.fill(0x7000, 0x1000, 4096, 0, False)
    tlb.fill(0x8000, 0x2000, 4096, 0, True)
    tlb.invlpg(0x7FFF)  # any address in the page
    assert tlb.lookup(0x7000) is None
    assert tlb.lookup(0x8000) is not None
    tlb.invlpg(0x8123)  # global entries too
    assert tlb.lookup(0x8000) is None
    assert len(tlb) == 0
    tlb.invlpg(0x9000)  # nothing cached there: no error


@pytest.mark.parametrize(
    ("size", "va", "frame", "inside", "outside"),
    [
        (1 << 21, 0x4012_3456, 0x8000_0000, (0x4000_0000, 0x401F_FFFF, 0x401A_B000), 0x4020_0000),
        (1 << 22, 0x0076_5432, 0x1_0040_0000, (0x0040_0000, 0x007F_FFFF), 0x0080_0000),
        (1 << 30, 0x7F_C123_4567, 0x40_0000_0000, (0x7F_C000_0000, 0x7F_FFFF_FFFF), 0x80_0000_0000),
    ],
    ids=["2M", "4M", "1G"],
)
def test_tlb_large_page_is_one_entry(size, va, frame, inside, outside) -> None:
    tlb = Tlb()
    e = tlb.fill(va, frame, size, R_WRITABLE, False)
    assert e.page == va & ~(size - 1)
    assert len(tlb) == 1
    for a in inside:
        assert tlb.lookup(a) == e
    assert tlb.lookup(outside) is None
    assert tlb.lookup(inside[0] - 1) is None
    tlb._check()
    # invlpg of any address inside the large page removes the whole entry.
    tlb.invlpg(inside[-1])
    assert len(tlb) == 0
    assert tlb.lookup(inside[0]) is None


def test_tlb_flush_nonglobal_and_flush_all() -> None:
    tlb = Tlb()
    tlb.fill(0x1000, 0xA000, 4096, 0, False)
    tlb.fill(0x2000, 0xB000, 4096, 0, True)
    tlb.fill(0x40_0000, 0x80_0000, 1 << 21, 0, False)
    tlb.fill(0x60_0000, 0xA0_0000, 1 << 21, 0, True)
    tlb.fill(0x4000_0000, 0x8000_0000, 1 << 30, 0, True)
    assert len(tlb) == 5
    tlb.flush_nonglobal()
    assert [e.page for e in tlb.entries()] == [0x2000, 0x60_0000, 0x4000_0000]
    assert tlb.lookup(0x1000) is None and tlb.lookup(0x40_0000) is None
    assert tlb.lookup(0x60_0ABC) is not None
    tlb._check()
    tlb.flush_all()
    assert len(tlb) == 0
    assert tlb.entries() == []


def test_tlb_entries_sorted_and_describe() -> None:
    tlb = Tlb()
    tlb.fill(0x9000, 0x1000, 4096, R_USER | R_WRITABLE | R_DIRTY, True)
    tlb.fill(0x20_0000, 0x40_0000, 1 << 21, R_NX, False)
    tlb.fill(0x3000, 0x2000, 4096, 0, False)
    assert [e.page for e in tlb.entries()] == [0x3000, 0x9000, 0x20_0000]
    assert tlb.entries()[1].describe() == "0x9000 -> 0x1000 (4K UWXDG)"
    assert tlb.entries()[2].describe() == "0x200000 -> 0x400000 (2048K SR---)"


def test_tlb_check_fails_on_corruption(capsys: pytest.CaptureFixture[str]) -> None:
    tlb = Tlb()
    tlb.fill(0x5000, 0x1000, 4096, 0, False)
    tlb._check()
    tlb._pages[0x6] = TlbEntry(0x5000, 0x1000, 4096, 0, False)  # under the wrong key
    with pytest.raises(AssertionError):
        tlb._check()
    assert "Tlb._check failed" in capsys.readouterr().out
    tlb = Tlb()
    tlb._pages[0x5] = TlbEntry(0x5000, 0x1234, 4096, 0, False)  # unaligned frame
    with pytest.raises(AssertionError):
        tlb._check()
    tlb = Tlb()
    tlb._by_shift[21][0x2] = TlbEntry(0x40_0000, 0x1000, 1 << 21, 0, False)  # 4K-aligned frame
    with pytest.raises(AssertionError):
        tlb._check()


# -------------------------------------------------------------------------------------------------
# Hand-written page tables for the Cpu tests
# -------------------------------------------------------------------------------------------------


class Tables:
    """IA-32e tables: PML4 at 0x1000, other tables from 0x2000 up; pointers are P|RW|US."""

    def __init__(self, mem: PhysMem) -> None:
        self.mem = mem
        self.root = 0x1000
        self.alloc = frame_counter(0x2000)

    def _down(self, entry_addr: int) -> int:
        e = self.mem.read_u64(entry_addr)
        if e & P:
            return e & 0xFF_FFFF_F000
        t = self.alloc()
        self.mem.write_u64(entry_addr, t | PTR)
        return t

    def slot(self, va: int, leaf_shift: int = 12) -> int:
        t = self.root
        for shift in (39, 30, 21, 12):
            a = t + ((va >> shift) & 511) * 8
            if shift == leaf_shift:
                return a
            t = self._down(a)
        raise AssertionError

    def map(self, va: int, pa: int, flags: int) -> int:
        a = self.slot(va)
        self.mem.write_u64(a, pa | flags)
        return a

    def map2m(self, va: int, pa: int, flags: int) -> int:
        a = self.slot(va, 21)
        self.mem.write_u64(a, pa | PS | flags)
        return a


VA1, VA2, VA3 = 0x40_0000, 0x40_1000, 0x40_2000
F1, F2, F3 = 0x100_0000, 0x200_0000, 0x300_0000


def machine(pge: bool = False, **flags: bool) -> tuple[Cpu, Tables]:
    mem = PhysMem()
    t = Tables(mem)
    for f, byte in ((F1, 0x11), (F2, 0x22), (F3, 0x33)):
        mem.write(f, bytes([byte]) * 4096)
    ctl = ControlState.for_mode("ia32e", t.root, nxe=True, pge=pge, **flags)
    return Cpu(mem, ctl, cpu_id=3), t


def test_cpu_reads_through_tables() -> None:
    cpu, t = machine()
    t.map(VA1, F1, P | RW)
    assert cpu.read(VA1 + 5, 3) == b"\x11\x11\x11"
    assert cpu.translate(VA1 + 0x123) == F1 + 0x123
    assert len(cpu.tlb) == 1


# -------------------------------------------------------------------------------------------------
# Stale entries and invalidation (Intel SDM Vol. 3A §4.10.4)
# -------------------------------------------------------------------------------------------------


def test_stale_entry_used_until_invlpg() -> None:
    cpu, t = machine()
    pte = t.map(VA1, F1, P | RW)
    assert cpu.read(VA1, 1) == b"\x11"
    walks = cpu.walks
    cpu.mem.write_u64(pte, 0)  # PTE cleared in memory, no invalidation
    assert cpu.read(VA1 + 7, 2) == b"\x11\x11"  # the old frame, through the TLB
    assert cpu.translate(VA1 + 7) == F1 + 7
    assert cpu.walks == walks
    cpu.invlpg(VA1 + 0x800)
    with pytest.raises(Trap) as ei:
        cpu.read(VA1 + 7, 1)
    assert (ei.value.vector, ei.value.error_code, ei.value.cr2) == (14, 0x0, VA1 + 7)


def test_stale_entry_after_remap_goes_to_old_frame() -> None:
    cpu, t = machine()
    pte = t.map(VA1, F1, P | RW)
    assert cpu.read(VA1, 1) == b"\x11"
    cpu.mem.write_u64(pte, F2 | P | RW)
    assert cpu.read(VA1, 1) == b"\x11"
    cpu.invlpg(VA1)
    assert cpu.read(VA1, 1) == b"\x22"


def test_not_present_is_never_cached() -> None:
    cpu, t = machine()
    pte = t.map(VA1, F1, RW)  # P=0
    with pytest.raises(Trap):
        cpu.read(VA1, 1)
    assert len(cpu.tlb) == 0
    cpu.mem.write_u64(pte, F1 | P | RW)  # P 0 -> 1 needs no invalidation
    assert cpu.read(VA1, 1) == b"\x11"


@pytest.mark.parametrize(("pge", "global_kept"), [(True, True), (False, False)])
def test_cr3_write_flushes_nonglobal(pge: bool, global_kept: bool) -> None:
    cpu, t = machine(pge=pge)
    pte1 = t.map(VA1, F1, P | RW | G)
    pte2 = t.map(VA2, F2, P | RW)
    assert cpu.read(VA1, 1) == b"\x11"
    assert cpu.read(VA2, 1) == b"\x22"
    cpu.mem.write_u64(pte1, 0)
    cpu.mem.write_u64(pte2, 0)
    cpu.write_cr3(t.root)
    assert cpu.ctl.cr3 == t.root
    if global_kept:
        assert cpu.read(VA1, 1) == b"\x11"
    else:
        with pytest.raises(Trap) as ei:
            cpu.read(VA1, 1)
        assert ei.value.vector == 14
    with pytest.raises(Trap) as ei:
        cpu.read(VA2, 1)
    assert ei.value.vector == 14 and ei.value.cr2 == VA2


def test_cr3_write_global_in_table_pointer_only_is_not_global() -> None:
    cpu, t = machine(pge=True)
    pte = t.map(VA1, F1, P | RW)
    pde = t.slot(VA1, 21)
    cpu.mem.write_u64(pde, cpu.mem.read_u64(pde) | G)  # G in a PDE pointer is ignored
    assert cpu.read(VA1, 1) == b"\x11"
    cpu.mem.write_u64(pte, 0)
    cpu.write_cr3(t.root)
    with pytest.raises(Trap):
        cpu.read(VA1, 1)


def test_cr3_write_reserved_bits_gp() -> None:
    cpu, t = machine()
    with pytest.raises(Trap) as ei:
        cpu.write_cr3(t.root | (1 << 40))  # bits 63:M reserved (M=40)
    assert ei.value.vector == 13
    assert cpu.ctl.cr3 == t.root


@pytest.mark.parametrize("start", [False, True])
def test_set_control_pge_flushes_everything(start: bool) -> None:
    cpu, t = machine(pge=start)
    pte = t.map(VA1, F1, P | RW | G)
    assert cpu.read(VA1, 1) == b"\x11"
    cpu.mem.write_u64(pte, 0)
    cpu.set_control(pge=not start)
    assert len(cpu.tlb) == 0
    with pytest.raises(Trap):
        cpu.read(VA1, 1)


def test_invlpg_removes_global_entry() -> None:
    cpu, t = machine(pge=True)
    pte = t.map(VA1, F1, P | RW | G)
    assert cpu.read(VA1, 1) == b"\x11"
    cpu.mem.write_u64(pte, F2 | P | RW | G)
    cpu.write_cr3(t.root)
    assert cpu.read(VA1, 1) == b"\x11"  # global: survives CR3
    cpu.invlpg(VA1)
    assert cpu.read(VA1, 1) == b"\x22"


def test_invlpg_large_page_any_address() -> None:
    cpu, t = machine()
    pde = t.map2m(0x60_0000, 0x80_0000, P | RW)
    cpu.mem.write(0x80_0000 + 0x1_2345, b"\x5a")
    cpu.mem.write(0xA0_0000 + 0x1_2345, b"\xa5")
    assert cpu.read(0x61_2345, 1) == b"\x5a"
    assert len(cpu.tlb) == 1
    assert cpu.read(0x7F_F000, 1) == b"\0"  # same entry
    assert len(cpu.tlb) == 1
    cpu.mem.write_u64(pde, 0xA0_0000 | PS | P | RW)
    assert cpu.read(0x61_2345, 1) == b"\x5a"
    cpu.invlpg(0x7A_B000)  # elsewhere in the same 2M page
    assert cpu.read(0x61_2345, 1) == b"\xa5"


def test_invlpg_at_cpl3_is_gp() -> None:
    cpu, t = machine()
    t.map(VA1, F1, P | RW | US)
    cpu.read(VA1, 1)
    cpu.cpl = 3
    with pytest.raises(Trap) as ei:
        cpu.invlpg(VA1)
    assert (ei.value.vector, ei.value.error_code, ei.value.cr2) == (13, 0, None)
    assert len(cpu.tlb) == 1


def test_invlpg_non_canonical_is_noop() -> None:
    cpu, t = machine()
    t.map(VA1, F1, P | RW)
    cpu.read(VA1, 1)
    cpu.invlpg(0x0000_8000_0000_0000)
    assert len(cpu.tlb) == 1


def test_page_fault_invalidates_that_page() -> None:
    cpu, t = machine()
    pte = t.map(VA1, F1, P | RW)  # supervisor page
    assert cpu.read(VA1, 1) == b"\x11"
    cpu.mem.write_u64(pte, F2 | P | RW)  # changed without invlpg
    cpu.cpl = 3
    with pytest.raises(Trap) as ei:
        cpu.read(VA1, 1)
    assert ei.value.error_code == 0x5
    cpu.cpl = 0
    # The #PF dropped the stale entry: the next access walks and sees F2.
    assert cpu.read(VA1, 1) == b"\x22"


def test_page_fault_invalidates_large_page_entry() -> None:
    cpu, t = machine()
    pde = t.map2m(0x60_0000, 0x80_0000, P | RW)
    cpu.mem.write(0xA0_0000, b"\xa5")
    assert cpu.read(0x60_0000, 1) == b"\0"
    cpu.mem.write_u64(pde, 0xA0_0000 | PS | P | RW)
    cpu.cpl = 3
    with pytest.raises(Trap):
        cpu.read(0x6F_0000, 1)  # another 4K piece of the same 2M page
    cpu.cpl = 0
    assert cpu.read(0x60_0000, 1) == b"\xa5"


def test_write_after_read_walks_again_and_sets_d() -> None:
    cpu, t = machine()
    pte = t.map(VA1, F1, P | RW)
    assert cpu.read(VA1, 1) == b"\x11"
    assert cpu.mem.read_u64(pte) == F1 | P | RW | A
    walks = cpu.walks
    cpu.write(VA1, b"\x99")
    assert cpu.walks == walks + 1
    assert cpu.mem.read_u64(pte) == F1 | P | RW | A | D
    assert cpu.mem.read(F1, 1) == b"\x99"
    # Now the entry is dirty: further writes hit the TLB.
    cpu.write(VA1 + 1, b"\x98")
    assert cpu.walks == walks + 1
    # Software clears D without invalidating: the processor need not set it again.
    cpu.mem.write_u64(pte, F1 | P | RW | A)
    cpu.write(VA1 + 2, b"\x97")
    assert cpu.mem.read_u64(pte) == F1 | P | RW | A


def test_write_to_readonly_cached_entry_faults() -> None:
    cpu, t = machine()
    t.map(VA1, F1, P)
    assert cpu.read(VA1, 1) == b"\x11"
    with pytest.raises(Trap) as ei:
        cpu.write(VA1, b"\0")
    assert ei.value.error_code == 0x3
    assert cpu.mem.read(F1, 1) == b"\x11"


def test_wp_change_applies_to_cached_entry() -> None:
    cpu, t = machine(wp=False)
    pte = t.map(VA1, F1, P)  # supervisor read-only
    cpu.write(VA1, b"\x01")  # WP=0: allowed; sets D, cached
    assert cpu.mem.read_u64(pte) == F1 | P | A | D
    assert len(cpu.tlb) == 1
    cpu.set_control(wp=True)
    assert len(cpu.tlb) == 1  # no flush
    with pytest.raises(Trap) as ei:
        cpu.write(VA1, b"\x02")
    assert ei.value.error_code == 0x3
    assert cpu.mem.read(F1, 1) == b"\x01"
    cpu.set_control(wp=False)
    cpu.write(VA1, b"\x03")
    assert cpu.mem.read(F1, 1) == b"\x03"


def test_smap_and_ac_apply_to_cached_entry() -> None:
    cpu, t = machine()
    pte = t.map(VA1, F1, P | RW | US)
    assert cpu.read(VA1, 1) == b"\x11"
    cpu.mem.write_u64(pte, 0)  # stale from here on: only the TLB entry knows VA1
    cpu.set_control(smap=True)
    assert len(cpu.tlb) == 1
    with pytest.raises(Trap) as ei:
        cpu.read(VA1, 1)
    assert ei.value.vector == 14
    # That #PF removed the entry; put the PTE back and cache it again under AC=1.
    cpu.mem.write_u64(pte, F1 | P | RW | US | A)
    cpu.set_control(ac=True)
    assert cpu.read(VA1, 1) == b"\x11"
    cpu.mem.write_u64(pte, 0)
    assert len(cpu.tlb) == 1
    assert cpu.read(VA1, 1) == b"\x11"  # AC=1 lets the cached user entry through
    cpu.set_control(ac=False)  # CLAC: no flush, but the access is refused now
    assert len(cpu.tlb) == 1
    with pytest.raises(Trap):
        cpu.read(VA1, 1)


def test_smap_fault_code_from_walk() -> None:
    cpu, t = machine(smap=True)
    t.map(VA1, F1, P | RW | US)
    with pytest.raises(Trap) as ei:
        cpu.read(VA1, 1)
    assert ei.value.error_code == 0x1
    with pytest.raises(Trap) as ei:
        cpu.write(VA1, b"\0")
    assert ei.value.error_code == 0x3
    cpu.set_control(ac=True)
    assert cpu.read(VA1, 1) == b"\x11"


def test_cached_rights_cpl_change() -> None:
    cpu, t = machine()
    t.map(VA1, F1, P | RW)  # supervisor
    assert cpu.read(VA1, 1) == b"\x11"
    cpu.cpl = 3
    with pytest.raises(Trap) as ei:
        cpu.read(VA1, 1)
    assert ei.value.error_code == 0x5


def test_cached_nx_entry_refuses_fetch() -> None:
    cpu, t = machine()
    t.map(VA1, F1, P | RW | NX)
    assert cpu.read(VA1, 1) == b"\x11"
    with pytest.raises(Trap) as ei:
        cpu.fetch(VA1)
    assert ei.value.error_code == 0x11
    assert ei.value.access == Access.EXEC
    t.map(VA2, F2, P | RW)
    assert cpu.fetch(VA2, 2) == b"\x22\x22"


# -------------------------------------------------------------------------------------------------
# Trap fields and CR2
# -------------------------------------------------------------------------------------------------


def test_trap_fields_and_cr2() -> None:
    cpu, t = machine()
    t.map(VA1, F1, P | RW | US)
    t.map(VA2, F2, US | RW)  # not present
    cpu.cpl = 3
    with pytest.raises(Trap) as ei:
        cpu.write(VA2 + 0x10, b"x")
    trap = ei.value
    assert trap.vector == 14
    assert trap.error_code == 0x6
    assert trap.cr2 == VA2 + 0x10
    assert trap.cpu_id == 3
    assert trap.access == Access.WRITE
    assert isinstance(trap.fault, PageFault) and trap.fault.level == "PT"
    assert cpu.cr2 == VA2 + 0x10
    assert str(trap) == f"#PF at {VA2 + 0x10:#x} error code 0x6 on CPU 3"
    # A #GP leaves CR2 alone.
    with pytest.raises(Trap) as ei:
        cpu.read(0x0000_8000_0000_0000, 1)
    assert (ei.value.vector, ei.value.error_code, ei.value.cr2) == (13, 0, None)
    assert cpu.cr2 == VA2 + 0x10
    # A second #PF overwrites CR2.
    with pytest.raises(Trap):
        cpu.read(VA3, 1)
    assert cpu.cr2 == VA3


def test_non_canonical_does_not_walk() -> None:
    cpu, t = machine()
    t.map(VA1, F1, P | RW)
    image = cpu.mem.to_image()
    with pytest.raises(Trap) as ei:
        cpu.write(0xFFFF_7FFF_FFFF_0000, b"x")
    assert ei.value.vector == 13
    assert cpu.mem.to_image() == image


# -------------------------------------------------------------------------------------------------
# The stack
# -------------------------------------------------------------------------------------------------

STACK_TOP = VA3  # stack page VA2..VA3, guard page VA1..VA2 not present


def stack_machine(cpl: int = 0) -> tuple[Cpu, Tables]:
    cpu, t = machine()
    t.map(VA1, F1, RW | US)  # guard: P=0
    t.map(VA2, F2, P | RW | US)
    cpu.cpl = cpl
    cpu.sp = STACK_TOP
    return cpu, t


def test_push_pop() -> None:
    cpu, _ = stack_machine()
    cpu.push(b"\x01\x02\x03\x04\x05\x06\x07\x08")
    assert cpu.sp == STACK_TOP - 8
    assert cpu.mem.read(F2 + 0xFF8, 8) == b"\x01\x02\x03\x04\x05\x06\x07\x08"
    cpu.push(b"\xaa\xbb")
    assert cpu.sp == STACK_TOP - 10
    assert cpu.pop(2) == b"\xaa\xbb"
    assert cpu.pop(8) == b"\x01\x02\x03\x04\x05\x06\x07\x08"
    assert cpu.sp == STACK_TOP


@pytest.mark.parametrize(("cpl", "code"), [(0, 0x2), (3, 0x6)])
def test_push_into_guard_page(cpl: int, code: int) -> None:
    cpu, _ = stack_machine(cpl)
    cpu.sp = VA2  # bottom of the stack page
    with pytest.raises(Trap) as ei:
        cpu.push(b"\0" * 8)
    assert ei.value.vector == 14
    assert ei.value.error_code == code
    assert ei.value.cr2 == VA2 - 8
    assert cpu.sp == VA2


def test_push_straddling_into_guard_page_writes_nothing() -> None:
    cpu, _ = stack_machine()
    cpu.sp = VA2 + 4
    with pytest.raises(Trap) as ei:
        cpu.push(b"\xff" * 8)
    assert ei.value.error_code == 0x2
    assert cpu.sp == VA2 + 4
    assert cpu.mem.read(F2, 4) == b"\x22" * 4


@pytest.mark.parametrize(
    "sp",
    [
        0x0000_8000_0000_0008,  # push lands at 0x0000_8000_0000_0000
        0xFFFF_8000_0000_0000,  # push lands just below the upper half
    ],
)
def test_push_non_canonical_is_ss(sp: int) -> None:
    cpu, _ = stack_machine()
    cpu.sp = sp
    with pytest.raises(Trap) as ei:
        cpu.push(b"\0" * 8)
    assert (ei.value.vector, ei.value.error_code, ei.value.cr2) == (12, 0, None)
    assert cpu.sp == sp


def test_pop_non_canonical_is_ss() -> None:
    cpu, _ = stack_machine()
    cpu.sp = 0x0000_8000_0000_0000
    with pytest.raises(Trap) as ei:
        cpu.pop(8)
    assert ei.value.vector == 12
    assert cpu.sp == 0x0000_8000_0000_0000


def test_push_straddling_canonical_boundary_is_ss() -> None:
    # The push starts at a canonical address, but its last bytes are non-canonical.
    cpu, t = stack_machine()
    t.map(0x7FFF_FFFF_F000, F3, P | RW)
    cpu.sp = 0x0000_8000_0000_0004
    with pytest.raises(Trap) as ei:
        cpu.push(b"\0" * 8)
    assert ei.value.vector == 12
    assert cpu.sp == 0x0000_8000_0000_0004
    assert cpu.mem.read(F3 + 0xFFC, 4) == b"\x33" * 4


def test_read_straddling_canonical_boundary_is_gp_before_any_walk() -> None:
    # First page not mapped, last bytes non-canonical: the canonical check comes first
    # (Intel SDM Vol. 1 §3.3.7.1: a #GP, no walk).
    cpu, _ = machine()
    image = cpu.mem.to_image()
    with pytest.raises(Trap) as ei:
        cpu.read(0x7FFF_FFFF_FFFC, 8)
    assert (ei.value.vector, ei.value.error_code, ei.value.cr2) == (13, 0, None)
    assert cpu.cr2 == 0
    assert cpu.mem.to_image() == image  # no walk: no A bits


def test_pop_from_guard_page_is_pf() -> None:
    cpu, _ = stack_machine()
    cpu.sp = VA2 - 8
    with pytest.raises(Trap) as ei:
        cpu.pop(8)
    assert (ei.value.vector, ei.value.error_code) == (14, 0x0)
    assert cpu.sp == VA2 - 8


# -------------------------------------------------------------------------------------------------
# Accesses spanning two pages
# -------------------------------------------------------------------------------------------------


def test_read_write_spanning_two_pages() -> None:
    cpu, t = machine()
    t.map(VA1, F1, P | RW)
    t.map(VA2, F3, P | RW)  # not adjacent to F1
    cpu.write(VA2 - 2, b"abcd")
    assert cpu.mem.read(F1 + 0xFFE, 2) == b"ab"
    assert cpu.mem.read(F3, 2) == b"cd"
    assert cpu.read(VA2 - 3, 6) == b"\x11abcd\x33"
    cpu.write_u64(VA2 - 4, 0x0807_0605_0403_0201)
    assert cpu.mem.read(F1 + 0xFFC, 4) == b"\x01\x02\x03\x04"
    assert cpu.read_u64(VA2 - 4) == 0x0807_0605_0403_0201


@pytest.mark.parametrize(("second", "code"), [(RW, 0x2), (P, 0x3)], ids=["absent", "read-only"])
def test_write_whose_second_page_faults_leaves_first_unwritten(second: int, code: int) -> None:
    cpu, t = machine()
    t.map(VA1, F1, P | RW)
    t.map(VA2, F2, second)
    with pytest.raises(Trap) as ei:
        cpu.write(VA2 - 2, b"abcd")
    assert ei.value.error_code == code
    assert ei.value.cr2 is not None and ei.value.cr2 >> 12 == VA2 >> 12  # in the second page
    assert cpu.mem.read(F1 + 0xFFE, 2) == b"\x11\x11"
    assert cpu.mem.read(F2, 2) == b"\x22\x22"


def test_read_spanning_into_absent_page_faults() -> None:
    cpu, t = machine()
    t.map(VA1, F1, P | RW)
    with pytest.raises(Trap) as ei:
        cpu.read(VA2 - 1, 2)
    assert ei.value.error_code == 0x0
    assert ei.value.cr2 is not None and ei.value.cr2 >> 12 == VA2 >> 12


def test_use_tlb_false_walks_every_time() -> None:
    cpu, t = machine()
    cpu.use_tlb = False
    pte = t.map(VA1, F1, P | RW)
    cpu.read(VA1, 1)
    cpu.read(VA1, 1)
    assert cpu.walks == 2
    assert len(cpu.tlb) == 0
    cpu.mem.write_u64(pte, 0)
    with pytest.raises(Trap):
        cpu.read(VA1, 1)


# -------------------------------------------------------------------------------------------------
# PAE: the PDPTE registers at the CPU level (Intel SDM Vol. 3A §4.4.1)
# -------------------------------------------------------------------------------------------------


def pae_machine() -> Cpu:
    mem = PhysMem()
    mem.write_u64(0x1000 + 1 * 8, 0x2000 | P)  # PDPTE 1
    mem.write_u64(0x2000 + 0 * 8, 0x3000 | PTR)  # PDE 0
    mem.write_u64(0x3000 + 5 * 8, F1 | P | RW)  # PTE 5
    mem.write(F1, b"\x11" * 16)
    return Cpu(mem, ControlState.for_mode("pae", 0x1000, nxe=True))


PAE_VA = (1 << 30) | (5 << 12)


def test_pae_pdpt_changes_need_cr3_reload() -> None:
    cpu = pae_machine()
    assert cpu.read(PAE_VA, 1) == b"\x11"
    cpu.mem.write_u64(0x1000 + 8, 0)  # PDPTE 1 cleared in memory
    cpu.tlb.flush_all()  # not a register load
    assert cpu.read(PAE_VA, 1) == b"\x11"
    cpu.write_cr3(0x1000)  # reload
    with pytest.raises(Trap) as ei:
        cpu.read(PAE_VA, 1)
    assert (ei.value.vector, ei.value.error_code) == (14, 0x0)


def test_pae_set_control_without_pdpte_reload() -> None:
    # STAC/CLAC (AC), CR0.WP, EFER.NXE and CR4.SMAP are not among the changes that reload the
    # PDPTE registers (CD, NW, PG, PAE, PGE, PSE, SMEP; Intel SDM Vol. 3A §4.4.1).
    cpu = pae_machine()
    cpu.mem.write_u64(0x1000 + 8, 0)
    for change in ({"ac": True}, {"wp": False}, {"smap": True}):
        cpu.set_control(**change)
        cpu.tlb.flush_all()
        assert cpu.read(PAE_VA, 1) == b"\x11", change
    cpu.set_control(pge=True)  # a CR4.PGE change does reload them
    with pytest.raises(Trap):
        cpu.read(PAE_VA, 1)


def test_pae_cr3_write_with_bad_pdpte_is_gp_and_changes_nothing() -> None:
    cpu = pae_machine()
    assert cpu.read(PAE_VA, 1) == b"\x11"
    cpu.mem.write_u64(0x5000, 0x2000 | P | RW)  # R/W is reserved in a PDPTE
    with pytest.raises(Trap) as ei:
        cpu.write_cr3(0x5000)
    assert (ei.value.vector, ei.value.error_code) == (13, 0)
    assert cpu.ctl.cr3 == 0x1000
    assert len(cpu.tlb) == 1  # the faulting MOV flushed nothing
    assert cpu.read(PAE_VA, 1) == b"\x11"
    cpu.tlb.flush_all()
    assert cpu.read(PAE_VA, 1) == b"\x11"  # the old registers still in use


def test_pae_cpu_construction_with_bad_pdpte_is_gp() -> None:
    mem = PhysMem()
    mem.write_u64(0x1000, 0x2000 | P | (1 << 5))
    with pytest.raises(Trap) as ei:
        Cpu(mem, ControlState.for_mode("pae", 0x1000))
    assert ei.value.vector == 13
