"""Thread abort: ``k_thread_abort`` (``z_thread_abort`` in ``kernel/sched.c``).

``k_thread_abort(t)``, holding ``_sched_spinlock``:

* ``t`` essential: ``k_panic()`` (mmusim: ``KernelAssert``);
* ``t`` dead (or never created): nothing to do;
* otherwise ``z_thread_halt(t, terminate=true)`` (``mmusim.kernel.sched``): a thread running on
  another CPU is marked ABORTING and sent an IPI, and the caller waits on its join queue -- the
  other CPU halts it in ``next_up``, at its next reschedule (the IPI's exit, or its own block, sleep
  or yield); else ``halt_thread(t)`` here, and if ``t`` is the caller it switches away for good.

``halt_thread`` and the deferred stack cleanup it ends in are ``mmusim.kernel.cleanup``; a thread
that returns from its entry, or faults, ends here too (``body.thread_main``, ``fault.page_fault``).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from mmusim.kernel import sched
from mmusim.kernel.routines import KernelAssert
from mmusim.kernel.thread import K_ESSENTIAL, KThread

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
    yield from sched.z_thread_halt(k, t, fn, terminate=True)
