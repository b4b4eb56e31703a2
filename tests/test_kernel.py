"""The kernel on the simulated machine: guard pages, faults, abort paths, the cleanup slot, SMP.

Configurations are plain dicts here (the Kconfig layer is tested on its own); every run checks the
kernel invariants after every step.
"""

from __future__ import annotations

import random
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from helpers import X86_64_SMP, boot_kernel
from mmusim.hw import Trap
from mmusim.kernel import (
    K_ERR_CPU_EXCEPTION,
    K_ERR_STACK_CHK_FAIL,
    K_FOREVER,
    Kernel,
    KernelAssert,
    KSpinlock,
    KThread,
    Op,
    Point,
    StackObject,
    fault,
    lifecycle,
    run,
)
from mmusim.kernel.body import thread_main
from mmusim.kernel.geometry import PAGE, StackGeometry
from mmusim.kernel.invariants import check_all
from mmusim.kernel.stack import k_thread_stack_space_get
from mmusim.kernel.thread import EINVAL

IA32: dict[str, Any] = dict(
    X86_64=False, X86_PAE=True, SMP=False, THREAD_STACK_MEM_MAPPED=False,
    THREAD_ABORT_NEED_CLEANUP=False, THREAD_STACK_INFO=True, X86_STACK_PROTECTION=True,
    USERSPACE=False, SRAM_BASE_ADDRESS=0x100000, SRAM_SIZE=4096, KERNEL_VM_BASE=0x100000,
    KERNEL_VM_SIZE=0x800000, INIT_STACKS=True, ISR_STACK_SIZE=2048,
)  # fmt: skip


def spawn(
    name: str, stack: str, body: str, *, user: bool = False, prio: int = -1
) -> tuple[Op, ...]:
    return (
        Op("create", target=name, stack=stack, label=body, prio=prio, user=user, n=K_FOREVER),
        Op("start", target=name),
        Op("join", target=name),
    )


STACK = StackObject("stack", PAGE + 4096, True)


@pytest.mark.parametrize("user", [False, True])
@pytest.mark.parametrize("where", ["front_guard", "rear_guard"])
def test_guard_pages_catch_overflow_with_reason_2(where: str, user: bool) -> None:
    k = boot_kernel(X86_64_SMP, spawn("t", "stack", "b", user=user),
             {"b": (Op("touch", where=where),)}, (STACK,))  # fmt: skip
    k.run()
    assert [(f["thread"], f["reason"]) for f in k.faults] == [("t", K_ERR_STACK_CHK_FAIL)]
    f = k.faults[0]
    assert f["error_code"] == (0x6 if user else 0x2)  # not present, write, (user)
    region_lo = f["cr2"] & ~(PAGE - 1)
    assert k.thread("t").dead and k.thread("t").exit_reason == "fatal: Stack overflow"
    assert ">>> ZEPHYR FATAL ERROR 2: Stack overflow on CPU" in "\n".join(k.log)
    assert k.pt.lookup(region_lo) is None
    assert check_all(k) == []


def test_push_overflow_hits_front_guard_after_the_reserved_page() -> None:
    # A kernel-only stack keeps its reserved page (mmusim's reading of Zephyr's macros): pushing
    # past the buffer runs through it before the front guard faults; SP <= start -> reason 2.
    kstack = StackObject("kstack", 4096, False)
    k = boot_kernel(
        X86_64_SMP, spawn("t", "kstack", "b"), {"b": (Op("push", n=3 * PAGE),)}, (kstack,)
    )
    k.run()
    (f,) = k.faults
    t = k.thread("t")
    assert f["reason"] == K_ERR_STACK_CHK_FAIL
    assert f["error_code"] == 0x2
    assert f["sp"] <= t.stack_info.start  # the `<=` edge of z_x86_check_stack_bounds
    assert f["cr2"] < f["sp"]  # the faulting word is just below SP, in the front guard


