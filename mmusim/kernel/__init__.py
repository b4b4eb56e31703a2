"""The tiny RTOS: Zephyr's memory-mapped thread stacks on the simulated machine.

Policy over ``mmusim.hw`` (which it uses only through its public API), with Zephyr's names:
``k_thread_create``, ``k_thread_abort``, ``k_mem_map_phys_guard``, ``stack_info.mapped.addr``.
See docs/kernel.md.
"""

from mmusim.kernel.core import KernelAssert, KSpinlock, Point, run
from mmusim.kernel.kernel import Kernel
from mmusim.kernel.thread import K_FOREVER, K_NO_WAIT, K_USER, KThread, Op, StackObject

__all__ = [
    "K_FOREVER",
    "K_NO_WAIT",
    "K_USER",
    "KSpinlock",
    "KThread",
    "Kernel",
    "KernelAssert",
    "Op",
    "Point",
    "StackObject",
    "run",
]
