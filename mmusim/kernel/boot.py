"""Boot, and ``Kernel``: an ``Engine`` (``mmusim.kernel.engine``) booted from a configuration.

Boot lays out physical RAM and the kernel image, builds the kernel page tables with the hardware
layer's ``PageTables``, places the statically defined stack objects in ``.noinit``, creates one idle
thread per CPU and the main thread, and starts the CPUs. The kernel's virtual layout (the
identity-mapped case; with ``qemu_x86_atom_virt`` virtual = physical + offset)::

    KERNEL_VM_BASE                                                     KERNEL_VM_BASE + KERNEL_VM_SIZE
    +-------+------+--------+-------------+---------------------+ ... +----------------------------+
    | text  | data | tables | .noinit     |  free virtual space  ... | mappings: stacks, k_mem_map |
    | RX    | RW   | RW     | stack objs, |  (K_MEM_VM_FREE_START)   | allocated top-down, each    |
    |       |      |        | ISR stacks  |                          | guard | region | guard      |
    +-------+------+--------+-------------+---------------------+ ... +----------------------------+

Deviations (docs/kernel.md): the kernel image is a fixed synthetic layout (text, data, a pool of
page-table frames, ``.noinit``); page-table frames come from that pool, not from the free page
frames, as Zephyr x86's statically sized page-table pool does; kernel mappings are not global.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mmusim.hw import MODES, ControlState, Cpu, PageTables, PhysMem, PteFlags, TablesImage
from mmusim.kernel import domain, fault, sched
from mmusim.kernel.body import thread_main
from mmusim.kernel.engine import Engine, PerCpu
from mmusim.kernel.facts import fact
from mmusim.kernel.geometry import PAGE, ConfigValues, round_up
from mmusim.kernel.lifecycle import setup_new_thread
from mmusim.kernel.mm import FrameAllocator
from mmusim.kernel.policy import StackPolicy, resolve_policy
from mmusim.kernel.routines import KernelAssert, run
from mmusim.kernel.thread import KThread, Op, StackObject, ThreadState
from mmusim.kernel.vmregion import VirtRegionAllocator

_RW = int(PteFlags.RW)
_NX = int(PteFlags.NX)

# DEVIATION(kernel-image-layout): a synthetic kernel image (text, data, a page-table pool,
# .noinit); page-table frames from that pool; kernel mappings are not global.
TEXT_PAGES = 8
DATA_PAGES = 4
IDLE_PRIO = 15  # K_LOWEST_THREAD_PRIO on a default configuration
MAIN_PRIO = 0


def _mode_name(cfg: object) -> str:
    get = cfg.get  # type: ignore[attr-defined]
    if get("X86_64"):
        return "ia32e"
    return "pae" if get("X86_PAE") else "32"


class Kernel(Engine):
    """A booted kernel on a simulated SMP x86 machine: ``Kernel(cfg, stacks=..., main_body=...)``.

    ``cfg`` is a resolved configuration (``mmusim.kconfig.load_config(...).values``); ``stacks`` the
    statically defined stack objects; ``main_body`` what the main thread runs and ``bodies`` the
    bodies other threads are created with (by name); ``check(kernel)`` runs after every step (e.g.
    ``invariants.assert_invariants``); ``policy`` a stack policy (instance or class) instead of the
    one Kconfig selects (``mmusim.kernel.policy``); ``partitions`` the memory partitions a test
    defines (``K_MEM_PARTITION_DEFINE``), for its ``mem_domain_*`` ops (``mmusim.kernel.domain``).
    """

    def __init__(
        self,
        cfg: ConfigValues,
        *,
        stacks: tuple[StackObject, ...] = (),
        main_body: tuple[Op, ...] = (),
        bodies: Mapping[str, tuple[Op, ...]] | None = None,
        check: Callable[[Kernel], None] | None = None,
        policy: StackPolicy | type[StackPolicy] | None = None,
        partitions: tuple[domain.KMemPartition, ...] = (),
    ) -> None:
        super().__init__(
            cfg, policy=resolve_policy(cfg, policy), stacks=stacks, bodies=bodies, check=check
        )
        boot(self, main_body, partitions)

    def fact(self, what: str) -> Any:
        """A named fact of the current state (``mmusim.kernel.facts``)."""
        return fact(self, what)


# The page tables of a mapped kernel image, by everything that decides them: a pure function of
# its key, so a boot copies them (``PageTables.restore``) instead of mapping the image again.
_IMAGE_TABLES: dict[tuple[Any, ...], TablesImage] = {}


def boot(
    k: Kernel, main_body: tuple[Op, ...], partitions: tuple[domain.KMemPartition, ...] = ()
) -> None:
    """Lay out RAM and the kernel image, build the page tables, start the CPUs with their idle
    threads, and make ``main`` (running ``main_body``) current on CPU 0."""
    cfg = k.cfg
    sram_base = int(cfg.get("SRAM_BASE_ADDRESS", 0x100000))
    sram_size = int(cfg.get("SRAM_SIZE", 4096)) * 1024  # Zephyr's CONFIG_SRAM_SIZE is in KiB
    vm_base = int(cfg.get("KERNEL_VM_BASE", sram_base))
    vm_size = int(cfg.get("KERNEL_VM_SIZE", 0x800000))
    vm_offset = int(cfg.get("KERNEL_VM_OFFSET", 0) or 0)
    if int(cfg.get("MMU_PAGE_SIZE", PAGE)) != PAGE:
        raise KernelAssert("boot: only CONFIG_MMU_PAGE_SIZE=0x1000 is modelled")
    k.sram_base, k.sram_size, k.vm_base, k.vm_size = sram_base, sram_size, vm_base, vm_size
    k.virt_offset = vm_base + vm_offset - sram_base  # kernel virtual = physical + virt_offset
    mode = MODES[_mode_name(cfg)]
    k.mode = mode
    k.mem = PhysMem(sram_base + sram_size)
    k.word = 8 if mode.name == "ia32e" else 4
    k.pt_frame_mask = 0xFFFF_F000 if mode.name == "32" else ((1 << 40) - 1) & ~0xFFF

    # The kernel image: text, data, page-table pool, .noinit (stack objects).
    geo = k.geometry
    text = sram_base + vm_offset
    data = text + TEXT_PAGES * PAGE
    large = 1 << 22 if mode.name == "32" else 1 << 21
    table_pages = 8 + -(-(vm_size + sram_size) // large) * 2
    tables = data + DATA_PAGES * PAGE
    noinit = tables + table_pages * PAGE
    cursor = noinit

    def place(obj: StackObject) -> None:
        nonlocal cursor
        obj.obj_len = geo.obj_len(obj.size, obj.user_capable)
        cursor = round_up(cursor, geo.obj_align(obj.user_capable))
        obj.addr = cursor + k.virt_offset  # its kernel virtual address
        cursor += obj.obj_len

    isr_size = int(cfg.get("ISR_STACK_SIZE", 2048))
    isr_stacks = [StackObject(f"z_interrupt_stacks[{i}]", isr_size, False) for i in range(k.ncpus)]
    idle_size = int(cfg.get("IDLE_STACK_SIZE", 1024))
    idle_stacks = [StackObject(f"z_idle_stacks[{i}]", idle_size, False) for i in range(k.ncpus)]
    main_stack = StackObject("z_main_stack", int(cfg.get("MAIN_STACK_SIZE", 4096)), False)
    for obj in (*isr_stacks, *idle_stacks, main_stack, *k.stacks.values()):
        place(obj)
    k.boot_stacks = {s.name: s for s in (*isr_stacks, *idle_stacks, main_stack)}
    image_end = round_up(cursor, PAGE)
    if image_end > sram_base + sram_size:
        raise KernelAssert(
            f"boot: the kernel image ({image_end - sram_base:#x} bytes) does not fit in SRAM "
            f"({sram_size:#x} bytes)"
        )
    if image_end + k.virt_offset > vm_base + vm_size:
        raise KernelAssert(
            f"boot: the kernel image ({image_end - sram_base:#x} bytes) does not fit in the "
            f"kernel's virtual window (KERNEL_VM_SIZE {vm_size:#x} bytes)"
        )
    k.image = {
        "text": (text, data),
        "data": (data, tables),
        "page tables": (tables, noinit),
        ".noinit": (noinit, image_end),
    }

    # Page tables, from the pool.
    pool = list(range(tables, noinit, PAGE))
    pool.reverse()

    def table_frame() -> int:
        if not pool:
            raise KernelAssert("boot: page-table pool exhausted")
        return pool.pop()

    k.pt = PageTables(k.mem, mode, table_frame, pse=mode.name == "32", nxe=mode.has_nx)
    nx = _NX if mode.has_nx else 0
    image = (sram_base + vm_offset, data, 0), (data, image_end, _RW | nx)  # text RO, the rest RW
    key = (mode.name, k.virt_offset, tables, noinit, image)  # all the mapping below depends on
    done = _IMAGE_TABLES.get(key)
    if done is not None:  # the same image mapped before (the explorer boots thousands of times)
        k.pt.restore(done)
    else:
        for lo, hi, flags in image:
            k.pt.map_range(lo + k.virt_offset, lo, hi - lo, flags)
        if len(_IMAGE_TABLES) >= 64:
            _IMAGE_TABLES.clear()
        _IMAGE_TABLES[key] = k.pt.snapshot()
    k.image_end_virt = image_end + k.virt_offset
    k.frames = FrameAllocator(image_end, sram_base + sram_size)
    k.vm = VirtRegionAllocator(
        vm_base, vm_size, k.image_end_virt, reserved_top=PAGE if cfg.get("DEMAND_PAGING") else 0,
        mutant_double_alloc=k.mutant_va_double_alloc,
    )  # fmt: skip
    k.vm_reserved_pages = k.vm.allocated_pages
    ctl = ControlState.for_mode(mode.name, cr3=k.pt.root, wp=True, nxe=mode.has_nx)

    # Memory domains (USERSPACE): k_mem_domain_default, on the kernel's tables.
    domain.init_mem_domain_module(k, partitions)
    k.update_page_tables = domain.z_x86_swap_update_page_tables

    # CPUs, idle threads, main.
    k.ipi_handler = sched.z_x86_ipi  # arch_smp_init(): x86_irq_funcs
    k.page_fault_handler = fault.page_fault  # the IDT's #PF vector
    k.cpus = []
    for i in range(k.ncpus):
        idle = KThread(f"idle {i:02d}", prio=IDLE_PRIO, is_idle=True)
        k.add_thread(idle)
        c = PerCpu(i, Cpu(k.mem, ctl, cpu_id=i), idle, idle, idle)
        c.isr_stack = isr_stacks[i].addr + isr_stacks[i].obj_len
        k.cpus.append(c)
    k._cpu = 0
    # The order of kernel/init.c: prepare_multithreading() sets up main first, then
    # z_init_cpu(0) CPU 0's idle thread; the other CPUs' idle threads come from z_smp_init()
    # (start_cpu -> z_init_cpu(i)), which main's bg_thread_main runs before main(). Mapped
    # stacks are allocated top-down in this order: main's alias is the highest.
    main = KThread("main", prio=MAIN_PRIO)
    k.add_thread(main)
    run(setup_new_thread(k, main, main_stack, main_body, 0, MAIN_PRIO))
    for i, c in enumerate(k.cpus):
        run(setup_new_thread(k, c.idle, idle_stacks[i], (), 0, IDLE_PRIO))
        c.idle.state = ThreadState(0)
        c.idle.gen = sched.idle_main(k, c.idle)
        c.idle.pending = next(c.idle.gen)
        c.idle.cpu = i
    # DEVIATION(no-system-workqueue): Zephyr's POST_KERNEL k_sys_work_q_init (kernel/system_work_q.c) also starts the system work queue thread (CONFIG_SYSTEM_WORKQUEUE_STACK_SIZE, mapped between idle 0 and idle 1); mmusim has no work queues and creates no such thread
    main.gen = thread_main(k, main)
    main.pending = next(main.gen)
    main.state = ThreadState(0)
    main.cpu = 0
    k.cpus[0].current = k.cpus[0].ctx = main  # main runs first on CPU 0 (z_cstart switches to it)
    # Mapping the boot threads' stacks unmapped their guard pages, and each arch_mem_unmap
    # broadcast a TLB shootdown: in Zephyr the other CPUs are not started yet (z_smp_init's
    # start_cpu creates a CPU's idle thread before arch_cpu_start), so no one takes those IPIs.
    for c in k.cpus:
        c.pending_ipis.clear()
        c.shootdowns_pending = 0
    k.ipis["tlb"] = 0
    for c in k.cpus:
        c.running_on = c.current
        c.hw.sp = c.current.sp
        c.current.switch_handle = None  # "Active threads must have a null here" (kswap.h)