def test_stack_bounds_edge_sp_equal_to_start_is_overflow() -> None:
    k = boot_kernel(X86_64_SMP, ())
    t = k.current
    assert fault.check_stack_bounds(k, t.stack_info.start, 0, 0)  # addr <= start
    assert not fault.check_stack_bounds(k, t.stack_info.start + 16, 0, 0)
    assert fault.check_stack_bounds(k, t.stack_info.start + t.stack_info.size, 8, 0)


def test_kmem_map_guard_is_cpu_exception_not_stack_overflow() -> None:
    body = (Op("k_mem_map", n=PAGE, target="m"), Op("write", target="m", offset=-8))
    k = boot_kernel(X86_64_SMP, spawn("t", "stack", "b"), {"b": body}, (STACK,))
    k.run()
    assert [f["reason"] for f in k.faults] == [K_ERR_CPU_EXCEPTION]


def test_ia32_push_into_guard_is_a_double_fault() -> None:
    # Legacy X86_STACK_PROTECTION on ia32: the in-object guard page is present, read-only. The
    # push faults, and pushing the #PF frame on the same stack faults again: #DF, reason 2.
    kstack = StackObject("kstack", 4096, False)
    k = boot_kernel(
        IA32, spawn("t", "kstack", "b", prio=-1), {"b": (Op("push", n=2 * PAGE),)}, (kstack,)
    )
    k.run()
    (f,) = k.faults
    assert f["vector"] == 8 and f["reason"] == K_ERR_STACK_CHK_FAIL
    assert "E: Double Fault" in k.log


def test_no_protection_silently_corrupts_the_neighbour() -> None:
    # No X86_STACK_PROTECTION, no mapped stacks: an overflow of the upper stack object writes into
    # the object below it. No fault at all.
    low = StackObject("low", 4096, False)
    high = StackObject("high", 4096, False)
    k = boot_kernel(IA32, spawn("t", "high", "b"), {"b": (Op("push", n=4096 + 64),)}, (low, high),
             X86_STACK_PROTECTION=False)  # fmt: skip
    k.run()
    assert k.faults == []
    tail = k.mem.read(low.addr + low.obj_len - 64, 64)  # identity-mapped: VA == PA
    assert tail == bytes([0x5A]) * 64


def test_self_abort_defers_and_next_abort_drains() -> None:
    bodies = {"ret": ()}
    main = (*spawn("a", "sa", "ret"), Op("record", target="pending_cleanup", label="p1"),
            Op("record", target="a.mapped_addr", label="a1"),
            *spawn("b", "sb", "ret"), Op("record", target="pending_cleanup", label="p2"))  # fmt: skip
    k = boot_kernel(
        X86_64_SMP, main, bodies, (StackObject("sa", 4096, True), StackObject("sb", 4096, True))
    )
    k.run()
    assert k.facts["p1"] == ["a"] and k.facts["a1"] == [None]
    assert k.facts["p2"] == ["b"]  # b's abort drained a's slot, then deferred itself
    assert k.thread("a").stack_info.mapped.addr is None
    assert not any(r.owner == "a" for r in k.regions.values())


@pytest.mark.parametrize("leak", [False, True])
def test_abort_by_another_thread_pre_and_post_fix(leak: bool) -> None:
    cycle = (
        Op("create", target="s", stack="stack", label="sleep", prio=-1, n=0),
        Op("record", target="s.mapped_addr", label="addr"),
        Op("sleep", n=1),
        Op("abort", target="s"),
        Op("record", target="s.mapped_addr", label="after"),
        Op("record", target="vm_free_pages", label="vm"),
    )
    k = boot_kernel(X86_64_SMP, (Op("repeat", n=4, body=cycle),), {"sleep": (Op("sleep", n=K_FOREVER),)},
             (STACK,), SIM_ABORT_CLEANUP_LEAK=leak)  # fmt: skip
    if leak:  # #119098: the region is never unmapped; stack_info.mapped is left as it was
        k.check = None  # the leak breaks the VA-conservation invariant by design
    k.run()
    addrs, vm = k.facts["addr"], k.facts["vm"]
    if leak:
        assert len(set(addrs)) == 4 and k.facts["after"] == addrs
        assert vm[0] - vm[1] == vm[1] - vm[2] == 5  # 3 stack pages + 2 guards per cycle
    else:
        assert len(set(addrs)) == 1 and k.facts["after"] == [None] * 4
        assert len(set(vm)) == 1


