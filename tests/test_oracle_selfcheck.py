"""The Unicorn oracle checked on its own, against the SDM's rules (no mmusim involved).

If these fail, the differential tests prove nothing: fix the oracle (tests/oracle/) first.
Expected values come from the Intel SDM (Vol. 3A §4.6 access rights, §4.7 error codes, §4.8 A/D
flags) and from error codes seen on Unicorn 2.1.4 (the cases of test_differential).
"""

from __future__ import annotations

import pytest

from helpers import NX, PS, RW, US, A, D, P
from oracle.randtables import HAND_DATA, HAND_PT, HAND_VA, RawImage, hand_image, hand_upper
from oracle.unicorn_oracle import (
    ERROR_CODE_OFFSET_FROM_END,
    MODES,
    OracleResult,
    UnicornOracle,
)

pytestmark = pytest.mark.differential

SIZE = 0x40000
# The hand-written layout of oracle.randtables: entries 0 .. n of the page table at PT[mode] map
# VA + n * 4K; the entries above it are hand_upper(mode).
VA, PT, DATA = HAND_VA, HAND_PT, HAND_DATA
CTL = {"wp": True, "nxe": True, "smep": False, "smap": False, "ac": False, "pse": False}


def image(mode: str, *ptes: int) -> RawImage:
    """Upper levels all P|RW|US; PT entry i = ptes[i] (with DATA + i * 4K added if present)."""
    img = hand_image(mode, size=SIZE)
    for i, flags in enumerate(ptes):
        img.set(PT[mode], i, (DATA + i * 0x1000) | flags if flags & P else flags)
    return img


def oracle(mode: str, img: RawImage) -> UnicornOracle:
    o = UnicornOracle(mode, SIZE)
    o.load(img.image())
    return o


def access(o: UnicornOracle, vaddr: int, kind: str, cpl: int, **ctl: bool) -> OracleResult:
    return o.access(cr3=0x1000, vaddr=vaddr, access=kind, cpl=cpl, **{**CTL, **ctl})


def pf(code: int, cr2: int) -> OracleResult:
    return OracleResult(False, None, 14, code, cr2)


def entry(o: UnicornOracle, addr: int) -> int:
    return int.from_bytes(o.read_phys(addr, o.entry_size), "little")


