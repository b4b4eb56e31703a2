"""``mmusim.testing``: property tests for stack-mapping policies.

* ``KernelMachine`` -- a Hypothesis ``RuleBasedStateMachine`` over a booted kernel (subclass it);
* ``RuntimeMachine`` -- one over a runtime stack policy (``mmusim.runtime.policies``) and its
  promise (``catches``), on bare page tables and, for signals, on the kernel with a process;
* ``GoStackMachine`` -- one over Go's goroutine stacks (``mmusim.runtime.gostack``): checked
  prologues, segmented and copying growth, pointers relocated, on bare page tables;
* strategies for the MMU (``page_tables``, ``accesses``) and for configurations (``configs``);
* thread specs and body steps (``ThreadSpec``, ``Push``, ``Call``, ``Underflow``, ...) with their
  strategies (``thread_specs``, ``steps``, ``schedules``);
* ``boot_kernel`` -- a kernel for hand-written tests;
* the pytest plugin (``mmusim.testing.plugin``, loaded through the ``pytest11`` entry point):
  fixtures ``kernel``, ``machine`` and ``runtime_machine``, the ``mmusim`` marker, Hypothesis
  profiles ``ci``, ``dev`` and ``thorough``.

See ``docs/property-tests.md``.
"""

from mmusim.kernel import LegacyGuard, MappedStacks, NoProtection, StackPolicy
from mmusim.testing.config import BoardConfig, configs
from mmusim.testing.gomachine import GoStackMachine
from mmusim.testing.hw import (
    AddressSpace,
    MemoryAccess,
    PageMapping,
    accesses,
    page_tables,
    paging_modes,
)
from mmusim.testing.machine import KernelMachine, boot_kernel
from mmusim.testing.runtime import PromiseBroken, RuntimeMachine
from mmusim.testing.specs import (
    DEFAULT_STACK_SIZES,
    Alloca,
    Call,
    Pop,
    Push,
    Sleep,
    Step,
    ThreadSpec,
    Underflow,
    Yield,
    schedules,
    steps,
    thread_specs,
)

__all__ = [
    "DEFAULT_STACK_SIZES",
    "AddressSpace",
    "BoardConfig",
    "MemoryAccess",
    "PageMapping",
    "accesses",
    "configs",
    "page_tables",
    "paging_modes",
    "Alloca",
    "Call",
    "GoStackMachine",
    "KernelMachine",
    "LegacyGuard",
    "MappedStacks",
    "NoProtection",
    "Pop",
    "PromiseBroken",
    "Push",
    "Sleep",
    "RuntimeMachine",
    "StackPolicy",
    "Step",
    "ThreadSpec",
    "Underflow",
    "Yield",
    "boot_kernel",
    "schedules",
    "steps",
    "thread_specs",
]
