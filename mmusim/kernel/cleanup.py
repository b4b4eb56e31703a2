"""How a thread ends: ``halt_thread``, and the deferred stack cleanup it ends in
(``kernel/sched.c``, ``kernel/thread.c``).

``halt_thread`` ends in ``k_thread_abort_cleanup(t)``, which, under ``thread_cleanup_lock``::

    if thread_to_cleanup: unmap the stashed stack; thread_to_cleanup = NULL   # "finish the pending one"
    if t == _current:     defer: thread_to_cleanup = t; stash t's mapping; mapped.addr = NULL
    else:                 do_thread_cleanup(t)                                # unmap t's stack now

A running thread cannot unmap its own stack -- it is executing on it -- so its unmap waits for the
next abort anywhere, or for the same thread object to be created again
(``k_thread_abort_cleanup_check_reuse``). There is one slot for the whole system.

``do_thread_cleanup`` is the post-fix version (Zephyr PR #116180): it unmaps the stack recorded in
``t->stack_info.mapped`` and clears it. With ``CONFIG_SIM_ABORT_CLEANUP_LEAK=y`` mmusim reproduces
the pre-fix code of issue #119098: ``do_thread_cleanup(t)`` ignores ``t`` and only unmaps the
stash, which step one has just emptied -- so a thread aborted by another thread leaks its stack
mapping (stack + two guard pages of virtual space) for ever.

Lock order: ``_sched_spinlock`` -> ``thread_cleanup_lock`` -> ``z_mm_lock``.

Mutants for the explorer (``mmusim/mutants.py``; each a ``CONFIG_SIM_MUTANT_*`` knob, marked
``# MUTANT`` below): ``NO_CLEANUP_LOCK`` stops at the lock points but never takes
``thread_cleanup_lock``; ``DEFER_NO_DRAIN`` defers a self-abort without draining the slot first
(the pending stack leaks); ``SELF_UNMAP`` makes a self-aborting thread unmap the stack it runs on.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from mmusim.kernel import runqueue
from mmusim.kernel.domain import z_mem_domain_exit_thread
from mmusim.kernel.routines import LOCAL, Point, reads, writes
from mmusim.kernel.thread import HALTING, KThread, MappedInfo, ThreadState, switch_ready

if TYPE_CHECKING:
    from mmusim.kernel.boot import Kernel

Routine = Generator[Any, None, None]
SLOT = writes(("slot",))  # the deferred-cleanup slot (normally guarded by thread_cleanup_lock)


def halt_thread(k: Kernel, t: KThread, new_state: ThreadState) -> Routine:
    """``halt_thread(t, new_state)`` (``kernel/sched.c``), with ``_sched_spinlock`` held and ``t``
    running nowhere but, perhaps, here. ``new_state`` is ``_THREAD_DEAD`` or ``_THREAD_SUSPENDED``;
    a thread already in that state is left alone, as Zephyr's ``if ((state & new_state) == 0U)``
    does. Suspension wakes the halt queue, clears the halting bits and stops there -- no unmap;
    death also unpends ``t``, cancels its timeout, wakes its join queue, takes back user access to
    its stack, runs the cleanup hook, and clears the halting bits last (``clear_halting``: other
    CPUs may spin on them)."""
    fn = "halt_thread"
    if t.state & new_state:
        return
    dead = new_state == ThreadState.DEAD
    yield Point(fn, f"{t.name}: set _THREAD_{new_state.name}", res=LOCAL)  # under _sched_spinlock
    t.state |= new_state
    runqueue.dequeue(k, t)
    if dead:
        # z_abort_thread_timeout; the SLEEPING bit stays, as z_tick_sleep's _THREAD_SUSPENDED
        # does in Zephyr (sleeping-bit).
        if t.state & ThreadState.SLEEPING and t.wake_tick is not None and t in k.sleepers:
            k.sleepers.remove(t)
            t.wake_tick = None
        t.mbox_wait = False
        if t.pended_on is not None:  # unpend_thread_no_timeout: t may wait on a join/halt queue
            for queue in (t.pended_on.join_waiters, t.pended_on.halt_waiters):
                if t in queue:
                    queue.remove(t)
            t.pended_on = None
        yield Point(fn, f"{t.name}: wake the join queue", res=LOCAL)  # under _sched_spinlock
        _unpend_all(k, t.join_waiters)
        t.join_waiters = []
    _unpend_all(k, t.halt_waiters)  # SMP: unpend_all(&thread->halt_queue)
    t.halt_waiters = []
    if not dead:
        t.state &= ~HALTING  # clear_halting(): ABORTING too, if it was set
        return
    if not t.exit_reason:
        t.exit_reason = "aborted"
    yield from z_mem_domain_exit_thread(k, t)  # a user thread's stack loses its user access
    if k.cfg.get("THREAD_ABORT_NEED_CLEANUP"):
        yield from k_thread_abort_cleanup(k, t)
    t.state &= ~HALTING  # clear_halting(), last


def _unpend_all(k: Kernel, waiters: list[KThread]) -> None:
    """``unpend_all``: every thread waiting on the queue becomes ready."""
    for w in waiters:
        w.state &= ~ThreadState.PENDING
        w.pended_on = None
        runqueue.ready_thread(k, w)


def _cleanup_lock(k: Kernel, fn: str) -> Routine:
    if k.mutant_no_cleanup_lock:  # MUTANT (SIM_MUTANT_NO_CLEANUP_LOCK): the point, not the lock
        yield Point(fn, "k_spin_lock(thread_cleanup_lock) [mutant: not taken]", res=LOCAL)
        return
    yield from k.k_spin_lock(k.cleanup_lock, fn)


def _cleanup_unlock(k: Kernel, fn: str) -> Routine:
    if k.mutant_no_cleanup_lock:  # MUTANT (SIM_MUTANT_NO_CLEANUP_LOCK): the point, not the lock
        yield Point(fn, "k_spin_unlock(thread_cleanup_lock) [mutant: not held]", res=LOCAL)
        return
    yield from k.k_spin_unlock(k.cleanup_lock, fn)


def k_thread_abort_cleanup(k: Kernel, t: KThread) -> Routine:
    fn = "k_thread_abort_cleanup"
    yield from _cleanup_lock(k, fn)
    yield Point(fn, "read thread_to_cleanup", res=SLOT)
    # MUTANT (SIM_MUTANT_DEFER_NO_DRAIN): a self-abort overwrites the slot without draining it.
    no_drain = k.mutant_defer_no_drain and t is k.current
    if k.cleanup.thread is not None and not no_drain:
        yield from do_deferred_thread_cleanup(k)  # "Finish the pending one first"
        yield Point(fn, "thread_to_cleanup = NULL", res=SLOT)
        k.cleanup.thread = None
    if t is k.current and k.mutant_self_unmap:
        # MUTANT (SIM_MUTANT_SELF_UNMAP): unmap the stack this thread is still running on (without
        # the what-if fix's wait, which would wait for this very thread: a deadlock).
        yield from do_thread_cleanup(k, t, wait=False)
    elif t is k.current:
        yield from defer_thread_cleanup(k, t)
    else:
        yield from do_thread_cleanup(k, t)
    yield from _cleanup_unlock(k, fn)


def defer_thread_cleanup(k: Kernel, t: KThread) -> Routine:
    fn = "defer_thread_cleanup"
    yield Point(fn, f"thread_to_cleanup = {t.name}; stash its mapping", res=SLOT)
    k.cleanup.thread = t
    k.cleanup.stack_addr = t.stack_info.mapped.addr
    k.cleanup.stack_sz = t.stack_info.mapped.sz
    yield Point(fn, f"{t.name}: stack_info.mapped.addr = NULL", res=SLOT)
    t.stack_info.mapped = MappedInfo(None, 0)


def do_deferred_thread_cleanup(k: Kernel) -> Routine:
    """Unmap the stashed stack, if any. Never reads the pending thread object."""
    if k.cleanup.stack_addr is not None:
        addr, sz = k.cleanup.stack_addr, k.cleanup.stack_sz
        pending = k.cleanup.thread
        if k.drain_waits and pending is not None:  # SIM_CLEANUP_WAITS_FOR_SWITCH (not Zephyr)
            yield Point("do_deferred_thread_cleanup", f"wait for {pending.name} to switch out",
                        wait=switch_ready(pending), res=reads(("sh", pending.name)))  # fmt: skip
        yield from k.policy.unmap_stack(k, MappedInfo(addr, sz))
        yield Point("do_deferred_thread_cleanup", "clear the stash", res=SLOT)
        k.cleanup.stack_addr = None
        k.cleanup.stack_sz = 0


def do_thread_cleanup(k: Kernel, t: KThread, *, wait: bool = True) -> Routine:
    if k.leak_bug:  # pre-fix: ARG_UNUSED(thread) -- unmap the stash only (#119098)
        yield from do_deferred_thread_cleanup(k)
        return
    addr = t.stack_info.mapped.addr
    if addr is not None:
        if k.drain_waits and wait:  # SIM_CLEANUP_WAITS_FOR_SWITCH (not Zephyr): t may be switching
            yield Point("do_thread_cleanup", f"wait for {t.name} to switch out",
                        wait=switch_ready(t), res=reads(("sh", t.name)))  # fmt: skip
        yield from k.policy.unmap_stack(k, t.stack_info.mapped)
        yield Point("do_thread_cleanup", f"{t.name}: stack_info.mapped.addr = NULL", res=SLOT)
        t.stack_info.mapped = MappedInfo(None, 0)


def k_thread_abort_cleanup_check_reuse(k: Kernel, t: KThread) -> Routine:
    fn = "k_thread_abort_cleanup_check_reuse"
    yield from _cleanup_lock(k, fn)
    yield Point(fn, "read thread_to_cleanup", res=SLOT)
    if k.cleanup.thread is t:
        yield from do_deferred_thread_cleanup(k)
        k.cleanup.thread = None
    yield from _cleanup_unlock(k, fn)
