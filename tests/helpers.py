"""Plain helpers shared by the tests: x86 entry bits, page sizes, a table-frame allocator, and a
kernel configuration with a booter for the kernel tests.

The paging constants are written out from the SDM (Intel SDM Vol. 3A §4.3-§4.5), never
imported from ``mmusim``: a wrong constant in mmusim then cannot make a test agree with it. These are plain
names and functions, not fixtures, because tests use them at import time (in ``parametrize``
lists) or call them with arguments, and Hypothesis examples need a fresh allocator each.
Fixtures live in ``conftest.py``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mmusim.kernel import Kernel, Op, StackObject, assert_invariants

#: The type of conftest's ``tmp_file`` fixture: ``tmp_file(name, text) -> path``.
TmpFile = Callable[[str, str], Path]

# Entry bits (Intel SDM Vol. 3A §4.3-§4.5). Bit 7 is PS in a PDE or PDPTE but PAT in a PTE; NX is
# the SDM's XD.
P, RW, US, PWT, PCD, A, D, PS, G = 0x1, 0x2, 0x4, 0x8, 0x10, 0x20, 0x40, 0x80, 0x100
NX = 1 << 63
PTR = P | RW | US  # a permissive table pointer

# Page sizes.
K4, M2, M4, G1 = 1 << 12, 1 << 21, 1 << 22, 1 << 30


def frame_counter(start: int = 0x1000) -> Callable[[], int]:
    """A table-frame allocator: successive calls return ``start``, ``start + 4K``, ... so a test
    knows which frame the n-th table gets. Each call of ``frame_counter`` starts afresh."""
    frames = itertools.count(start, K4)
    return lambda: next(frames)


def leaf_frame(mode: str, entry: int, size: int) -> int:
    """The frame a present leaf ``entry`` of ``size`` maps in paging ``mode`` ("32", "pae" or
    "ia32e"), decoded from the SDM's entry formats (§4.3-§4.5) with MAXPHYADDR = 40. A 32-bit 4M
    entry carries PA bits 39:32 in bits 20:13 (PSE-36)."""
    if mode == "32":
        if size == M4:
            return (entry & 0xFFC0_0000) | ((entry >> 13) & 0xFF) << 32
        return entry & 0xFFFF_F000
    return entry & ((1 << 40) - 1) & ~(size - 1)


# -- kernel set-ups ---------------------------------------------------------------------------------

#: A qemu_x86_64-like kernel configuration as a plain dict (the Kconfig layer is tested on its own):
#: two CPUs, IA-32e paging, mapped stacks with their abort cleanup, user mode, INIT_STACKS.
X86_64_SMP: dict[str, Any] = dict(
    X86_64=True, SMP=True, MP_MAX_NUM_CPUS=2, THREAD_STACK_MEM_MAPPED=True,
    THREAD_ABORT_NEED_CLEANUP=True, THREAD_STACK_INFO=True, X86_STACK_PROTECTION=True,
    USERSPACE=True, PRIVILEGED_STACK_SIZE=4096, SRAM_BASE_ADDRESS=0x100000, SRAM_SIZE=8192,
    KERNEL_VM_BASE=0x100000, KERNEL_VM_SIZE=0x800000, INIT_STACKS=True, SIM_TLB_SHOOTDOWN=True,
    ISR_STACK_SIZE=16384,
)  # fmt: skip


def boot_kernel(
    cfg: Mapping[str, Any], main: tuple[Op, ...] = (),
    bodies: Mapping[str, tuple[Op, ...]] | None = None, stacks: tuple[StackObject, ...] = (),
    **overrides: Any,
) -> Kernel:  # fmt: skip
    """A kernel booted on ``cfg`` (with ``overrides``), main running ``main``, every invariant
    checked after every step."""
    return Kernel({**cfg, **overrides}, stacks=stacks, main_body=main, bodies=bodies or {},
                  check=assert_invariants)  # fmt: skip
