"""Named facts of a kernel state: what scenarios record and expect (``record`` ops, ``[expect]``).

``fact(k, "worker.mapped_addr")`` is ``stack_info.mapped.addr`` of thread ``worker``; the names are
listed in ``fact``'s docstring and in docs/scenarios.md. Reading a fact never changes the state: no
TLB fill, no accessed bit (memory is read through the page tables directly).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mmusim.kernel.geometry import PAGE
from mmusim.kernel.mm import k_mem_free_get
from mmusim.kernel.routines import KernelAssert
from mmusim.kernel.stack import k_thread_stack_space_get
from mmusim.kernel.thread import KThread, ThreadState

if TYPE_CHECKING:
    from mmusim.kernel.boot import Kernel


def fact(k: Kernel, what: str) -> Any:
    """A named fact of the current state: ``T.mapped_addr``, ``T.mapped_sz``,
    ``T.stack_start``, ``T.stack_size``, ``T.state``, ``T.stack_space``, ``T.sp``, ``T.psp``,
    ``free_mem``,
    ``vm_free_pages``, ``vm_free_start``, ``clock``, ``pending_cleanup``, ``mapping.NAME``,
    ``mapping.NAME.nonzero_bytes``, ``stack.NAME.addr`` / ``.obj_len`` / ``.nonzero_bytes``."""
    if what == "free_mem":
        return k_mem_free_get(k)
    if what == "vm_free_pages":
        return k.vm.free_pages
    if what == "vm_free_start":
        return k.image_end_virt  # K_MEM_VM_FREE_START
    if what == "clock":
        return k.clock
    if what == "pending_cleanup":
        return k.cleanup.thread.name if k.cleanup.thread else None
    if what.startswith("mapping."):  # mapping.NAME: its address; .nonzero_bytes: contents
        name, _, field = what.split(".", 1)[1].partition(".")
        r = k.mappings.get(name)
        if field == "nonzero_bytes":
            return None if r is None else nonzero_bytes(k, r.addr, r.size)
        return r.addr if r else None
    if what.startswith("stack."):  # stack.NAME.addr / .obj_len / .nonzero_bytes (the object)
        name, _, field = what.split(".", 1)[1].rpartition(".")
        obj = k.stacks.get(name) or k.boot_stacks.get(name)
        if obj is None or field not in ("addr", "obj_len", "nonzero_bytes"):
            raise KernelAssert(f"Kernel.fact: unknown fact {what!r}")
        if field == "nonzero_bytes":
            pa = obj.addr - k.virt_offset
            return sum(1 for b in k.mem.read(pa, obj.obj_len) if b)
        return obj.addr if field == "addr" else obj.obj_len
    name, _, field = what.rpartition(".")
    t = k.thread(name)
    if field == "mapped_addr":
        return t.stack_info.mapped.addr
    if field == "mapped_sz":
        return t.stack_info.mapped.sz
    if field == "sp":  # the stack pointer: the CPU's while t runs there, else the saved one
        for c in k.cpus:
            if c.running_on is t:
                return c.hw.sp
        return t.sp
    if field == "psp":  # arch.psp: top of the privilege-elevation stack
        return t.psp
    if field == "stack_start":
        return t.stack_info.start
    if field == "stack_size":
        return t.stack_info.size
    if field == "state":
        return thread_state_name(k, t)
    if field == "stack_space":
        return k_thread_stack_space_get(k, t)
    raise KernelAssert(f"Kernel.fact: unknown fact {what!r}")


# k_thread_state_str's names, bit by bit (kernel/include/thread.h Z_STATE_STR_*, indexed by the
# _THREAD_* bits of kernel_structs.h): bit 2 is _THREAD_SLEEPING -- created but not started, or in
# k_sleep() -- which older trees called _THREAD_PRESTART and printed as "prestart".
ZEPHYR_STATE_NAMES = (
    "dummy", "pending", "sleeping", "dead", "suspended", "aborting", "suspending", "queued",
)  # fmt: skip


def thread_state_name(k: Kernel, t: KThread) -> str:
    """``k_thread_state_str`` (``kernel/thread.c``): the names of the set ``thread_state`` bits,
    lowest bit first, joined by ``+`` -- ``queued`` (in the ready queue, not running),
    ``sleeping`` (created with ``K_FOREVER`` and not started, or in ``k_sleep``), ``pending``,
    ``dead``, ``suspended``, ``aborting``, ``sleeping+dead`` (a sleeper aborted), ...

    mmusim keeps a tick-clock sleep in a bit of its own (``ThreadState.SLEEPING``); it is named
    as Zephyr's ``_THREAD_SLEEPING`` (bit 2), in that bit's place. A state of 0 is a thread that
    runs (on SMP the running thread is not in the ready queue): Zephyr's string is then empty;
    mmusim says ``running`` (and ``""`` for a state of 0 that is no CPU's ``_current``)."""
    bits = int(t.state)
    if bits & ThreadState.SLEEPING:
        bits = (bits & ~int(ThreadState.SLEEPING)) | int(ThreadState.PRESTART)
    if bits:
        return "+".join(n for i, n in enumerate(ZEPHYR_STATE_NAMES) if bits & 1 << i)
    return "running" if any(c.current is t for c in k.cpus) else ""


def nonzero_bytes(k: Kernel, va: int, size: int) -> int:
    """Non-zero bytes of ``[va, va+size)``, read through the page tables (no TLB, no A bits)."""
    count = 0
    for off in range(0, size, PAGE):
        hit = k.pt.lookup(va + off)
        if hit is not None:
            page = hit[3]
            pa = (hit[2] & k.pt_frame_mask & ~(page - 1)) + (va + off) % page
            count += sum(1 for b in k.mem.read(pa, min(PAGE, size - off)) if b)
    return count