# -- the checks the brief asks for ---------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_calibration_succeeds(mode: str) -> None:
    o = UnicornOracle(mode, SIZE)
    assert o.calibrated_offset == ERROR_CODE_OFFSET_FROM_END == 184
    assert o.reserved_va[0] == {"ia32e": 0xFFFF_FF80_0000_0000, "pae": 0xFFE0_0000}.get(
        mode, 0xFFC0_0000
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("vaddr", [VA + 0x1000, VA + 0x1ABC])
def test_not_present_read(mode: str, vaddr: int) -> None:
    o = oracle(mode, image(mode, P | RW))
    assert access(o, vaddr, "r", 0) == pf(0x0, vaddr)


@pytest.mark.parametrize("mode", MODES)
def test_write_to_read_only_supervisor_page(mode: str) -> None:
    o = oracle(mode, image(mode, P))
    assert access(o, VA + 0x10, "w", 0, wp=True) == pf(0x3, VA + 0x10)
    assert access(o, VA + 0x10, "w", 0, wp=False).ok  # CR0.WP=0 lets CPL0 write


@pytest.mark.parametrize("mode", MODES)
def test_user_read_of_supervisor_page(mode: str) -> None:
    o = oracle(mode, image(mode, P | RW))
    assert access(o, VA + 0x20, "r", 3) == pf(0x5, VA + 0x20)


def test_non_canonical_read_is_gp() -> None:
    o = oracle("ia32e", image("ia32e", P | RW))
    res = access(o, 0x0000_8000_0000_0000, "r", 0)
    assert (res.ok, res.vector, res.error_code, res.cr2) == (False, 13, 0, None)
    res = access(o, 0xFFFF_7FFF_FFFF_F000, "x", 3)
    assert (res.vector, res.error_code) == (13, 0)


@pytest.mark.parametrize("mode", MODES)
def test_smap_read_with_ac_clear(mode: str) -> None:
    o = oracle(mode, image(mode, P | RW | US))
    assert access(o, VA + 8, "r", 0, smap=True, ac=False) == pf(0x1, VA + 8)
    assert access(o, VA + 8, "w", 0, smap=True, ac=False) == pf(0x3, VA + 8)
    assert access(o, VA + 8, "r", 0, smap=True, ac=True).ok
    assert access(o, VA + 8, "r", 3, smap=True, ac=False).ok  # SMAP is for CPL < 3 only


@pytest.mark.parametrize("mode", ["pae", "ia32e"])
def test_nx_fetch(mode: str) -> None:
    o = oracle(mode, image(mode, P | RW | NX))
    assert access(o, VA, "x", 0) == pf(0x11, VA)
    assert access(o, VA + 0x345, "x", 0) == pf(0x11, VA + 0x345)
    assert access(o, VA + 0x345, "r", 0, nxe=False) == pf(0x9, VA + 0x345)  # XD reserved


# -- further facts the differential tests rely on ------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_success_reports_the_physical_address(mode: str) -> None:
    o = oracle(mode, image(mode, P | RW | US, P | RW | US))
    assert access(o, VA + 0x123, "r", 0) == OracleResult(True, DATA + 0x123, None, None, None)
    assert access(o, VA + 0x1FFF, "w", 3).paddr == DATA + 0x1FFF
    assert access(o, VA + 0x1000, "x", 3).paddr == DATA + 0x1000  # page-aligned: jumps to +1
    assert access(o, VA + 0xFFF, "x", 0).paddr == DATA + 0xFFF


@pytest.mark.parametrize("mode", MODES)
def test_fetch_fault_at_page_start_reports_that_address(mode: str) -> None:
    o = oracle(mode, image(mode, P | RW))
    code = 0x14 if mode != "32" else 0x4  # I/D needs PAE paging with NXE=1 (or SMEP)
    assert access(o, VA, "x", 3) == pf(code | 0x1, VA)
    assert access(o, VA + 0x1000, "x", 0) == pf(code & 0x10, VA + 0x1000)
    assert access(o, VA + 0x1000, "x", 0, smep=True) == pf(0x10, VA + 0x1000)


@pytest.mark.parametrize("mode", MODES)
def test_accessed_and_dirty_bits_from_real_instructions(mode: str) -> None:
    img = image(mode, P | RW, P | RW)
    before = img.image()
    o = oracle(mode, img)
    pte0, pte1 = PT[mode], PT[mode] + o.entry_size
    assert access(o, VA + 4, "r", 0).ok
    assert entry(o, pte0) & (A | D) == A  # a read sets A only
    assert access(o, VA + 0x1004, "w", 0).ok
    assert entry(o, pte1) & (A | D) == A | D  # a write sets A and D
    for table, index, value in hand_upper(mode):
        got = entry(o, table + index * o.entry_size)
        if mode == "pae" and table == 0x1000:
            assert got == value  # Unicorn sets no A in PDPTEs
        else:
            assert got == value | A  # a table pointer gets A, never D
    # Nothing else changed: the harness slot was restored and the written byte put back.
    after = o.read_phys(0, SIZE)
    diffs = [i for i in range(SIZE) if before[i] != after[i]]
    assert all(after[i] ^ before[i] in (A, D, A | D) for i in diffs)
    assert len(diffs) == len(hand_upper(mode)) - (mode == "pae") + 2


@pytest.mark.parametrize("mode", MODES)
def test_protection_fault_sets_no_leaf_a(mode: str) -> None:
    o = oracle(mode, image(mode, P))
    assert access(o, VA + 1, "w", 3) == pf(0x7, VA + 1)
    assert entry(o, PT[mode]) & A == 0  # the leaf gets A only on success (Intel SDM Vol. 3A §4.8)
    pde_table, pde_index, _ = hand_upper(mode)[-1]
    assert entry(o, pde_table + pde_index * o.entry_size) & A


@pytest.mark.parametrize("mode", MODES)
def test_repeated_faults_stay_page_faults(mode: str) -> None:
    """Pitfall 1: without a clean context before each access the second #PF would be a #DF."""
    o = oracle(mode, image(mode))
    for i in range(5):
        assert access(o, VA + i, "w", 3) == pf(0x6, VA + i)


def test_pae_with_present_pdpte3_restores_the_slot() -> None:
    img = image("pae", P | RW).set(0x1000, 3, 0x5000 | P).set(0x5000, 0, 0x6000 | 7)
    before = img.image()
    o = oracle("pae", img)
    assert access(o, 0xC000_0000, "r", 0) == pf(0x0, 0xC000_0000)
    assert access(o, VA, "r", 3) == pf(0x5, VA)
    assert entry(o, 0x5000) == 0x6000 | 7 | A  # walked on the way to the not-present PTE
    slot = 0x5000 + 511 * 8
    assert o.read_phys(slot, 8) == before[slot : slot + 8]  # the harness link was undone


@pytest.mark.parametrize("mode", MODES)
def test_physical_address_outside_ram(mode: str) -> None:
    """A leaf may point above the RAM Unicorn backs: the access still translates."""
    img = image(mode)
    img.set(PT[mode], 0, 0x0800_0000 | P | RW | US)
    o = oracle(mode, img)
    for kind in "rwx":
        assert access(o, VA + 0x42, kind, 3).paddr == 0x0800_0042


def test_pse36_large_page_above_4g() -> None:
    img = RawImage("32", SIZE).set(0x1000, 2, 0x0040_0000 | 0x3 << 13 | P | RW | PS)
    o = oracle("32", img)
    assert access(o, 0x80_1234, "r", 0, pse=True).paddr == 0x3_0040_1234
    assert access(o, 0x80_1234, "r", 0, pse=False) == pf(0x0, 0x80_1234)  # PS ignored: a PT
    img.set(0x1000, 2, P | RW | PS | 1 << 21)
    o = oracle("32", img)
    assert access(o, 0x80_1234, "r", 0, pse=True) == pf(0x9, 0x80_1234)


def test_reserved_range_is_refused() -> None:
    o = UnicornOracle("ia32e", SIZE)
    with pytest.raises(ValueError, match="harness"):
        access(o, 0xFFFF_FF80_0000_1000, "r", 0)


def test_unicorn_sets_a_in_a_faulting_1g_leaf() -> None:
    """The deviation "unicorn-1g-leaf-a" (Intel SDM Vol. 3A §4.8; QEMU's ``handle_mmu_fault``) is
    real in this build; the differential test relies on knowing it. If this starts failing, the deviation can go."""
    img = RawImage("ia32e", SIZE).set(0x1000, 0, 0x2000 | 7).set(0x2000, 1, P | PS)
    o = oracle("ia32e", img)
    assert access(o, 0x4000_0020, "w", 0) == pf(0x3, 0x4000_0020)
    assert entry(o, 0x2008) == P | PS | A
