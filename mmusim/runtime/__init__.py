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
  ``PteRights``;
* ``Process`` -- one process on a booted kernel (``Process.attach(kernel, flavour=...)``): its
  address space in the kernel's page tables (``KernelPager``), demand faults and SIGSEGV
  delivery through the kernel's ``mem_page_fault`` hook, and its ops (mmap, sigaction,
  sigaltstack, sigsetjmp, coroutines: ``OPS``);
* ``RuntimeStackPolicy`` and the seven strategies of ``RUNTIME_POLICIES`` (``haiku-areas``,
  ``posix-reserve``, ``linux-guard-regions``, ``nanos-growsdown``, ``rethinkdb-coroutines``,
  ``go-segmented``, ``go-copying``); ``stack_costs(policy)`` -- what one stack costs, as data;
* Go's stacks (``gostack``): ``GoSegmented`` and ``GoCopying`` (``GoStackPolicy``), ``GoRuntime``
  (``newg``, ``freeg``, ``needs_morestack``, ``morestack``, ``lessstack``, ``record_pointer``,
  ``deref``) over a ``GoHeap`` of the address space, ``G``, ``Growth``, ``GoStackOverflow``,
  ``prologue_needs_morestack``, the ``Mem`` protocol and ``CpuMem``, and Go's ``STACK_*``
  constants.

The address-space modules (``defs``, ``area``, ``areas``, ``pager``, ``policies``, ``gostack``)
import only ``mmusim.hw``: they run on bare page tables too. ``process`` (with ``sigstate``, its signal and
coroutine state, and ``ops``, its ops) and ``kpager`` tie them to the kernel.
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
from mmusim.runtime.gostack import (
    STACK_BIG,
    STACK_GUARD,
    STACK_MIN,
    STACK_NOSPLIT,
    STACK_SMALL,
    CpuMem,
    G,
    GoCopying,
    GoHeap,
    GoMemFault,
    GoRuntime,
    GoSegmented,
    GoStackOverflow,
    GoStackPolicy,
    Growth,
    Mem,
    prologue_needs_morestack,
)
from mmusim.runtime.kpager import KernelPager
from mmusim.runtime.pager import HwPager, Pager, PteRights
from mmusim.runtime.policies import (
    RUNTIME_POLICIES,
    HaikuAreas,
    LinuxGuardRegions,
    NanosGrowsdown,
    PosixReserve,
    RethinkdbCoroutines,
    RtStack,
    RuntimeStackPolicy,
    stack_costs,
)
from mmusim.runtime.process import OPS, USER_HI, USER_LO, Process

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
    "OPS",
    "RUNTIME_POLICIES",
    "PAGE",
    "SEGV_ACCERR",
    "SEGV_MAPERR",
    "SIGSEGV",
    "STACK_BIG",
    "STACK_GUARD",
    "STACK_MIN",
    "STACK_NOSPLIT",
    "STACK_SMALL",
    "USER_HI",
    "USER_LO",
    "AddressSpace",
    "Area",
    "CpuMem",
    "FaultOutcome",
    "G",
    "GoCopying",
    "GoHeap",
    "GoMemFault",
    "GoRuntime",
    "GoSegmented",
    "GoStackOverflow",
    "GoStackPolicy",
    "Growth",
    "HaikuAreas",
    "HwPager",
    "KernelPager",
    "MapFlag",
    "Mem",
    "LinuxGuardRegions",
    "MmError",
    "MmFlavour",
    "NanosGrowsdown",
    "Pager",
    "PosixReserve",
    "Process",
    "Prot",
    "PteRights",
    "RethinkdbCoroutines",
    "RtStack",
    "RuntimeStackPolicy",
    "allows",
    "costs_delta",
    "prologue_needs_morestack",
    "rights",
    "stack_costs",
]
