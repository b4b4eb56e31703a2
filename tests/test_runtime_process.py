"""A process on the kernel (mmusim.runtime.process): demand faults through the kernel's page
tables, growsdown stacks, SIGSEGV delivery on the alternate stack or not, siglongjmp, handler
inheritance without the alternate stack, coroutines and RethinkDB's attribution."""

from __future__ import annotations

from typing import Any

import pytest

from helpers import X86_64_SMP, boot_kernel
from mmusim.kernel import K_FOREVER, Kernel, Op, StackObject
from mmusim.runtime import HAIKU, LINUX, NANOS, PAGE, MmFlavour, Prot
from mmusim.runtime.process import USER_HI, Process
from mmusim.runtime.sigstate import MINSIGSTKSZ

STACK = StackObject("stack", 4096, True)


def op(kind: str, do: tuple[Op, ...] = (), **args: Any) -> Op:
    return Op(kind, body=do, args=args)


def run(
    main: tuple[Op, ...], flavour: MmFlavour = LINUX, **bodies: tuple[Op, ...]
) -> tuple[Kernel, Process]:
    k = boot_kernel(X86_64_SMP, main, bodies, (STACK,))
    p = Process.attach(k, flavour=flavour)
    k.run()
    p._check()
    return k, p


def fact(k: Kernel, name: str) -> Any:
    return k.facts[name][-1]


def test_pages_are_committed_on_touch_through_the_kernels_page_tables() -> None:
    main = (
        op("mmap", name="s", bytes=8 * PAGE, prot=("read", "write")),
        op("on_stack", (Op("push", n=3 * PAGE),), mapping="s"),
    )
    k, p = run(main)
    assert k.faults == [] and "killed" not in k.facts
    (area,) = list(p.space)
    assert len(area.committed) == 3  # the three pages pushed into, nothing else
    top = fact(k, "s") + 8 * PAGE
    for page in range(top - 3 * PAGE, top, PAGE):
        leaf = k.pt.lookup(page)
        assert leaf is not None and leaf[2] & 0x4  # present, a user page
    assert k.pt.lookup(top - 4 * PAGE) is None
    assert p.space.costs()["pte_writes"] == 3


def test_a_growsdown_stack_grows_until_the_gap_then_sigsegv_kills() -> None:
    # nanos' test: a growsdown mapping above a lower mapping, with the 256-page gap between.
    gap = 256 * PAGE
    main = (
        op("mmap", name="low", bytes=PAGE, prot=("read", "write"), addr=USER_HI - 64 * 1024 * 1024),
        op("mmap", name="stk", bytes=PAGE, prot=("read", "write"), flags=("growsdown",),
           addr=USER_HI - 64 * 1024 * 1024 + PAGE + gap + 8 * PAGE),
        op("on_stack", (Op("repeat", n=12, body=(Op("push", n=PAGE),)),), mapping="stk"),
    )  # fmt: skip
    k, p = run(main, NANOS)
    killed = fact(k, "killed")
    assert "no handler" in killed and "gap" in killed, killed
    assert fact(k, "sigsegv.si_code") == "SEGV_MAPERR"
    # it grew by 8 pages (to the gap's edge) before the touch of the gap
    stk = p.space.find(fact(k, "stk"))
    assert stk is not None and stk.start == fact(k, "low") + PAGE + gap
    assert k.thread("main").exit_reason == "killed by SIGSEGV"


HANDLER = (op("siglongjmp"),)


def overflow_with_handler(*, altstack: bool, onstack: bool = True) -> tuple[Op, ...]:
    setup = [
        op("sigaction", handler="h", onstack=onstack),
        op("mmap", name="s", bytes=4 * PAGE, prot=("read", "write")),
        op("mprotect", mapping="s", bytes=PAGE, prot=()),  # a guard page at the bottom
    ]
    if altstack:
        setup += [
            op("mmap", name="alt", bytes=MINSIGSTKSZ + 4096, prot=("read", "write")),
            op("sigaltstack", mapping="alt"),
        ]
    jump = op(
        "sigsetjmp",
        (op("on_stack", (Op("push", n=4 * PAGE),), mapping="s"),),
        on_jump=(Op("record", target="main.state", label="after"),),
    )
    return (*setup, jump)


