"""Stack policies: where a thread's stack lives and what protects it, as a small pluggable interface.

The kernel asks its policy four things, and nothing else about stack placement:

* ``map_stack(k, t, stack, obj_len)`` -- make the stack object usable by ``t`` (a routine; it
  returns ``stack_info.mapped``: the address of a new mapping, or ``MappedInfo(None, 0)`` for a
  stack used in place). ``setup_thread_stack`` derives ``stack_info.start``/``size`` and the
  initial stack pointer from it and from Zephyr's geometry macros;
* ``unmap_stack(k, mapped)`` -- undo ``map_stack`` (a routine). The kernel decides *when*: at once
  for a thread aborted by another, deferred through the cleanup slot for a self-abort
  (``k_thread_abort_cleanup``), exactly as Zephyr does for ``CONFIG_THREAD_STACK_MEM_MAPPED``;
* ``guards(k, t)`` -- the address ranges that must fault on access (the invariants check they do);
* ``is_stack_fault(k, t, cr2)`` -- fault attribution: is a #PF at ``cr2`` a stack overflow of
  ``t``? (``z_x86_check_guard_page``; Zephyr calls it for the current thread only.)

``catches`` states the policy's promise, which the invariant ``check_stack_escapes`` holds it to:
a stack access (push, pop, call, alloca, a touch relative to the stack) that leaves the thread's
stack object by less than a page -- ``"overflow"`` below it, ``"underflow"`` above it -- must fault
and be reported as a stack overflow (``K_ERR_STACK_CHK_FAIL``). Escapes of a page or more (a large
unprobed frame jumping the guard: stack clash) are never promised -- no guard page can catch them.

Built-in policies, selected by Kconfig (``policy_for_config``):

=================  ===========================================  ====================================
``mapped``         ``THREAD_STACK_MEM_MAPPED=y``                 a new mapping with a guard page on
                                                                 each side (``k_mem_map_phys_guard``)
``legacy-guard``   ``X86_STACK_PROTECTION=y``, not mapped        in place; the object's first page
                                                                 made read-only
``none``           neither                                      in place, nothing
=================  ===========================================  ====================================

A policy that maps stacks (``remaps = True``) runs with ``CONFIG_THREAD_STACK_MEM_MAPPED=y``: the
geometry macros and the abort-cleanup hook come from that symbol. Write your own by subclassing
``StackPolicy`` (see ``docs/policies.md``) and pass it as ``Kernel(cfg, policy=...)``.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from mmusim.hw import PteFlags
from mmusim.kernel.geometry import PAGE
from mmusim.kernel.mm import (
    K_MEM_MAP_UNINIT,
    K_MEM_PERM_RW,
    kernel_invlpg,
    map_phys_guarded,
    unmap_phys_guarded,
)
from mmusim.kernel.routines import KernelAssert, Point, pte_write
from mmusim.kernel.thread import KThread, MappedInfo, StackObject

if TYPE_CHECKING:
    from mmusim.kernel.boot import Kernel

Routine = Generator[Any, None, None]
ESCAPE_KINDS = frozenset({"overflow", "underflow"})


@attrs.define(eq=False)
class StackEscape:
    """A stack access by ``thread`` that left its stack object by less than a page (see
    ``StackPolicy.catches``). ``outcome``: None while the fault is being delivered, ``"silent"``
    if the access went through, else the fault's reason code (2: ``K_ERR_STACK_CHK_FAIL``)."""

    thread: str
    kind: str  # "overflow" (below the object) or "underflow" (above it)
    addr: int
    what: str  # the access, e.g. "push 8 bytes below 0x..."
    outcome: int | str | None = None