def test_abort_of_thread_running_on_other_cpu_goes_through_ipi() -> None:
    spin = (Op("repeat", n=50, body=(Op("touch", where="sp", offset=-8),)),)
    main = (Op("create", target="r", stack="stack", label="spin", prio=0, n=0),
            Op("sleep", n=0), Op("abort", target="r"), Op("record", target="r.state", label="st"))  # fmt: skip
    k = boot_kernel(X86_64_SMP, main, {"spin": spin}, (STACK,))
    k.run()
    r = k.thread("r")
    assert r.dead and k.facts["st"] == ["dead"]
    assert k.ipis["sched"] == 1 and k.faults == []
    assert k.cleanup.thread is not None  # halted as _current on its CPU -> deferred


def test_reuse_check_unmaps_the_pending_stack_before_remapping() -> None:
    main = (*spawn("t", "stack", "ret"), Op("record", target="pending_cleanup", label="p"),
            *spawn("t", "stack", "ret"), Op("record", target="vm_free_pages", label="vm"),
            *spawn("t", "stack", "ret"), Op("record", target="vm_free_pages", label="vm"))  # fmt: skip
    k = boot_kernel(X86_64_SMP, main, {"ret": ()}, (STACK,))
    k.run()
    assert k.facts["p"] == ["t"]
    assert k.facts["vm"][0] == k.facts["vm"][1]


def test_stack_space_get_is_einval_once_unmapped() -> None:
    k = boot_kernel(X86_64_SMP, spawn("t", "stack", "ret"), {"ret": ()}, (STACK,))
    assert k_thread_stack_space_get(k, k.current) > 0
    k.run()
    assert k_thread_stack_space_get(k, k.thread("t")) == -EINVAL


def test_without_shootdown_a_stale_tlb_entry_reaches_an_unmapped_page() -> None:
    # CPU 1 caches the mapping, CPU 0 unmaps it; without SIM_TLB_SHOOTDOWN, CPU 1 still
    # translates the page through its stale entry.
    main = (Op("k_mem_map", n=PAGE, target="m"), Op("create", target="r", stack="stack",
            label="touch", prio=0, n=0), Op("sleep", n=1), Op("k_mem_unmap", target="m"))  # fmt: skip
    for shootdown in (True, False):
        k = boot_kernel(X86_64_SMP, main, {"touch": (Op("write", target="m", offset=0), Op("sleep", n=5))},
                 (STACK,), SIM_TLB_SHOOTDOWN=shootdown)  # fmt: skip
        addr = None

        def watch(kk: Kernel) -> None:
            nonlocal addr
            if "m" in kk.mappings:
                addr = kk.mappings["m"].addr

        k.check = watch
        k.run()
        assert addr is not None
        stale = k.cpus[1].hw.tlb.lookup(addr)
        assert (stale is not None) == (not shootdown)


def test_spinlock_validation_names_the_function() -> None:
    lock = KSpinlock("l", 1)
    held: list[KSpinlock] = []
    lock.acquire(0, held)
    with pytest.raises(KernelAssert, match="k_spin_lock: Recursive spinlock l"):
        lock.acquire(0, held)
    with pytest.raises(KernelAssert, match="k_spin_unlock: Not my spinlock l"):
        lock.release(1, [])
    other = KSpinlock("before", 0)
    with pytest.raises(KernelAssert, match="lock order violated"):
        other.acquire(0, held)


def test_api_misuse_is_a_zephyr_assert() -> None:
    k = boot_kernel(X86_64_SMP, (), {}, (StackObject("kernel_only", 4096, False),))
    with pytest.raises(KernelAssert, match="k_thread_create: K_USER thread 'u' on kernel-only"):
        run(lifecycle.k_thread_create(k, k.add_thread(type(k.current)("u")),
                                      k.stacks["kernel_only"], thread_main, (), options=4))  # fmt: skip