def test_sigsegv_on_the_alternate_stack_and_siglongjmp_recovers() -> None:
    k, p = run(overflow_with_handler(altstack=True), h=HANDLER)
    assert "killed" not in k.facts
    assert fact(k, "sigsegv.handler") == "h"
    assert fact(k, "sigsegv.stack") == "alternate"
    assert fact(k, "sigsegv.si_code") == "SEGV_ACCERR"  # the PROT_NONE guard page
    guard = fact(k, "s")
    assert guard <= fact(k, "sigsegv.si_addr") < guard + PAGE
    assert "after" in k.facts  # siglongjmp came back to sigsetjmp, on the thread's own stack
    assert k.thread("main").exit_reason == "returned"
    assert p.thread(k.thread("main")).in_handler == 0  # the mask restored by siglongjmp


def test_without_an_alternate_stack_the_frame_cannot_be_written() -> None:
    k, _ = run(overflow_with_handler(altstack=False), h=HANDLER)
    killed = fact(k, "killed")
    assert "its signal frame could not be written" in killed and "force_sigsegv" in killed
    assert "sigsegv.handler" not in k.facts  # the handler never ran
    assert k.thread("main").exit_reason == "killed by SIGSEGV"


def test_a_new_thread_inherits_the_handler_but_not_the_alternate_stack() -> None:
    # RethinkDB's finding: handlers are per process, the alternate stack per thread.
    main = (
        *overflow_with_handler(altstack=True)[:5],  # sigaction, s, guard, alt, sigaltstack
        Op("create", target="t", stack="stack", label="worker", n=K_FOREVER, prio=-1),
        Op("start", target="t"),
        Op("join", target="t"),
    )
    worker = (op("sigsetjmp", (op("on_stack", (Op("push", n=4 * PAGE),), mapping="s"),)),)
    k, p = run(main, h=HANDLER, worker=worker)
    assert p.sigactions and p.threads["main"].altstack is not None
    assert p.thread(k.thread("t")).altstack is None
    assert "could not be written" in fact(k, "killed")
    assert k.thread("t").exit_reason == "killed by SIGSEGV"
    assert k.thread("main").exit_reason == "returned"


def test_a_fault_inside_the_handler_kills() -> None:
    # Without SA_ONSTACK the handler runs on the interrupted stack. A touch far below SP hits the
    # guard, the frame fits above it, and the handler's own pushes reach the guard again, with
    # SIGSEGV blocked.
    main = (
        op("sigaction", handler="h", onstack=False),
        op("mmap", name="s", bytes=8 * PAGE, prot=("read", "write")),
        op("mprotect", mapping="s", bytes=PAGE, prot=()),
        op("on_stack", (Op("push", n=2 * PAGE), Op("touch", where="sp", offset=-6 * PAGE)),
           mapping="s"),
    )  # fmt: skip
    k, _ = run(main, h=(Op("push", n=6 * PAGE), op("siglongjmp")))
    assert fact(k, "sigsegv.handler") == "h" and fact(k, "sigsegv.stack") == "same"
    assert "inside its own handler (SIGSEGV is blocked there)" in fact(k, "killed")


def test_a_coroutine_overflow_is_attributed_to_the_coroutine() -> None:
    # RethinkDB: the lowest page of each coroutine stack PROT_NONE; the handler (on the
    # alternate stack) asks whether si_addr is the current coroutine's guard.
    main = (
        op("sigaction", handler="h", onstack=True),
        op("mmap", name="alt", bytes=MINSIGSTKSZ + 4096, prot=("read", "write")),
        op("sigaltstack", mapping="alt"),
        op("mmap", name="c1", bytes=4 * PAGE, prot=("read", "write")),
        op("mprotect", mapping="c1", bytes=PAGE, prot=()),
        op("mmap", name="c2", bytes=4 * PAGE, prot=("read", "write")),
        op("mprotect", mapping="c2", bytes=PAGE, prot=()),
        op("coro_create", name="quiet", mapping="c1", guard=1, body="small"),
        op("coro_create", name="deep", mapping="c2", guard=1, body="big"),
        op("coro_switch", name="quiet"),
        op("coro_switch", name="deep"),
    )
    handler = (op("classify_fault"), Op("sleep", n=K_FOREVER))  # RethinkDB's crash(): no return
    k, p = run(main, h=handler, small=(Op("push", n=64), op("coro_yield")),
               big=(Op("push", n=4 * PAGE),))  # fmt: skip
    assert fact(k, "report") == "Callstack overflow from a coroutine initialized on CPU 0"
    assert fact(k, "report.coroutine") == "deep"
    assert not p.coroutines["quiet"].done  # it yielded back, and was never resumed


