"""The user-space runtime: what a process's address space does, above the kernel and below the
tools (docs/runtime.md).

Public API:

* ``AddressSpace`` -- areas of one process: ``mmap``, ``munmap``, ``mprotect``,
  ``madvise_guard_install`` / ``madvise_guard_remove``, ``populate``, ``fault``, ``find``,
  ``costs``, ``maps``, ``_check``; ``Area`` -- one area; ``costs_delta`` -- two snapshots apart;
* ``MmFlavour`` and its presets ``LINUX``, ``NANOS``, ``HAIKU`` -- the rules that differ;
* ``Prot``, ``MapFlag`` and ``MAP_*``, ``MmError``, ``FaultOutcome``, ``SIGSEGV``,
  ``SEGV_MAPERR``, ``SEGV_ACCERR``, ``PAGE``;
* ``Pager`` -- what it needs from the page tables; ``HwPager`` -- one on ``mmusim.hw.PageTables``;
  ``PteRights``.

It imports only ``mmusim.hw``: the kernel plugs in through a ``Pager``.
"""

from mmusim.runtime.areas import AddressSpace, Area, allows, costs_delta, rights
from mmusim.runtime.defs import (
    FLAVOURS,
    HAIKU,
    LINUX,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_GROWSDOWN,
    MAP_NORESERVE,
    MAP_PRIVATE,
    MAP_SHARED,
    NANOS,
    PAGE,
    SEGV_ACCERR,
    SEGV_MAPERR,
    SIGSEGV,
    FaultOutcome,
    MapFlag,
    MmError,
    MmFlavour,
    Prot,
)
from mmusim.runtime.pager import HwPager, Pager, PteRights

__all__ = [
    "FLAVOURS",
    "HAIKU",
    "LINUX",
    "MAP_ANONYMOUS",
    "MAP_FIXED",
    "MAP_GROWSDOWN",
    "MAP_NORESERVE",
    "MAP_PRIVATE",
    "MAP_SHARED",
    "NANOS",
    "PAGE",
    "SEGV_ACCERR",
    "SEGV_MAPERR",
    "SIGSEGV",
    "AddressSpace",
    "Area",
    "FaultOutcome",
    "HwPager",
    "MapFlag",
    "MmError",
    "MmFlavour",
    "Pager",
    "Prot",
    "PteRights",
    "allows",
    "costs_delta",
    "rights",
]