def test_seeded_schedules_are_deterministic_and_differ() -> None:
    spin = (Op("push", n=64), Op("pop", n=64), Op("yield"), Op("push", n=64), Op("pop", n=64))
    main = tuple(Op("create", target=f"w{i}", stack=f"s{i}", label="spin", prio=0, n=0)
                 for i in range(3)) + tuple(Op("join", target=f"w{i}") for i in range(3))  # fmt: skip
    stacks = tuple(StackObject(f"s{i}", 4096, True) for i in range(3))

    def trace(seed: int) -> list[str]:
        k = boot_kernel(X86_64_SMP, main, {"spin": spin}, stacks)
        seen: list[str] = []
        orig = k.do

        def do(action: tuple[int, str]) -> None:
            c = k.cpus[action[0]]
            p = c.irq_pending if c.irq is not None else c.ctx.pending
            seen.append(f"{action} {p}")
            orig(action)

        k.do = do  # type: ignore[method-assign]
        k.run(seed=seed)
        return seen

    assert trace(7) == trace(7)
    assert trace(7) != trace(8)


def test_geometry_macros() -> None:
    geo = StackGeometry.from_config(X86_64_SMP)
    # Reference worked example: x86_64, USERSPACE, PRIVILEGED_STACK_SIZE 4096, S = 8192.
    assert geo.thread_stack_len(8192) == 12288 and geo.thread_reserved == 4096
    assert geo.kernel_stack_len(4096) == 8192  # + the reserved page
    legacy = StackGeometry.from_config({**X86_64_SMP, "THREAD_STACK_MEM_MAPPED": False})
    assert legacy.thread_reserved == 2 * PAGE  # in-object guard page + privilege stack


# -- hooks for a layer above the kernel (mmusim.runtime) ------------------------------------------


def test_a_resolved_page_fault_retries_the_access_from_where_the_op_began() -> None:
    # Kernel.mem_page_fault sits where z_x86_page_fault_handler calls k_mem_page_fault: a hook
    # that maps the missing page resolves the fault, and the write is made again, through it.
    hole = 0x400000 + 0x123000  # in the kernel's free virtual window: not mapped
    seen: list[tuple[int | None, int]] = []

    def commit_on_touch(k: Kernel, t: KThread, trap: Trap) -> Generator[Any, None, bool]:
        seen.append((trap.cr2, trap.error_code))
        pa = k.frames.alloc()
        assert pa is not None and trap.cr2 is not None
        k.pt.map(trap.cr2 & ~(PAGE - 1), pa, 0x3 | (1 << 63))  # P, RW, XD
        return True
        yield  # pragma: no cover

    body = (Op("write", addr=hole + 8), Op("record", target="t.state", label="after"))
    k = Kernel(dict(X86_64_SMP), stacks=(STACK,), main_body=spawn("t", "stack", "b"),
               bodies={"b": body})  # fmt: skip
    k.mem_page_fault = commit_on_touch
    k.run()
    assert seen == [(hole + 8, 0x2)]  # once: the retried write went through
    assert k.faults == [] and k.thread("t").exit_reason == "returned"
    leaf = k.pt.lookup(hole)
    assert leaf is not None
    frame = leaf[2] & 0x000F_FFFF_FFFF_F000
    assert k.mem.read(frame + 8, 8) == b"\x5a" * 8  # the FILL bytes the body writes


def test_an_unresolved_page_fault_goes_on_to_zephyrs_handler() -> None:
    seen: list[int | None] = []

    def decline(k: Kernel, t: KThread, trap: Trap) -> Generator[Any, None, bool]:
        seen.append(trap.cr2)
        return False
        yield  # pragma: no cover

    k = boot_kernel(X86_64_SMP, spawn("t", "stack", "b"),
                    {"b": (Op("touch", where="front_guard"),)}, (STACK,))  # fmt: skip
    k.mem_page_fault = decline
    k.run()
    assert [f["reason"] for f in k.faults] == [K_ERR_STACK_CHK_FAIL]
    assert seen == [k.faults[0]["cr2"]]


