"""The machine: what silicon does. Knows nothing of threads, schedulers or Kconfig.

Public API (the kernel and the tools use only these names):

* ``PhysMem`` -- sparse physical memory, flat images; ``ImageMem`` -- an image file, read lazily;
* ``PagingMode`` / ``MODES`` / ``PteFlags`` / ``PfErrorCode`` / ``Access`` -- modes as data, bits;
* ``ControlState`` / ``translate`` -> ``Translation | PageFault | GeneralProtection`` -- the walker;
* ``Tlb`` -- a per-CPU TLB; ``Cpu`` -- registers and memory access through TLB + walker, ``Trap``;
* ``PageTables`` -- a page-table builder (map/unmap pages and ranges, ``_check``);
* ``PROLOGUES``, ``checked_prologue_fails``, ``probe_addresses``, ``STACK_*`` -- what compilers
  put at a function's entry to protect its stack (``mmusim.hw.prologue``).
"""

from mmusim.hw.cpu import Cpu, Trap
from mmusim.hw.pagetables import PageTables, TablesImage
from mmusim.hw.paging import (
    DF_VECTOR,
    GP_VECTOR,
    MODE_32,
    MODE_IA32E,
    MODE_PAE,
    MODES,
    PF_ERROR_BIT_NAMES,
    PF_VECTOR,
    SS_VECTOR,
    Access,
    PagingMode,
    PfErrorCode,
    PteFlags,
    error_code_names,
    is_canonical,
)
from mmusim.hw.physmem import FRAME_SIZE, ImageMem, PhysMem
from mmusim.hw.prologue import (
    PROBE_INTERVAL,
    PROLOGUES,
    STACK_BIG,
    STACK_GUARD,
    STACK_NOSPLIT,
    STACK_SMALL,
    checked_prologue_fails,
    probe_addresses,
)
from mmusim.hw.tlb import Tlb, TlbEntry
from mmusim.hw.walk import (
    ControlState,
    GeneralProtection,
    PageFault,
    Result,
    Translation,
    load_pdptes,
    rights_allow,
    translate,
)

__all__ = [
    "DF_VECTOR",
    "FRAME_SIZE",
    "GP_VECTOR",
    "MODES",
    "MODE_32",
    "MODE_IA32E",
    "MODE_PAE",
    "PF_ERROR_BIT_NAMES",
    "PF_VECTOR",
    "PROBE_INTERVAL",
    "PROLOGUES",
    "SS_VECTOR",
    "STACK_BIG",
    "STACK_GUARD",
    "STACK_NOSPLIT",
    "STACK_SMALL",
    "Access",
    "ControlState",
    "Cpu",
    "GeneralProtection",
    "ImageMem",
    "PageFault",
    "PageTables",
    "TablesImage",
    "PagingMode",
    "PfErrorCode",
    "PhysMem",
    "PteFlags",
    "Result",
    "Tlb",
    "TlbEntry",
    "Translation",
    "Trap",
    "checked_prologue_fails",
    "error_code_names",
    "is_canonical",
    "load_pdptes",
    "probe_addresses",
    "rights_allow",
    "translate",
]
