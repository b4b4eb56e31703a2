"""Boot: RAM, the kernel image mapped (identity, or offset for qemu_x86_atom_virt), page tables,
the ``.noinit`` stack objects, the ISR stacks, an idle thread per CPU, and main.

Deviations (docs/kernel.md): the kernel image is a fixed synthetic layout (text, data, a pool of
page-table frames, ``.noinit``); page-table frames come from that pool, not from the free page
frames, as Zephyr x86's statically sized page-table pool does; kernel mappings are not global.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmusim.hw import MODES, ControlState, Cpu, PageTables, PhysMem, PteFlags
from mmusim.kernel.core import KernelAssert, run
from mmusim.kernel.geometry import PAGE, round_up
from mmusim.kernel.mm import FrameAllocator
from mmusim.kernel.thread import KThread, Op, StackObject, ThreadState
from mmusim.kernel.vmregion import VirtRegionAllocator

if TYPE_CHECKING:
    from mmusim.kernel.kernel import Kernel

_RW = int(PteFlags.RW)
_NX = int(PteFlags.NX)

TEXT_PAGES = 8
DATA_PAGES = 4
IDLE_PRIO = 15  # K_LOWEST_THREAD_PRIO on a default configuration
MAIN_PRIO = 0


def _mode_name(cfg: object) -> str:
    get = cfg.get  # type: ignore[attr-defined]
    if get("X86_64"):
        return "ia32e"
    return "pae" if get("X86_PAE") else "32"


def boot(k: Kernel, main_body: tuple[Op, ...]) -> None:
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
    for pa in range(sram_base + vm_offset, image_end, PAGE):
        flags = 0 if pa < data else _RW | nx
        k.pt.map(pa + k.virt_offset, pa, flags)
    k.image_end_virt = image_end + k.virt_offset
    k.frames = FrameAllocator(image_end, sram_base + sram_size)
    k.vm = VirtRegionAllocator(
        vm_base, vm_size, k.image_end_virt, reserved_top=PAGE if cfg.get("DEMAND_PAGING") else 0,
        mutant_double_alloc=k.mutant_va_double_alloc,
    )  # fmt: skip
    k.vm_reserved_pages = k.vm.allocated_pages
    ctl = ControlState.for_mode(mode.name, cr3=k.pt.root, wp=True, nxe=mode.has_nx)

    # CPUs, idle threads, main.
    from mmusim.kernel import sched, threads
    from mmusim.kernel.kernel import PerCpu

    k.cpus = []
    for i in range(k.ncpus):
        idle = KThread(f"idle {i:02d}", prio=IDLE_PRIO, is_idle=True)
        k.add_thread(idle)
        c = PerCpu(i, Cpu(k.mem, ctl, cpu_id=i), idle, idle, idle)
        c.isr_stack = isr_stacks[i].addr + isr_stacks[i].obj_len
        k.cpus.append(c)
    k._cpu = 0
    for i, c in enumerate(k.cpus):
        run(threads.setup_new_thread(k, c.idle, idle_stacks[i], (), 0, IDLE_PRIO))
        c.idle.state = ThreadState(0)
        c.idle.gen = sched.idle_main(k, c.idle)
        c.idle.pending = next(c.idle.gen)
        c.idle.cpu = i
    main = KThread("main", prio=MAIN_PRIO)
    k.add_thread(main)
    run(threads.setup_new_thread(k, main, main_stack, main_body, 0, MAIN_PRIO))
    from mmusim.kernel import body

    main.gen = body.thread_main(k, main)
    main.pending = next(main.gen)
    main.state = ThreadState(0)
    main.cpu = 0
    k.cpus[0].current = k.cpus[0].ctx = main  # main runs first on CPU 0 (z_cstart switches to it)
    for c in k.cpus:
        c.running_on = c.current
        c.hw.sp = c.current.sp
        c.current.switch_handle = None  # "Active threads must have a null here" (kswap.h)
