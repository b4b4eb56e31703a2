"""Routines checked line by line against Zephyr's source: each test names the file and function it
follows, and failed before the model was brought in line with it.
"""

from __future__ import annotations

import pytest

from helpers import X86_64_SMP, boot_kernel
from mmusim.kernel import Op
from mmusim.kernel.fatal import dump_page_fault_lines

# -- arch/x86/core/fatal.c: dump_page_fault --------------------------------------------------------

NP = "Linear address not present in page tables"
RSVD = "Reserved bits set in page tables"


def av(who: str, what: str) -> str:
    return f"Access violation: {who} thread not allowed to {what}"


# dump_page_fault: the "Page fault at address" line; then "Reserved bits set in page tables" if
# PF_RSVD, else "Linear address not present in page tables" if !PF_P followed -- always -- by
# "Access violation: %s thread not allowed to %s" (user if PF_US; execute if PF_ID, else write if
# PF_WR, else read), then "Protection key disallowed" if PF_PK, else "SGX access control
# violation" if PF_SGX.
DUMP_PAGE_FAULT_CASES = [
    (0x0, [NP, av("supervisor", "read")]),
    (0x2, [NP, av("supervisor", "write")]),
    (0x4, [NP, av("user", "read")]),
    (0x6, [NP, av("user", "write")]),
    (0x10, [NP, av("supervisor", "execute")]),
    (0x12, [NP, av("supervisor", "execute")]),  # I/D wins over W/R
    (0x1, [av("supervisor", "read")]),
    (0x3, [av("supervisor", "write")]),
    (0x5, [av("user", "read")]),
    (0x7, [av("user", "write")]),
    (0x11, [av("supervisor", "execute")]),
    (0x15, [av("user", "execute")]),
    (0x9, [RSVD]),  # RSVD: no access-violation line at all
    (0xF, [RSVD]),
    (0x19, [RSVD]),
    (0x21, [av("supervisor", "read"), "Protection key disallowed"]),
    (0x8001, [av("supervisor", "read"), "SGX access control violation"]),
    (0x8021, [av("supervisor", "read"), "Protection key disallowed"]),  # PK, else SGX
    (0x8, [RSVD]),
]


@pytest.mark.parametrize(("code", "lines"), DUMP_PAGE_FAULT_CASES)
def test_dump_page_fault_lines_follow_zephyr(code: int, lines: list[str]) -> None:
    out = dump_page_fault_lines(0x8EF800, code)
    assert out == [f"Page fault at address 0x8ef800 (error code {code:#x})", *lines]


@pytest.mark.parametrize(
    ("pentry", "wide", "line"),
    [
        (("PT", 0), True, "PTE: not present"),
        (("PD", 0), True, "PDE: not present"),
        (("PML4", 0), True, "PML4E: not present"),
        (
            ("PT", 0x133000 | 0x63 | 1 << 63),
            True,
            "PTE: 0x8ef000 -> 0x0000000000133000: RW A D XD ",
        ),
        (("PT", 0x126000 | 0x1 | 1 << 63), True, "PTE: 0x8ef000 -> 0x0000000000126000: XD "),
        (("PT", 0x133000 | 0x7), False, "PTE: 0x8ef000 -> 0x00133000: RW US "),
    ],
)
def test_dump_mmu_flags_line(pentry: tuple[str, int], wide: bool, line: str) -> None:
    """z_x86_dump_mmu_flags (arch/x86/core/x86_mmu.c): "%sE: not present" with the level where
    the walk stopped, or dump_entry's "%sE: %p -> PRI_ENTRY: bits"."""
    out = dump_page_fault_lines(0x8EF800, 0x3, pentry, wide=wide)
    assert out[-1] == line


def test_kernel_fault_log_prints_access_violation_after_not_present() -> None:
    """A write into a mapped stack's front guard: not present, and the access-violation line."""
    k = boot_kernel(X86_64_SMP, (Op("touch", where="front_guard"),))
    k.run()
    assert k.log[:4] == [
        f"E: Page fault at address {k.faults[0]['cr2']:#x} (error code 0x2)",
        f"E: {NP}",
        f"E: {av('supervisor', 'write')}",
        "E: PTE: not present",
    ]
