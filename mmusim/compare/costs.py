"""What one stack costs under each strategy, as the ``"costs"`` block of ``mmusim compare``.

``policy_costs(name, size)`` measures one stack of ``size`` bytes made and thrown away, and
returns plain numbers under the same keys for every strategy::

    areas             mappings the live stack holds (runtime: VMAs / areas; kernel: entries of
                      ``k.regions`` owned by the thread -- 1 for a mapped stack, 0 in place)
    virtual_pages     virtual pages those mappings span, guard pages included (0 in place)
    frames            page frames the live stack holds beyond what existed before it (runtime:
                      the pushed top page; kernel: taken from the frame allocator -- a mapped
                      stack aliases its ``.noinit`` object, so 0)
    page_table_pages  page-table pages the creation added (a bare machine for the runtime
                      policies, so the first stack builds its PDPT, PD and PT; the kernel's come
                      from the image's page-table pool)
    pte_writes        leaf PTE writes of create + first push + destroy
    shootdowns        TLB shootdowns (invalidations sent to the other CPU) of the same cycle
    cycles_per_second create + push + destroy cycles per second of wall-clock time
    splits, copies, bytes_copied   None: only the Go policies have them; the caller fills them

Everything but ``cycles_per_second`` is deterministic (model state, the same on every run).
``cycles_per_second`` is a tool-level measurement: ``time.perf_counter`` around the simulator
running ``cycles`` cycles, outside the model -- it varies from run to run and machine to machine.

Runtime policies (``mmusim.runtime.policies.RUNTIME_POLICIES``, looked up at call time) are
measured with ``stack_costs`` on a bare ``HwPager`` machine with two CPUs' TLBs: ``areas`` and
``virtual_pages`` are its ``held`` numbers, ``frames`` and ``page_table_pages`` its ``create``
numbers (create includes the first push, so frames created are the frames held), ``pte_writes``
and ``shootdowns`` the sum of its ``create`` and ``destroy`` numbers.

Kernel policies -- ``zephyr-mapped`` (``CONFIG_THREAD_STACK_MEM_MAPPED=y``), ``zephyr-legacy``
(the legacy guard page, ``CONFIG_X86_STACK_PROTECTION`` without mapped stacks) and ``none``
(neither) -- run a kernel on ``board`` (default ``qemu_x86_64``, two CPUs): ``main`` creates a thread on a kernel
stack object of ``size`` bytes (``k_thread_create``, ``K_NO_WAIT``) and sleeps a tick, in which
the thread pushes 64 bytes and sleeps for ever; then ``main`` aborts and joins it. The thread is
not running when it is aborted, so ``k_thread_abort_cleanup`` unmaps its stack at once: nothing is
left in the deferred-cleanup slot (a thread aborted while it runs on the other CPU would leave
its unmap to the next abort; the measurement avoids that, so one cycle is complete). The kernel keeps no PTE-write counter, so the
measurement counts the leaf entries it changes -- ``map``, ``unmap``, ``set_flags`` and ``clear`` (of a present entry) on each of
its page tables (``Kernel.all_ptables()``), wrapped for the measurement -- the way the runtime's
pager counts them: a present entry made, changed or cleared. (Zephyr's ``arch_mem_unmap`` also
stores zero into the not-present guard PTEs it clears; those stores change nothing and are not
counted, as mmusim's kernel does not perform them either.) Shootdowns are the TLB IPIs the kernel
sent (``k.ipis["tlb"]``), one broadcast per ``tlb_shootdown`` call: IPIs / (CPUs - 1).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from mmusim.hw import MODE_IA32E, PhysMem, Tlb
from mmusim.kconfig import load_config
from mmusim.kernel import K_FOREVER, PAGE, Kernel, Op, StackObject
from mmusim.runtime import AddressSpace, HwPager
from mmusim.runtime.policies import RUNTIME_POLICIES, RuntimeStackPolicy, stack_costs

__all__ = ["COST_KEYS", "KERNEL_POLICIES", "BOARD", "kernel_config", "policy_costs"]

BOARD = "qemu_x86_64"

#: The kernel's stack strategies, by name: the Kconfig lines that select each.
KERNEL_POLICIES: dict[str, tuple[str, ...]] = {
    "zephyr-mapped": ("CONFIG_THREAD_STACK_MEM_MAPPED=y",),
    "zephyr-legacy": ("CONFIG_THREAD_STACK_MEM_MAPPED=n", "CONFIG_HW_STACK_PROTECTION=y"),
    "none": ("CONFIG_THREAD_STACK_MEM_MAPPED=n", "CONFIG_HW_STACK_PROTECTION=n"),
}

#: Every key of the dict ``policy_costs`` returns, in order.
COST_KEYS = (
    "areas", "virtual_pages", "frames", "page_table_pages", "pte_writes", "shootdowns",
    "cycles_per_second", "splits", "copies", "bytes_copied",
)  # fmt: skip

_THREAD, _STACK = "x", "sx"


def policy_costs(
    name: str, size: int = 16384, *, cycles: int = 200, board: str = BOARD
) -> dict[str, Any]:
    """The costs of one stack of ``size`` bytes under strategy ``name`` (a kernel policy of
    ``KERNEL_POLICIES``, measured on ``board``, or a runtime policy of ``RUNTIME_POLICIES``),
    with ``cycles`` timed create + push + destroy cycles for ``cycles_per_second``. Keys:
    ``COST_KEYS`` (see the module docstring); ``splits``, ``copies`` and ``bytes_copied`` are
    None. Raises ValueError for an unknown name."""
    if cycles < 1:
        raise ValueError(f"policy_costs: cycles must be at least 1, not {cycles}")
    if name in KERNEL_POLICIES:
        out = _kernel_costs(name, size, board)
        rate = _kernel_rate(name, size, cycles, board)
    elif name in RUNTIME_POLICIES:
        policy = RUNTIME_POLICIES[name]()
        out = _runtime_costs(policy, size)
        rate = _runtime_rate(policy, size, cycles)
    else:
        known = sorted([*KERNEL_POLICIES, *RUNTIME_POLICIES])
        raise ValueError(f"policy_costs: unknown policy {name!r}: known {known}")
    return {**out, "cycles_per_second": rate, "splits": None, "copies": None, "bytes_copied": None}


# -- runtime policies ------------------------------------------------------------------------


def _runtime_costs(policy: RuntimeStackPolicy, size: int) -> dict[str, int]:
    c = stack_costs(policy, size)
    create, held, destroy = c["create"], c["held"], c["destroy"]
    return {
        "areas": held["areas"],
        "virtual_pages": held["virtual_pages"],
        "frames": create["frames"],
        "page_table_pages": create["table_pages"],
        "pte_writes": create["pte_writes"] + destroy["pte_writes"],
        "shootdowns": create["shootdowns"] + destroy["shootdowns"],
    }


def _runtime_rate(policy: RuntimeStackPolicy, size: int, cycles: int) -> float:
    """Cycles per second on one address space (as ``benchmarks/bench_stacks.py`` runs them)."""
    pager = HwPager(PhysMem(), MODE_IA32E, tlbs=[Tlb(), Tlb()])
    space = AddressSpace(pager, 0x4000_0000, 0x7F00_0000_0000, flavour=policy.space_flavour(),
                         rlimit_stack=max(size, PAGE))  # fmt: skip
    t = time.perf_counter()
    for i in range(cycles):
        s = policy.create(space, f"c{i}", size)
        space.fault(s.hi - 8, write=True)
        policy.destroy(space, s)
    return cycles / max(time.perf_counter() - t, 1e-9)


# -- kernel policies -------------------------------------------------------------------------

_CYCLE = (
    Op("create", target=_THREAD, stack=_STACK, label="short", prio=5, n=0),
    Op("sleep", n=1),  # the new thread runs (on either CPU): it pushes, then sleeps for ever
    Op("record", target="clock", label="made"),
    Op("abort", target=_THREAD),
    Op("join", target=_THREAD),
)
_BODIES = {"short": (Op("push", n=64), Op("sleep", n=K_FOREVER))}


def kernel_config(name: str, board: str) -> Any:
    """``board``'s Kconfig with the lines that select kernel policy ``name``
    (``KERNEL_POLICIES``); errors name ``compare:<line>``."""
    lines = KERNEL_POLICIES[name]
    return load_config(board, extra_lines=[("compare", i, ln) for i, ln in enumerate(lines, 1)])


def _kernel(name: str, size: int, main: tuple[Op, ...], board: str) -> Kernel:
    cfg = kernel_config(name, board)
    stack = StackObject(_STACK, size, False)  # K_KERNEL_STACK_DEFINE: a kernel thread's
    return Kernel(cfg.values, stacks=(stack,), main_body=main, bodies=_BODIES)


class _PteCounter:
    """Counts the leaf-entry writes made to ``k``'s page tables while installed."""

    def __init__(self, k: Kernel) -> None:
        self.writes = 0
        for pt in k.all_ptables():
            for method in ("map", "unmap", "set_flags", "clear"):
                setattr(pt, method, self._counting(getattr(pt, method), method == "clear"))

    def _counting(self, fn: Callable[..., Any], if_present: bool) -> Callable[..., Any]:
        """``fn`` counting its calls; with ``if_present`` (``clear``) only the calls that found a
        present entry to clear (it returns the old entry, 0 when there was none)."""

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            out = fn(*args, **kwargs)
            if not if_present or out:
                self.writes += 1
            return out

        return wrapper


