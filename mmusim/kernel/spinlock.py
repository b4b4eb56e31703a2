"""``struct k_spinlock`` with validation (``kernel/spinlock_validate.c``).

Spinlocks validate their use as Zephyr's ``SPIN_VALIDATE`` does: a recursive acquire asserts
"Recursive spinlock", a release by a CPU that does not hold it asserts "Not my spinlock". mmusim
also checks the lock order (each lock has a rank) on every acquire.

Taking and releasing a lock are interleaving points of the routine that does it:
``Engine.k_spin_lock`` / ``k_spin_unlock`` (``mmusim.kernel.engine``) yield the ``Point`` and then
call ``acquire`` / ``release`` here. A spinlock is a ``Waitable``: a step that takes it is enabled
only while it is free.
"""

from __future__ import annotations

import attrs

from mmusim.kernel.routines import KernelAssert


@attrs.define(eq=False)
class KSpinlock:
    """A ``struct k_spinlock`` with validation. ``holder`` is the CPU id that holds it, or None.

    Lock order: ``_sched_spinlock`` -> ``thread_cleanup_lock`` -> ``z_mm_lock``; never the reverse.
    That is how Zephyr nests them: ``halt_thread`` (``kernel/sched.c``) holds the first and calls
    ``k_thread_abort_cleanup`` (``kernel/thread.c``), which takes the second and unmaps with
    ``k_mem_unmap_phys_guard`` (``kernel/mmu.c``), which takes the third. ``rank`` encodes that
    order and ``acquire`` checks it against the locks the CPU already holds.
    """

    name: str
    rank: int
    holder: int | None = None
    acquisitions: int = 0

    def ready(self) -> bool:
        return self.holder is None

    def describe(self) -> str:
        who = "free" if self.holder is None else f"held by CPU {self.holder}"
        return f"spinlock {self.name} ({who})"

    def acquire(self, cpu: int, held: list[KSpinlock]) -> None:
        if self.holder == cpu:
            raise KernelAssert(f"k_spin_lock: Recursive spinlock {self.name} on CPU {cpu}")
        if self.holder is not None:
            raise KernelAssert(f"k_spin_lock: {self.name} taken while held by CPU {self.holder}")
        for other in held:
            if other.rank >= self.rank:
                raise KernelAssert(
                    f"k_spin_lock: lock order violated: {self.name} taken while holding {other.name}"
                )
        self.holder = cpu
        self.acquisitions += 1
        held.append(self)

    def release(self, cpu: int, held: list[KSpinlock]) -> None:
        if self.holder != cpu:
            raise KernelAssert(f"k_spin_unlock: Not my spinlock {self.name} (CPU {cpu})")
        self.holder = None
        held.remove(self)

    def _check(self) -> None:
        assert self.holder is None or self.holder >= 0, f"{self.name}: bad holder {self.holder}"