@pytest.mark.parametrize("flavour", [LINUX, NANOS, HAIKU])
def test_every_flavour_commits_on_touch(flavour: MmFlavour) -> None:
    main = (
        op("mmap", name="s", bytes=4 * PAGE, prot=("read", "write")),
        op("on_stack", (Op("push", n=PAGE + 8),), mapping="s"),
    )
    k, p = run(main, flavour)
    assert k.faults == [] and p.space.costs()["committed_pages"] == 2


def test_the_process_invariants_run_with_the_kernels() -> None:
    from mmusim.kernel import check_all

    main = (
        op("mmap", name="s", bytes=4 * PAGE, prot=("read", "write")),
        op("on_stack", (Op("push", n=8),), mapping="s"),
    )
    k, p = run(main)
    assert check_all(k) == []
    page = fact(k, "s") + 3 * PAGE  # committed by the push: now its PTE goes behind its back
    k.pt.unmap(page)
    for c in k.cpus:
        c.hw.tlb.invlpg(page)  # (else the kernel's own "tlb" check sees it first)
    assert check_all(k) == []  # checked again only when the address space changes (for speed)
    p.space.mmap(PAGE, Prot.READ)  # any change
    problems = check_all(k)
    assert problems and problems[0].startswith("runtime: PTE of "), problems


def test_the_explorers_fingerprint_sees_the_process() -> None:
    from mmusim.explore.model import Model

    def fingerprint(onstack: bool) -> bytes:
        k, _ = run((op("sigaction", handler="h", onstack=onstack),), h=())
        return Model.fingerprint(k)

    assert fingerprint(True) == fingerprint(True)
    assert fingerprint(True) != fingerprint(False)  # only the process's sigaction differs


def test_an_alternate_stack_that_is_itself_a_growsdown_mapping_works() -> None:
    # nanos / workerd: KJ maps its 64 KiB alternate signal stack MAP_GROWSDOWN; sigaltstack on it
    # must work, and the signal frame is written into it (its top page committed on demand).
    main = overflow_with_handler(altstack=False)
    main = (
        *main[:3],
        op("mmap", name="alt", bytes=16 * PAGE, prot=("read", "write"), flags=("growsdown",)),
        op("sigaltstack", mapping="alt"),
        main[3],
    )
    k, p = run(main, NANOS, h=HANDLER)
    assert "killed" not in k.facts and "errno" not in k.facts
    assert fact(k, "sigsegv.stack") == "alternate" and "after" in k.facts
    alt = p.space.find(fact(k, "alt") + 16 * PAGE - 1)
    assert alt is not None and alt.growsdown and len(alt.committed) == 1  # the frame's page


@pytest.mark.parametrize("board", ["qemu_x86", "qemu_x86_64"])
def test_a_process_works_on_every_paging_mode_of_the_boards(board: str) -> None:
    # PAE (qemu_x86): the CPU walks with the PDPT entries it loaded at the last CR3 write, so
    # the window's page directory must exist before (KernelPager preallocates it, as Linux's
    # PAE pgd_alloc does) -- a regression test: made later, every touch faulted for ever.
    from mmusim.kconfig import load_config

    cfg = load_config(board).values
    main = (
        op("mmap", name="s", bytes=4 * PAGE, prot=("read", "write")),
        op("on_stack", (Op("push", n=2 * PAGE),), mapping="s"),
    )
    k = Kernel(cfg, stacks=(STACK,), main_body=main, bodies={})
    p = Process.attach(k, flavour=LINUX)
    k.run(max_steps=20_000)
    p._check()
    assert k.faults == [] and "killed" not in k.facts
    assert len(next(iter(p.space)).committed) == 2
