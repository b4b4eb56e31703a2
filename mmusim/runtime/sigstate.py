"""The per-process and per-thread signal and coroutine state of ``mmusim.runtime.process``, and
the constants of Linux x86 signal delivery it uses (``arch/x86/kernel/signal.c``, uapi
``asm-generic/signal-defs.h``, ``asm/signal.h``)."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import attrs

from mmusim.kernel import Op

__all__ = [
    "CORO_YIELD",
    "FRAME_FILL",
    "MINSIGSTKSZ",
    "RED_ZONE",
    "SA_ONSTACK",
    "SA_SIGINFO",
    "SIGFRAME_BYTES",
    "AltStack",
    "Coroutine",
    "JmpBuf",
    "SigAction",
    "SigLongJmp",
    "ThreadRt",
]

SA_ONSTACK = 0x0800_0000  # Linux uapi asm-generic/signal-defs.h
SA_SIGINFO = 0x0000_0004
MINSIGSTKSZ = 2048  # x86 uapi asm/signal.h (glibc bits/sigstack.h agrees)
RED_ZONE = 128  # x86_64 System V ABI: get_sigframe skips it below the interrupted RSP
# DEVIATION(sigframe-size): a signal frame is a fixed 1 KiB (struct rt_sigframe with siginfo and
# ucontext, about 440 bytes on x86_64, plus the FPU/xstate area, whose size depends on the CPU).
SIGFRAME_BYTES = 1024
FRAME_FILL = 0x5F  # what a signal frame's bytes are: recognisable in a memory dump


@attrs.define
class SigAction:
    """``struct sigaction`` of one signal: the handler is a body (ops) of the scenario."""

    handler: str
    flags: int = SA_SIGINFO

    @property
    def onstack(self) -> bool:
        return bool(self.flags & SA_ONSTACK)


@attrs.define
class AltStack:
    """A thread's ``stack_t`` from ``sigaltstack``: ``[sp, sp + size)``."""

    sp: int
    size: int

    def holds(self, sp: int) -> bool:
        """Is a thread whose stack pointer is ``sp`` on this stack? Linux ``on_sig_stack``
        (``include/linux/sched/signal.h``, stacks growing down): ``sp > ss_sp && sp - ss_sp <=
        ss_size`` -- the top counts (an empty alternate stack in use), the base does not (a
        stack just below it, not yet pushed to, is not on it)."""
        return self.sp < sp <= self.sp + self.size


@attrs.define(eq=False)
class Coroutine:
    """A coroutine: a body run on its own stack ``[lo, hi)`` (``guard``: the page below ``lo`` a
    guard-page strategy protects), created on CPU ``cpu`` (RethinkDB reports it)."""

    name: str
    body: tuple[Op, ...]
    lo: int
    hi: int
    guard: tuple[int, int] | None
    cpu: int
    sp: int = 0
    gen: Generator[Any, Any, Any] | None = None
    done: bool = False


@attrs.define
class ThreadRt:
    """What the process keeps per thread: its alternate signal stack, how deep in a SIGSEGV
    handler it is, its sigsetjmp buffers (innermost last) and its current coroutine."""

    altstack: AltStack | None = None
    home_sp: int | None = None  # the stack pointer on the thread's own stack, when it left it
    stack: tuple[int, int] | None = None  # [lo, hi) of the on_stack mapping it runs on, if any
    g: Any = None  # the goroutine (mmusim.runtime.gostack.G) it runs, if any
    in_handler: int = 0
    jmpbufs: list[JmpBuf] = attrs.Factory(list)
    coroutine: Coroutine | None = None


@attrs.define(eq=False)
class JmpBuf:
    """``sigjmp_buf``: the stack pointer and handler depth at ``sigsetjmp``."""

    sp: int
    in_handler: int
    coroutine: Coroutine | None


class SigLongJmp(Exception):
    """``siglongjmp(env, 1)``: unwinds the body's routines to the op that called ``sigsetjmp``."""

    def __init__(self, env: JmpBuf) -> None:
        super().__init__("siglongjmp")
        self.env = env


class _CoroYield:
    def __repr__(self) -> str:
        return "CORO_YIELD"


CORO_YIELD = _CoroYield()  # what a coroutine's routine yields to hand the CPU back to its caller
