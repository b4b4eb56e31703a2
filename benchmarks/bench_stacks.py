"""Runtime stack policies: create+destroy cycles per second at 10 and at 10,000 live stacks, against
the host's own kernel doing the same calls, and each policy's per-stack costs (``stack_costs``).

A cycle is what a thread library does for one short-lived thread or coroutine: create the stack
(the policy's calls), push once (the top page is faulted in), destroy it. mmusim runs it on an
``AddressSpace`` of the policy's flavour over ``HwPager`` page tables with two CPUs' TLBs; the peer
is this machine's Linux kernel, the same layout made with the same calls through ``ctypes``
(``mmap``, ``mprotect``, ``madvise(MADV_GUARD_INSTALL)``, ``munmap``; the push a ``memset`` of the
top word), measured in the same run with the same number of live stacks of the same layout. The
Haiku layouts run on Linux with Linux's semantics (a ``MAP_FIXED`` mapping over a reservation,
an ``mprotect`` of part of one): the peer is the calls' cost, not Haiku's.

    .venv/bin/python benchmarks/bench_stacks.py                  # --live 10,10000 --cycles 300
    .venv/bin/python benchmarks/bench_stacks.py --live 10 --cycles 20   # a smoke run
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import time

from mmusim.hw import MODE_IA32E, PhysMem, Tlb
from mmusim.runtime import PAGE, AddressSpace, HwPager
from mmusim.runtime.policies import RUNTIME_POLICIES, RuntimeStackPolicy, stack_costs

# Linux x86_64 uapi values (asm-generic/mman-common.h, mman.h; MADV_GUARD_INSTALL: Linux 6.13).
PROT_NONE, PROT_RW = 0, 3
MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS = 0x02, 0x10, 0x20
MAP_GROWSDOWN, MAP_NORESERVE = 0x100, 0x4000
MADV_GUARD_INSTALL = 102
ANON = MAP_PRIVATE | MAP_ANONYMOUS
GAP = 256 * PAGE  # the nanos layout's guard gap (and Linux's stack_guard_gap)


class Unavailable(Exception):
    """The host kernel refuses a call the layout needs (e.g. no MADV_GUARD_INSTALL)."""


class Host:
    """The host kernel's calls, through libc."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.mmap_ = libc.mmap
        self.mmap_.restype = ctypes.c_void_p
        self.mmap_.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                               ctypes.c_int, ctypes.c_long]  # fmt: skip
        self.munmap_ = libc.munmap
        self.munmap_.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        self.mprotect_ = libc.mprotect
        self.mprotect_.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        self.madvise_ = libc.madvise
        self.madvise_.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]

    @staticmethod
    def _err(call: str) -> Unavailable:
        e = ctypes.get_errno()
        return Unavailable(f"{call}: {os.strerror(e)}")

    def mmap(self, length: int, prot: int, flags: int, addr: int = 0) -> int:
        got = self.mmap_(addr or None, length, prot, flags, -1, 0)
        if got in (None, ctypes.c_void_p(-1).value):
            raise self._err("mmap")
        return int(got)

    def munmap(self, addr: int, length: int) -> None:
        if self.munmap_(addr, length):
            raise self._err("munmap")

    def mprotect(self, addr: int, length: int, prot: int) -> None:
        if self.mprotect_(addr, length, prot):
            raise self._err("mprotect")

    def madvise(self, addr: int, length: int, advice: int) -> None:
        if self.madvise_(addr, length, advice):
            raise self._err(f"madvise({advice})")

    # -- each policy's layout: create returns (top, what destroy unmaps) -------------------------

    def create(self, policy: str, size: int) -> tuple[int, tuple[int, int]]:
        if policy == "haiku-areas":
            base = self.mmap(size + 2 * PAGE, PROT_NONE, ANON | MAP_NORESERVE)
            self.mmap(size, PROT_RW, ANON | MAP_FIXED, base + PAGE)
            return base + PAGE + size, (base, size + 2 * PAGE)
        if policy == "posix-reserve":
            base = self.mmap(size + 2 * PAGE, PROT_NONE, ANON | MAP_NORESERVE)
            self.mprotect(base + PAGE, size, PROT_RW)
            return base + PAGE + size, (base, size + 2 * PAGE)
        if policy == "linux-guard-regions":
            base = self.mmap(size + 2 * PAGE, PROT_RW, ANON)
            try:
                self.madvise(base, PAGE, MADV_GUARD_INSTALL)
                self.madvise(base + PAGE + size, PAGE, MADV_GUARD_INSTALL)
            except Unavailable:
                self.munmap(base, size + 2 * PAGE)
                raise
            return base + PAGE + size, (base, size + 2 * PAGE)
        if policy == "nanos-growsdown":
            whole = self.mmap(GAP + size, PROT_RW, ANON)
            top = whole + GAP + size
            self.munmap(whole, GAP + size - PAGE)
            self.mmap(PAGE, PROT_RW, ANON | MAP_GROWSDOWN | MAP_FIXED, top - PAGE)
            return top, (top - PAGE, PAGE)  # the push touches the mapped top page: no growth
        if policy == "rethinkdb-coroutines":
            base = self.mmap(size, PROT_RW, ANON)
            self.mprotect(base, PAGE, PROT_NONE)
            return base + size, (base, size)
        if policy.startswith("go-"):
            raise Unavailable("a Go stack is a block of the Go heap: no per-stack host call")
        raise ValueError(policy)


