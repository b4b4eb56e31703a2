"""The vocabulary of the address-space layer: protections, map flags, errors, fault outcomes, and
the three flavours (Linux, nanos, Haiku) as data.

Values of the flags are Linux's x86 values (uapi ``asm-generic/mman-common.h``,
``asm-generic/mman.h``); nanos mirrors them in ``src/unix/system_structs.h``. Errors carry the
errno *name* (``"ENOMEM"``) and a message that names the call, e.g.
``mprotect(0x7f0000001000, 4096): ENOMEM: vm.max_map_count (65530) reached``.
"""

from __future__ import annotations

import enum
from typing import Literal

import attrs

PAGE = 4096
PAGE_MASK = PAGE - 1
MASK64 = (1 << 64) - 1

# Signal numbers and si_code values (Linux uapi asm-generic/signal.h, asm-generic/siginfo.h).
SIGSEGV = 11
SEGV_MAPERR = 1  # address not mapped to object
SEGV_ACCERR = 2  # invalid permissions for mapped object


class Prot(enum.IntFlag):
    """``PROT_*`` of mmap(2)/mprotect(2)."""

    NONE = 0
    READ = 1
    WRITE = 2
    EXEC = 4

    def letters(self) -> str:
        """``rwx`` letters as /proc/self/maps prints them."""
        return "".join(
            c if self & p else "-"
            for c, p in (("r", Prot.READ), ("w", Prot.WRITE), ("x", Prot.EXEC))
        )


class MapFlag(enum.IntFlag):
    """``MAP_*`` flags of mmap(2), with Linux's x86 values."""

    NONE = 0
    SHARED = 0x01
    PRIVATE = 0x02
    FIXED = 0x10
    ANONYMOUS = 0x20
    GROWSDOWN = 0x100
    NORESERVE = 0x4000


MAP_SHARED = MapFlag.SHARED
MAP_PRIVATE = MapFlag.PRIVATE
MAP_FIXED = MapFlag.FIXED
MAP_ANONYMOUS = MapFlag.ANONYMOUS
MAP_GROWSDOWN = MapFlag.GROWSDOWN
MAP_NORESERVE = MapFlag.NORESERVE


class MmError(Exception):
    """A refused address-space call: ``errno`` is the name (``"ENOMEM"``, ``"EINVAL"``, ...)."""

    def __init__(self, errno: str, message: str) -> None:
        super().__init__(message)
        self.errno = errno
        self.message = message

    def __str__(self) -> str:
        return self.message


def refuse(call: str, errno: str, why: str) -> MmError:
    """The error of ``call`` (``"mprotect(0x1000, 4096)"``) with its errno and reason."""
    return MmError(errno, f"{call}: {errno}: {why}")


@attrs.frozen
class FaultOutcome:
    """What a user page fault came to.

    ``action``: ``"commit"`` (a frame and a PTE were given to the page: retry the access),
    ``"grow"`` (a growsdown area was extended down to the page, then the page committed: retry),
    ``"present"`` (the page was already mapped with rights that allow the access -- a spurious
    fault, e.g. after a stale TLB entry: retry), or ``"signal"`` (refused: deliver ``signal`` with
    ``si_code`` and ``si_addr``). ``reason`` says why in words; ``grown_pages`` counts the pages a
    growth added to the area (not all of them are committed: growth moves the start only).
    """

    action: Literal["commit", "grow", "present", "signal"]
    si_addr: int
    reason: str
    signal: int | None = None
    si_code: int | None = None
    grown_pages: int = 0

    @property
    def resolved(self) -> bool:
        """The access may be retried."""
        return self.action != "signal"

    @property
    def si_code_name(self) -> str | None:
        return {SEGV_MAPERR: "SEGV_MAPERR", SEGV_ACCERR: "SEGV_ACCERR"}.get(self.si_code or 0)

    def __str__(self) -> str:
        if self.resolved:
            return f"{self.action} at {self.si_addr:#x}: {self.reason}"
        return f"SIGSEGV ({self.si_code_name}) at {self.si_addr:#x}: {self.reason}"