def test_an_extension_op_runs_in_the_body() -> None:
    def hello(k: Kernel, t: KThread, op: Op) -> Generator[Any, None, None]:
        yield Point(t.name, "hello")
        k.record("greeting", f"{op.arg('word')} from {t.name}")

    body = (Op("hello", args=(("word", "hi"),)),)
    k = boot_kernel(X86_64_SMP, spawn("t", "stack", "b"), {"b": body}, (STACK,))
    k.extension_ops["hello"] = hello
    k.run()
    assert k.facts["greeting"] == ["hi from t"]


def test_check_guards_remembers_its_answer_only_while_the_tables_are_unchanged() -> None:
    from mmusim.kernel.invariants import check_guards

    k = boot_kernel(X86_64_SMP, spawn("t", "stack", "b"), {"b": (Op("sleep", n=K_FOREVER),)},
                    (STACK,))  # fmt: skip
    k.run()
    assert check_guards(k) == [] and check_guards(k) == []  # the second from memory
    guard = k.thread("t").stack_info.mapped.addr - PAGE
    k.pt.map(guard, 0x1000, 0x3)  # a bug maps the front guard: the tables' bytes change
    assert check_guards(k) == [f"guards: t: guard page {guard:#x} is present"]
    k.pt.unmap(guard)
    assert check_guards(k) == []


def test_table_checks_remember_answers_only_for_the_same_tables_and_inputs() -> None:
    """``check_alias``, ``check_policy_guards`` and ``check_user_perms`` keep what they found by
    the tables' digest and their other inputs, in a memo every kernel shares: a changed PTE is
    seen at once, and another kernel with other tables does not get this one's answers."""
    from mmusim.kernel.invariants import check_alias, check_policy_guards, check_user_perms

    def booted() -> Kernel:
        k = boot_kernel(X86_64_SMP, spawn("t", "stack", "b"), {"b": (Op("sleep", n=K_FOREVER),)},
                        (STACK,))  # fmt: skip
        k.run()
        return k

    k = booted()
    t = k.thread("t")
    page, guard = t.stack_info.start, t.stack_info.mapped.addr - PAGE
    hit = k.pt.lookup(page)
    assert hit is not None
    frame = hit[2] & k.pt_frame_mask
    checks = (check_alias, check_policy_guards, check_user_perms)
    assert [c(k) for c in checks] == [[], [], []]
    k.pt.unmap(page)
    k.pt.map(page, 0x1000, 0x3)  # the stack page now maps another frame
    assert check_alias(k) == [f"alias: t: {page:#x} maps 0x1000"]
    k.pt.unmap(page)
    k.pt.map(page, frame, 0x7)  # its frame again, user-accessible
    assert check_alias(k) == []
    assert check_user_perms(k) == [f"user: t: page {page:#x} is user-accessible"]
    k.pt.map(guard, 0x1000, 0x3)  # the front guard mapped writable
    assert check_policy_guards(k) == [
        f"policy-guards: t: guard page {guard:#x} ({k.policy.name}) is mapped writable"
    ]
    assert [c(booted()) for c in checks] == [[], [], []]  # another kernel: its own answers


def test_check_all_answers_the_same_from_memory_as_afresh() -> None:
    """Along seeded runs of a mutant that breaks guards and a race, every step's ``check_all``
    equals ``check_all`` with the memo emptied first."""
    from mmusim.kernel import invariants
    from mmusim.mutants import mutant_config_lines
    from mmusim.scenario import load_scenario

    root = Path(__file__).resolve().parent.parent / "mmusim" / "scenarios"
    runs = [(root / "test_guard_page_front.toml", mutant_config_lines("guard-rw")),
            (root / "explore" / "race_reuse.toml", ())]  # fmt: skip
    compared = 0
    for path, extra in runs:
        for seed in range(6):
            k = load_scenario(path).with_config(extra, "mutant").boot()
            for _ in range(400):
                if not k.actions():
                    break
                k.do(random.Random(seed * 1000 + k.steps).choice(k.actions()))
                remembered = invariants.check_all(k)
                invariants._FOUND.clear()
                assert invariants.check_all(k) == remembered, (path.name, seed, k.steps)
                compared += 1
    assert compared > 1000