class StackPolicy:
    """Base class of stack policies; the defaults describe a policy that remaps stacks."""

    name: ClassVar[str] = "custom"
    remaps: ClassVar[bool] = True  # stacks get their own mapping (needs THREAD_STACK_MEM_MAPPED)
    catches: ClassVar[frozenset[str]] = ESCAPE_KINDS

    def map_stack(
        self, k: Kernel, t: KThread, stack: StackObject, obj_len: int
    ) -> Generator[Any, None, MappedInfo]:
        raise NotImplementedError(f"{type(self).__name__}.map_stack")
        yield  # pragma: no cover - makes this a generator

    def unmap_stack(self, k: Kernel, mapped: MappedInfo) -> Routine:
        raise NotImplementedError(f"{type(self).__name__}.unmap_stack")
        yield  # pragma: no cover

    def guards(self, k: Kernel, t: KThread) -> list[tuple[int, int]]:
        """Address ranges ``[lo, hi)`` of ``t``'s guards: every page in them must fault on write."""
        return []

    def is_stack_fault(self, k: Kernel, t: KThread, cr2: int) -> bool:
        """Is a #PF at ``cr2``, raised by ``t``, a stack overflow? Default: ``cr2`` in a guard."""
        return any(lo <= cr2 < hi for lo, hi in self.guards(k, t))

    def extent(self, k: Kernel, t: KThread) -> tuple[int, int]:
        """The stack object as ``t`` uses it: ``[stack_info.mapped.addr, + mapped.sz)``, or the
        object in place. Accesses outside it are escapes."""
        m = t.stack_info.mapped
        if m.addr is not None:
            return m.addr, m.addr + m.sz
        assert t.stack is not None
        return t.stack.addr, t.stack.addr + t.stack.obj_len

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class MappedStacks(StackPolicy):
    """Zephyr's ``CONFIG_THREAD_STACK_MEM_MAPPED``: ``k_mem_map_phys_guard(stack, obj, RW |
    UNINIT)``, an alias of the object between two non-present guard pages."""

    name = "mapped"

    def map_stack(
        self, k: Kernel, t: KThread, stack: StackObject, obj_len: int
    ) -> Generator[Any, None, MappedInfo]:
        if k.mutant_stack_size_unrounded and stack.size % PAGE:
            # MUTANT (SIM_MUTANT_STACK_SIZE_UNROUNDED): size + reserved rounded down, not up.
            rsv = k.geometry.reserved(stack.user_capable and k.geometry.userspace)
            obj_len = max((stack.size + rsv) // PAGE * PAGE, PAGE)
        m = yield from map_phys_guarded(
            k, stack.addr - k.virt_offset, obj_len, K_MEM_PERM_RW | K_MEM_MAP_UNINIT, False,
            kind="stack", owner=t.name,
        )  # fmt: skip
        return MappedInfo(m, obj_len) if m is not None else MappedInfo(None, 0)

    def unmap_stack(self, k: Kernel, mapped: MappedInfo) -> Routine:
        assert mapped.addr is not None
        yield from unmap_phys_guarded(k, mapped.addr, mapped.sz, False)

    def guards(self, k: Kernel, t: KThread) -> list[tuple[int, int]]:
        m = t.stack_info.mapped
        if m.addr is None:
            return []
        return [(m.addr - PAGE, m.addr), (m.addr + m.sz, m.addr + m.sz + PAGE)]

    def is_stack_fault(self, k: Kernel, t: KThread, cr2: int) -> bool:
        """``z_x86_check_guard_page``. With ``mapped.addr == NULL`` the rear-guard test becomes
        ``[0, PAGE)`` and the front test wraps: a NULL-page access is then reported as a stack
        overflow, as in Zephyr (``arch/x86/core/fatal.c``; mmusim's reading of it)."""
        mapped = t.stack_info.mapped
        base = mapped.addr or 0
        mask = (1 << 64) - 1
        start, end = (base - PAGE) & mask, base
        if start <= cr2 < end:
            return True
        start = base + mapped.sz
        return start <= cr2 < start + PAGE


class LegacyGuard(StackPolicy):
    """``CONFIG_X86_STACK_PROTECTION`` without mapped stacks: the stack is used in place and the
    first page of the object (reserved for it by the geometry macros) becomes present, read-only.
    Never reset when the thread exits (Zephyr #29499). Attribution is by the stack pointer only
    (``z_x86_check_stack_bounds``), so ``is_stack_fault`` is False. The guard sits *inside* the
    object, so an overflow is caught before it leaves the object -- and nothing catches an access
    that leaves it (above the top, or below after jumping the guard): ``catches`` is empty."""

    name = "legacy-guard"
    remaps = False
    catches = frozenset[str]()

    def map_stack(
        self, k: Kernel, t: KThread, stack: StackObject, obj_len: int
    ) -> Generator[Any, None, MappedInfo]:
        yield Point(
            "z_x86_set_stack_guard", f"guard page {stack.addr:#x} read-only",
            res=pte_write(stack.addr),
        )  # fmt: skip
        for pt in k.all_ptables():  # range_map_unlocked: every domain's tables and the kernel's
            pt.set_flags(stack.addr, int(PteFlags.NX) if k.mode.has_nx else 0)
        kernel_invlpg(k, stack.addr)
        return MappedInfo(None, 0)

    def unmap_stack(self, k: Kernel, mapped: MappedInfo) -> Routine:
        return
        yield  # pragma: no cover

    def guards(self, k: Kernel, t: KThread) -> list[tuple[int, int]]:
        assert t.stack is not None
        return [(t.stack.addr, t.stack.addr + PAGE)]

    def is_stack_fault(self, k: Kernel, t: KThread, cr2: int) -> bool:
        return False


class NoProtection(StackPolicy):
    """No guard at all: the stack is used in place; an overflow writes into whatever lies below."""

    name = "none"
    remaps = False
    catches = frozenset[str]()

    def map_stack(
        self, k: Kernel, t: KThread, stack: StackObject, obj_len: int
    ) -> Generator[Any, None, MappedInfo]:
        return MappedInfo(None, 0)
        yield  # pragma: no cover

    def unmap_stack(self, k: Kernel, mapped: MappedInfo) -> Routine:
        return
        yield  # pragma: no cover

    def is_stack_fault(self, k: Kernel, t: KThread, cr2: int) -> bool:
        return False


BUILTIN: dict[str, type[StackPolicy]] = {
    p.name: p for p in (MappedStacks, LegacyGuard, NoProtection)
}


def policy_for_config(cfg: Any) -> StackPolicy:
    """The built-in policy Kconfig selects."""
    if cfg.get("THREAD_STACK_MEM_MAPPED"):
        return MappedStacks()
    if cfg.get("X86_STACK_PROTECTION"):
        return LegacyGuard()
    return NoProtection()


def resolve_policy(cfg: Any, policy: StackPolicy | type[StackPolicy] | None) -> StackPolicy:
    """The policy a kernel runs: ``policy`` (an instance or a class), else the Kconfig choice.
    A policy that remaps stacks needs ``CONFIG_THREAD_STACK_MEM_MAPPED=y``; a built-in one must
    match the configuration that selects it."""
    if policy is None:
        return policy_for_config(cfg)
    if isinstance(policy, type):
        policy = policy()
    if not isinstance(policy, StackPolicy):
        raise KernelAssert(f"Kernel: policy {policy!r} is not a StackPolicy")
    if policy.remaps and not cfg.get("THREAD_STACK_MEM_MAPPED"):
        raise KernelAssert(
            f"Kernel: policy {policy.name!r} maps stacks: it needs "
            "CONFIG_THREAD_STACK_MEM_MAPPED=y (the geometry and the abort cleanup come from it)"
        )
    if not policy.remaps and cfg.get("THREAD_STACK_MEM_MAPPED"):
        raise KernelAssert(
            f"Kernel: policy {policy.name!r} uses stacks in place: it needs "
            "CONFIG_THREAD_STACK_MEM_MAPPED=n"
        )
    bad = set(policy.catches) - ESCAPE_KINDS
    if bad:
        raise KernelAssert(
            f"Kernel: policy {policy.name!r} catches {sorted(bad)}: allowed {sorted(ESCAPE_KINDS)}"
        )
    return policy