def _snapshot(k: Kernel, pte: _PteCounter) -> dict[str, int]:
    mine = [r for r in k.regions.values() if r.owner == _THREAD]
    tlb_ipis = k.ipis["tlb"]
    return {
        "areas": len(mine),
        "virtual_pages": sum((r.extent[1] - r.extent[0]) // PAGE for r in mine),
        "frames": -k.frames.free_count(),
        "page_table_pages": sum(len(pt.table_frames) for pt in k.all_ptables()),
        "pte_writes": pte.writes,
        "shootdowns": tlb_ipis // (k.ncpus - 1) if k.ncpus > 1 else 0,
    }


def _kernel_costs(name: str, size: int, board: str) -> dict[str, int]:
    main = (*_CYCLE, Op("record", target="clock", label="gone"))
    k = _kernel(name, size, main, board)
    pte = _PteCounter(k)
    before = _snapshot(k, pte)
    k.run(until=lambda kk: "made" in kk.facts)
    made = _snapshot(k, pte)
    k.run(until=lambda kk: "gone" in kk.facts)
    gone = _snapshot(k, pte)
    assert gone["areas"] == 0, f"{name}: the stack of {_THREAD} is still mapped"
    return {
        "areas": made["areas"],
        "virtual_pages": made["virtual_pages"],
        "frames": made["frames"] - before["frames"],
        "page_table_pages": made["page_table_pages"] - before["page_table_pages"],
        "pte_writes": gone["pte_writes"] - before["pte_writes"],
        "shootdowns": gone["shootdowns"] - before["shootdowns"],
    }


def _kernel_rate(name: str, size: int, cycles: int, board: str) -> float:
    """Cycles per second of ``main`` creating, running, aborting and joining a thread, timed
    between two ``record`` ops around a ``repeat`` (as ``benchmarks/bench_kernel_cycle.py``)."""
    main = (
        Op("record", target="clock", label="start"),
        Op("repeat", n=cycles, body=_CYCLE),
        Op("record", target="clock", label="end"),
    )
    k = _kernel(name, size, main, board)
    k.run(until=lambda kk: "start" in kk.facts)
    t = time.perf_counter()
    k.run(until=lambda kk: "end" in kk.facts)
    return cycles / max(time.perf_counter() - t, 1e-9)