def test_frame_allocator_is_zephyrs_lifo_free_list() -> None:
    """``FrameAllocator`` keeps the never-used frames apart from the given-back ones; it must hand
    out what one LIFO list of every free frame (lowest on top after boot) would, in that order."""
    from mmusim.kernel.mm import FrameAllocator

    rng = random.Random(15)
    for _ in range(60):
        start, n = 0x10000, rng.randint(0, 10)
        fa = FrameAllocator(start, start + n * PAGE)
        ref = list(range(start + (n - 1) * PAGE, start - PAGE, -PAGE))  # pop() -> the lowest
        held: list[int] = []
        for _ in range(50):
            if held and rng.random() < 0.45:
                pa = held.pop(rng.randrange(len(held)))
                fa.free(pa)
                ref.append(pa)
            else:
                got = fa.alloc()
                assert got == (ref.pop() if ref else None)
                if got is not None:
                    held.append(got)
            assert fa.free_count() == len(ref)
            probes = range(start - PAGE, start + (n + 1) * PAGE, PAGE // 2)
            assert [fa.is_free(pa) for pa in probes] == [pa in ref for pa in probes]
            fa._check()
        for pa in [*ref[-1:], start + n * PAGE, start + 1]:  # free, past the end, unaligned
            with pytest.raises(KernelAssert, match="free_page_frame"):
                fa.free(pa)


@pytest.mark.parametrize(
    "cfg",
    [X86_64_SMP, IA32, {**IA32, "X86_PAE": False}, {**X86_64_SMP, "KERNEL_VM_OFFSET": 0x200000}],
    ids=["ia32e", "pae", "32", "ia32e-offset"],
)
def test_a_boot_that_copies_the_image_tables_boots_the_same_kernel(cfg: dict[str, Any]) -> None:
    """The second boot of a layout copies the kernel image's page tables from the first
    (``_IMAGE_TABLES``): every byte of memory and every table frame must be what mapping the
    image again gives."""
    from mmusim.kernel import boot as boot_module

    def memory(k: Kernel) -> dict[int, bytes]:
        return {pfn: k.mem.read(pfn << 12, PAGE) for pfn in sorted(k.mem.frames())}

    boot_module._IMAGE_TABLES.clear()
    mapped = boot_kernel(cfg)
    assert len(boot_module._IMAGE_TABLES) == 1
    copied = boot_kernel(cfg)
    assert memory(copied) == memory(mapped)
    assert copied.pt.table_frames == mapped.pt.table_frames
    copied.pt._check()
    assert copied.pt.lookup(copied.image_end_virt - PAGE) == mapped.pt.lookup(
        mapped.image_end_virt - PAGE
    )
    check_all(copied)


def test_restore_takes_only_the_tables_it_was_made_from() -> None:
    from mmusim.hw import MODE_IA32E, MODE_PAE, PhysMem
    from mmusim.hw import PageTables as Tables

    def frames(start: int) -> Any:
        n = iter(range(start, 1 << 30, PAGE))
        return lambda: next(n)

    src = Tables(PhysMem(), MODE_IA32E, frames(0x10000))
    src.map(0x40_0000, 0x9000, 0)
    image = src.snapshot()
    ok = Tables(PhysMem(), MODE_IA32E, frames(0x10000))
    ok.restore(image)
    assert ok.lookup(0x40_0000) == src.lookup(0x40_0000) and ok.table_frames == src.table_frames
    with pytest.raises(ValueError, match="not empty"):
        ok.restore(image)
    other = iter([0x10000, 0x30000, 0x31000, 0x32000])  # the root, then other frames
    with pytest.raises(ValueError, match="the allocator gave frame 0x30000, the image has 0x11000"):
        Tables(PhysMem(), MODE_IA32E, lambda: next(other)).restore(image)
    with pytest.raises(ValueError, match="an image of other tables"):
        Tables(PhysMem(), MODE_IA32E, frames(0x20000)).restore(image)  # another root
    with pytest.raises(ValueError, match="an image of other tables"):
        Tables(PhysMem(), MODE_PAE, frames(0x10000)).restore(image)
