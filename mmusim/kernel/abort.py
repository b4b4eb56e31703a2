"""Thread abort: ``k_thread_abort`` (``z_thread_abort`` in ``kernel/sched.c``).

``k_thread_abort(t)``, holding ``_sched_spinlock``:

* ``t`` dead: nothing to do;
* ``t`` running on another CPU: mark it ABORTING, send that CPU an IPI, and wait on ``t``'s join
  queue -- the other CPU halts ``t`` itself, in its IPI handler, where ``t`` is ``_current``;
* otherwise ``halt_thread(t)`` here; if ``t`` is the caller, switch away for good.

``halt_thread`` and the deferred stack cleanup it ends in are ``mmusim.kernel.cleanup``; a thread
that returns from its entry, or faults, ends here too (``body.thread_main``, ``fault.page_fault``).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from mmusim.kernel import cleanup, sched
from mmusim.kernel.routines import KernelAssert, Point, writes
from mmusim.kernel.thread import K_ESSENTIAL, KThread, ThreadState

if TYPE_CHECKING:
    from mmusim.kernel.boot import Kernel

Routine = Generator[Any, None, None]


def k_thread_abort(k: Kernel, t: KThread) -> Routine:
    fn = "z_thread_abort"
    yield from k.k_spin_lock(k.sched_lock, fn)
    if t.options & K_ESSENTIAL:
        raise KernelAssert(f"{fn}: aborting essential thread {t.name!r} (k_panic)")
    if t.dead or not t.generation:
        yield from k.k_spin_unlock(k.sched_lock, fn)
        return
    elsewhere = thread_active_elsewhere(k, t)
    if elsewhere is not None:
        t.state |= ThreadState.ABORTING
        yield Point(fn, f"send scheduler IPI to CPU {elsewhere}", res=writes(("ipi", elsewhere)))
        k.send_ipi(elsewhere, "sched")
        me = k.current
        me.state |= ThreadState.PENDING
        t.join_waiters.append(me)
        me.pended_on = t
        yield from sched.z_swap(k, fn)  # back once t has been halted over there
        return
    yield from cleanup.halt_thread(k, t, ThreadState.DEAD)
    if t is k.current:
        yield from sched.z_swap(k, fn)
        raise AssertionError("z_thread_abort: a dead thread ran again")  # pragma: no cover
    yield from sched.z_reschedule(k, fn)


def thread_active_elsewhere(k: Kernel, t: KThread) -> int | None:
    for c in k.cpus:
        if c.id != k._cpu and c.current is t:
            return c.id
    return None
