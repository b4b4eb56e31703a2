"""A thread's life: ``k_thread_create`` (``z_setup_new_thread``), ``k_thread_start``,
``k_thread_join``, ``k_thread_suspend`` and ``k_thread_resume`` (``kernel/thread.c``,
``kernel/sched.c``). Its end -- abort and exit -- is ``mmusim.kernel.abort``; its stack,
``mmusim.kernel.stack``.

``k_thread_create`` takes the entry routine, as Zephyr's takes ``entry``: the body interpreter's
``thread_main`` (``mmusim.kernel.body``) is what every thread runs.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from mmusim.kernel import cleanup, domain, runqueue, sched
from mmusim.kernel.routines import KernelAssert, Point, reads
from mmusim.kernel.stack import setup_thread_stack
from mmusim.kernel.thread import (
    K_FOREVER,
    K_USER,
    KThread,
    Op,
    StackObject,
    ThreadState,
    switch_ready,
)

if TYPE_CHECKING:
    from mmusim.kernel.boot import Kernel

Routine = Generator[Any, None, None]
Entry = Callable[["Kernel", KThread], Generator[Any, None, Any]]  # z_thread_entry + the body


def setup_new_thread(
    k: Kernel, t: KThread, stack: StackObject, body: tuple[Op, ...], options: int, prio: int
) -> Routine:
    """``z_setup_new_thread``: the reuse check, then the stack set-up; leaves the thread PRESTART."""
    fn = "k_thread_create"
    if k.cfg.get("THREAD_ABORT_NEED_CLEANUP"):
        yield from cleanup.k_thread_abort_cleanup_check_reuse(k, t)
    if t.generation and not t.dead:
        # DEVIATION(create-live-object-asserts): Zephyr checks a live thread object only for user
        # callers (syscall verification); mmusim asserts for every caller.
        raise KernelAssert(f"{fn}: thread object {t.name!r} is still in use (not dead)")
    if t.generation and t.switch_handle is None:
        # Dead, but its CPU has not finished arch_switch: its context is still being saved.
        # k_thread_join() waits for exactly this (z_sched_switch_spin) -- join before re-creating.
        raise KernelAssert(
            f"{fn}: thread object {t.name!r} is still switching out (join it before re-creating it)"
        )
    if options & K_USER:
        if not k.cfg.get("USERSPACE"):
            raise KernelAssert(f"{fn}: K_USER needs CONFIG_USERSPACE")
        if not stack.user_capable:
            raise KernelAssert(f"{fn}: K_USER thread {t.name!r} on kernel-only stack {stack.name}")
    user_of = k.stack_users.get(stack.name)
    if user_of is not None and user_of is not t and not user_of.dead:
        raise KernelAssert(f"{fn}: stack {stack.name} is in use by live thread {user_of.name!r}")
    k.stack_users[stack.name] = t
    t.state = ThreadState.PRESTART
    t.options, t.prio, t.body, t.stack = options, prio, body, stack
    t.generation += 1
    t.exit_reason = ""
    t.join_waiters = []
    t.cpl = 0
    t.stack_ready = False
    yield from setup_thread_stack(k, t, stack, stack.size)
    yield from domain.z_mem_domain_init_thread(k, t)
    if k.cfg.get("USERSPACE"):
        t.psp = z_x86_userspace_prepare_thread_psp(k, stack)
    t.stack_ready = True
    t.switch_handle = t.sp  # a new thread's context is "saved": it may be switched to


def z_x86_userspace_prepare_thread_psp(k: Kernel, stack: StackObject) -> int:
    """``thread->arch.psp`` as ``z_x86_userspace_prepare_thread`` (``arch/x86/core/userspace.c``,
    called from ``arch_new_thread``) sets it for every thread when ``USERSPACE``::

        header = (struct z_x86_thread_stack_header *)thread->stack_obj;
        thread->arch.psp = header->privilege_stack + sizeof(header->privilege_stack);

    ``stack_obj`` is the ORIGINAL stack object (``z_setup_new_thread``: ``stack_obj = stack``),
    not its mapped alias: with ``THREAD_STACK_MEM_MAPPED`` a system call runs on the privilege
    stack inside the object in ``.noinit``, reached through the kernel image's identity mapping,
    while the alias's copy of that area (between ``mapped.addr`` and ``stack_info.start``) stays
    unused. The header (``include/zephyr/arch/x86/thread_stack.h``) is ``[guard_page, only with
    X86_STACK_PROTECTION && !THREAD_STACK_MEM_MAPPED][privilege_stack[PRIVILEGED_STACK_SIZE]]``:
    ``K_THREAD_STACK_RESERVED`` bytes, so psp is ``stack_obj + K_THREAD_STACK_RESERVED``."""
    return stack.addr + k.geometry.thread_reserved


def k_thread_create(
    k: Kernel,
    t: KThread,
    stack: StackObject,
    entry: Entry,
    body: tuple[Op, ...],
    *,
    options: int = 0,
    prio: int = 0,
    delay: int = K_FOREVER,
) -> Routine:
    """``k_thread_create(t, stack, size, entry, body, ...)``: set ``t`` up on ``stack``; it will run
    ``entry(k, t)`` (which runs ``body``). Started at once with ``delay == K_NO_WAIT``."""
    yield from setup_new_thread(k, t, stack, body, options, prio)
    t.gen = entry(k, t)
    t.pending = next(t.gen)
    if delay == 0:
        yield from k_thread_start(k, t)


def k_thread_start(k: Kernel, t: KThread) -> Routine:
    fn = "k_thread_start"
    yield from k.k_spin_lock(k.sched_lock, fn)
    if not t.state & ThreadState.PRESTART or t.dead:
        yield from k.k_spin_unlock(k.sched_lock, fn)
        return
    t.state &= ~ThreadState.PRESTART
    runqueue.ready_thread(k, t)
    yield from sched.z_reschedule(k, fn)


def k_thread_join(k: Kernel, t: KThread) -> Generator[Any, None, int]:
    """``k_thread_join(t, K_FOREVER)``: 0 once ``t`` is dead (and its context saved)."""
    fn = "k_thread_join"
    me = k.current
    if t is me:
        raise KernelAssert(f"{fn}: a thread cannot join itself (-EDEADLK)")
    yield from k.k_spin_lock(k.sched_lock, fn)
    if t.dead:
        yield Point(
            fn,
            f"z_sched_switch_spin({t.name})",
            wait=switch_ready(t),
            res=reads(("sh", t.name)),
        )
        yield from k.k_spin_unlock(k.sched_lock, fn)
        return 0
    if t.state & ThreadState.PRESTART and not t.generation:
        yield from k.k_spin_unlock(k.sched_lock, fn)
        raise KernelAssert(f"{fn}: {t.name!r} was never created")
    me.state |= ThreadState.PENDING
    t.join_waiters.append(me)
    me.pended_on = t
    yield from sched.z_swap(k, fn)
    return 0


def k_thread_suspend(k: Kernel, t: KThread) -> Routine:
    """``k_thread_suspend`` (``z_impl_k_thread_suspend``): nothing if already suspended, else
    ``z_thread_halt(t, terminate=false)`` -- a thread running on another CPU is marked SUSPENDING
    and halts itself there; the caller waits on its halt queue."""
    fn = "k_thread_suspend"
    yield from k.k_spin_lock(k.sched_lock, fn)
    if t.state & ThreadState.SUSPENDED:
        yield from k.k_spin_unlock(k.sched_lock, fn)
        return
    yield from sched.z_thread_halt(k, t, fn, terminate=False)


def k_thread_resume(k: Kernel, t: KThread) -> Routine:
    fn = "k_thread_resume"
    yield from k.k_spin_lock(k.sched_lock, fn)
    if not t.state & ThreadState.SUSPENDED:
        yield from k.k_spin_unlock(k.sched_lock, fn)
        return
    t.state &= ~ThreadState.SUSPENDED
    runqueue.ready_thread(k, t)
    yield from sched.z_reschedule(k, fn)