@attrs.frozen
class MmFlavour:
    """How one system's address space behaves, as data. Use the presets ``LINUX``, ``NANOS``,
    ``HAIKU``, or ``attrs.evolve`` one of them (e.g. a Linux booted with ``stack_guard_gap=1``).

    * ``split_on_mprotect``: mprotect of part of an area splits it (Linux ``mprotect_fixup`` ->
      ``split_vma``); False: per-page protections inside the area (Haiku
      ``_user_set_memory_protection``, ``page_protections``).
    * ``merge``: an area that becomes compatible with an adjacent neighbour merges with it
      (Linux ``vma_merge`` on mmap and mprotect); the other two keep areas apart.
    * ``max_map_count``: the area ceiling (Linux ``vm.max_map_count``, ``DEFAULT_MAX_MAP_COUNT``
      = 65530 in ``include/linux/mm.h``), or None for no ceiling.
    * ``growsdown``: ``MAP_GROWSDOWN`` exists (not on Haiku: ``sys/mman.h`` has none).
    * ``stack_guard_gap``: bytes kept free below a growsdown area, on growth and on placement
      (Linux ``stack_guard_gap`` = 256 pages, ``mm/mmap.c``; nanos ``PROCESS_STACK_GUARD_GAP``
      = 256 pages, ``src/unix/unix_internal.h``).
    * ``gap_exempt_growsdown_prev`` / ``gap_exempt_inaccessible_prev``: a previous area that is
      itself growsdown, or has no access (PROT_NONE), does not block growth (Linux
      ``expand_downwards``: ``!(prev->vm_flags & VM_GROWSDOWN) && vma_is_accessible(prev)``; the
      second since commit 561b5e0709e4, Linux 4.13). nanos has neither.
    * ``rlimit_rule``: ``"linux"`` -- ``acct_stack_growth``: the size from the page-aligned
      address to the end, minus one page, must not exceed RLIMIT_STACK; ``"nanos"`` --
      ``vmap_from_vaddr``: ``vm->end <= vaddr + rlimit_stack`` on the *unaligned* address.
    * ``rlimit_stack``: the default RLIMIT_STACK soft limit (Linux ``_STK_LIM`` = 8 MiB,
      ``include/uapi/linux/resource.h``; nanos ``PROCESS_STACK_SIZE`` = 2 MiB; Haiku 64 MiB).
    * ``guard_markers``: ``MADV_GUARD_INSTALL``/``REMOVE`` exist (Linux 6.13).
    * ``stack_area_guard``: an area may carry a guard of its first ``guard_size`` bytes (Haiku
      ``B_STACK_AREA``: ``VMAnonymousCache::Fault`` refuses offsets below ``fGuardedSize``).
    """

    name: str
    split_on_mprotect: bool
    merge: bool
    max_map_count: int | None
    growsdown: bool
    stack_guard_gap: int
    gap_exempt_growsdown_prev: bool
    gap_exempt_inaccessible_prev: bool
    rlimit_rule: Literal["linux", "nanos"]
    rlimit_stack: int
    guard_markers: bool
    stack_area_guard: bool

    def __attrs_post_init__(self) -> None:
        if self.stack_guard_gap % PAGE or self.stack_guard_gap < 0:
            raise ValueError(f"MmFlavour: stack_guard_gap {self.stack_guard_gap:#x} not in pages")


LINUX = MmFlavour(
    name="linux",
    split_on_mprotect=True,
    merge=True,
    max_map_count=65530,
    growsdown=True,
    stack_guard_gap=256 * PAGE,
    gap_exempt_growsdown_prev=True,
    gap_exempt_inaccessible_prev=True,
    rlimit_rule="linux",
    rlimit_stack=8 * 1024 * 1024,
    guard_markers=True,
    stack_area_guard=False,
)
NANOS = MmFlavour(
    name="nanos",
    split_on_mprotect=True,
    merge=False,
    max_map_count=None,
    growsdown=True,
    stack_guard_gap=256 * PAGE,
    gap_exempt_growsdown_prev=False,
    gap_exempt_inaccessible_prev=False,
    rlimit_rule="nanos",
    rlimit_stack=2 * 1024 * 1024,
    guard_markers=False,
    stack_area_guard=False,
)
HAIKU = MmFlavour(
    name="haiku",
    split_on_mprotect=False,
    merge=False,
    max_map_count=None,
    growsdown=False,
    stack_guard_gap=0,
    gap_exempt_growsdown_prev=False,
    gap_exempt_inaccessible_prev=False,
    rlimit_rule="linux",
    rlimit_stack=64 * 1024 * 1024,
    guard_markers=False,
    stack_area_guard=True,
)
FLAVOURS = {f.name: f for f in (LINUX, NANOS, HAIKU)}

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
    "FaultOutcome",
    "MapFlag",
    "MmError",
    "MmFlavour",
    "Prot",
    "refuse",
]
