"""What compilers put at the entry of an x86 function to protect its stack: pure arithmetic on
addresses, shared by the kernel (thread bodies' ``call`` op) and the runtime (Go's stacks).

Three kinds of prologue (``PROLOGUES``), as three compiler settings build them:

``unprobed``  ``sub rsp, frame``: the frame is claimed in one step, whatever its size. A frame
              bigger than the guard below the stack jumps it (the stack clash, Qualys 2017).
``probed``    GCC/Clang ``-fstack-clash-protection``: a store every ``PROBE_INTERVAL`` bytes
              while the frame is claimed (GCC ``params.opt``: ``stack-clash-protection-probe-
              interval``, default 2^12), so any guard of at least one page is touched.
``checked``   Go's split-stack check (``cmd/internal/obj/x86/obj6.go``, ``stacksplit``): before
              the frame is claimed, SP minus the frame is compared with ``g.stackguard0`` and
              the function calls ``runtime.morestack`` when it is at or below it. No guard page
              is involved.

The checked prologue's constants are Go's (``src/internal/abi/stack.go``, linux/amd64).
"""

from __future__ import annotations

__all__ = [
    "PROBE_INTERVAL",
    "PROLOGUES",
    "STACK_BIG",
    "STACK_GUARD",
    "STACK_NOSPLIT",
    "STACK_SMALL",
    "checked_prologue_fails",
    "probe_addresses",
]

PROLOGUES = ("unprobed", "probed", "checked")
PROBE_INTERVAL = 4096  # GCC's default probe interval, 2**12 (params.opt)
STACK_SMALL = 128  # abi.StackSmall: a frame this small may use the guard's slack unchecked
STACK_BIG = 4096  # abi.StackBig: above it, the comparison is arranged not to wrap around
STACK_NOSPLIT = 800  # abi.StackNosplitBase: room NOSPLIT chains may use below the guard
STACK_GUARD = STACK_NOSPLIT + 0 + STACK_SMALL  # + StackSystem (0 on Linux) = 928


def checked_prologue_fails(sp: int, frame: int, stackguard0: int) -> bool:
    """Does Go's prologue call ``morestack``? ``sp`` is the stack pointer on entry (the return
    address pushed), ``frame`` the bytes the function claims. ``stacksplit``'s three tiers:
    ``frame <= StackSmall``: ``CMPQ SP, stackguard0; JLS`` (SP at or below the guard);
    ``frame <= StackBig``: ``LEAQ -(frame-StackSmall)(SP), R; CMPQ R, stackguard0; JLS``;
    larger: the same comparison made so that it cannot wrap below zero (``SUBQ`` with ``JCS``
    to morestack on a borrow). All three are ``sp - max(0, frame - StackSmall) <= stackguard0``
    on unbounded integers: after the check passes, at least ``StackNosplit`` bytes stay free
    below the frame."""
    if frame <= STACK_SMALL:
        return sp <= stackguard0
    if frame <= STACK_BIG:
        return sp - (frame - STACK_SMALL) <= stackguard0
    # The huge-frame tier: a borrow (frame - StackSmall > sp) means "certainly too big".
    return frame - STACK_SMALL > sp or sp - (frame - STACK_SMALL) <= stackguard0


def probe_addresses(top: int, frame: int, interval: int = PROBE_INTERVAL) -> list[int]:
    """The stores a probed prologue makes while claiming ``frame`` bytes below ``top``: one every
    ``interval`` bytes, from the top down, while more than ``interval`` bytes remain (the last
    step, smaller than a probe interval, is the frame itself)."""
    out = []
    sp = top
    while sp - interval > top - frame:
        sp -= interval
        out.append(sp)
    return out