def host_rates(host: Host, policy: str, size: int, live: int, cycles: int, repeat: int) -> float:
    """Cycles per second on the host kernel with ``live`` stacks of the layout held (median of
    ``repeat`` timed runs, the live stacks made once)."""
    held = [host.create(policy, size)[1] for _ in range(live)]
    try:
        rates = []
        for _ in range(repeat):
            t = time.perf_counter()
            for _ in range(cycles):
                top, (addr, length) = host.create(policy, size)
                ctypes.memset(top - 8, 0x5A, 8)  # the first push: a page fault on the host
                host.munmap(addr, length)
            rates.append(cycles / (time.perf_counter() - t))
        return median(rates)
    finally:
        for addr, length in held:
            host.munmap(addr, length)


def mmusim_rates(
    policy: RuntimeStackPolicy, size: int, live: int, cycles: int, repeat: int
) -> float:
    """Cycles per second on mmusim's address space with ``live`` stacks held (median of
    ``repeat`` timed runs, the live stacks made once)."""
    pager = HwPager(PhysMem(), MODE_IA32E, tlbs=[Tlb(), Tlb()])
    space = AddressSpace(pager, 0x4000_0000, 0x7F00_0000_0000, flavour=policy.space_flavour(),
                         rlimit_stack=size)  # fmt: skip
    for i in range(live):
        policy.create(space, f"live{i}", size)
    rates = []
    for _ in range(repeat):
        t = time.perf_counter()
        for i in range(cycles):
            s = policy.create(space, f"c{i}", size)
            space.fault(s.hi - 8, write=True)
            policy.destroy(space, s)
        rates.append(cycles / (time.perf_counter() - t))
    return median(rates)


def median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--live", default="10,10000", help="live stack counts (comma-separated)")
    ap.add_argument("--cycles", type=int, default=300, help="timed cycles on mmusim, per run")
    ap.add_argument("--host-cycles", type=int, default=None, help="on the host (default: 10x)")
    ap.add_argument("--size", type=int, default=64 * 1024, help="stack size in bytes")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs; the median is shown")
    args = ap.parse_args(argv)
    lives = [int(n) for n in args.live.split(",")]
    host_cycles = args.host_cycles or 10 * args.cycles
    host = Host()
    print(f"create + push + destroy of a {args.size // 1024} KiB stack, cycles per second "
          f"(median of {args.repeat}); ratio = host / mmusim")  # fmt: skip
    print(f"{'policy':22} {'live':>6} {'mmusim/s':>10} {'host/s':>10} {'ratio':>8}", flush=True)
    for name, cls in RUNTIME_POLICIES.items():
        for live in lives:
            sim = mmusim_rates(cls(), args.size, live, args.cycles, args.repeat)
            try:
                peer = host_rates(host, name, args.size, live, host_cycles, args.repeat)
                shown, ratio = f"{peer:10,.0f}", f"{peer / sim:7.1f}x"
            except Unavailable as e:
                shown, ratio = f"{'n/a':>10}", f"  ({e})"
            print(f"{name:22} {live:6,} {sim:10,.0f} {shown} {ratio}", flush=True)
    print()
    print(f"per-stack costs (stack_costs, {args.size // 1024} KiB, mmusim, two CPUs):")
    keys = ("areas", "virtual_pages", "frames", "table_pages", "pte_writes", "shootdowns")
    short = ("areas", "vpages", "frames", "tables", "PTEw", "shootd")
    print(f"{'policy':22} | create: " + " ".join(f"{k:>6}" for k in short)
          + " | destroy: " + " ".join(f"{k:>6}" for k in short[-2:]))  # fmt: skip
    for name, cls in RUNTIME_POLICIES.items():
        c = stack_costs(cls(), args.size)
        print(f"{name:22} |         " + " ".join(f"{c['create'][k]:6}" for k in keys)
              + " |          " + " ".join(f"{c['destroy'][k]:6}" for k in keys[-2:]))  # fmt: skip


if __name__ == "__main__":
    main()
