"""Thread lifecycle cost with mapped stacks, against the number of live threads.

One cycle is Zephyr's create -> start -> short body -> abort -> cleanup with
CONFIG_THREAD_STACK_MEM_MAPPED=y on qemu_x86_64 (2 CPUs):

    k_thread_create(x, stack_x, ..., K_NO_WAIT)   map the stack between two guard pages
    x runs: pushes 64 bytes, sleeps forever        a short body, through the MMU
    k_thread_abort(x) from main                    halt_thread -> k_thread_abort_cleanup:
                                                   x is not running, so its stack is unmapped now

The same cycle is measured with 10, 1,000 and 10,000 other threads alive (each sleeping forever on
its own mapped stack). Zephyr's data structures (a bitmap allocator, wait queues) make each step
independent of that number, and so must mmusim's: the cost per cycle at 10,000 live threads must
stay within 1.5x of the cost at 10. This is a speed measurement, not a test: it prints the numbers
and the ratios and does not fail.

    python benchmarks/bench_kernel_cycle.py [--cycles N] [--repeat R]

Wall-clock time is measured here, outside the model (perf_counter around engine steps); the
kernel itself never reads a clock.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from mmusim.kconfig import load_config
from mmusim.kernel import K_FOREVER, Kernel, Op, StackObject

STACK_SIZE = 4096


def build(live: int, cycles: int) -> Kernel:
    # The VM window holds the kernel image (whose .noinit holds every stack object, 8 KiB each)
    # and the mappings (each stack: 2 pages + 2 guards): 10 pages per live thread is plenty.
    vm = max(0x800000, (live + 64) * 10 * 4096)
    ram_kib = max(8192, (live + 64) * 3 * 4)
    cfg = load_config(
        "qemu_x86_64",
        extra_lines=(
            ("bench", 1, f"CONFIG_KERNEL_VM_SIZE={vm:#x}"),
            ("bench", 2, f"CONFIG_SRAM_SIZE={ram_kib}"),
        ),
    )
    stacks = [StackObject(f"s{i}", STACK_SIZE, True) for i in range(live)]
    stacks.append(StackObject("sx", STACK_SIZE, True))
    setup = tuple(
        Op("create", target=f"live{i}", stack=f"s{i}", label="sleeper", prio=5, n=0)
        for i in range(live)
    )
    cycle = (
        Op("create", target="x", stack="sx", label="short", prio=5, n=0),
        Op("yield"),
        Op("abort", target="x"),
    )
    main = (
        *setup,
        Op("record", target="clock", label="start"),
        Op("repeat", n=cycles, body=cycle),
        Op("record", target="clock", label="end"),
    )
    bodies = {
        "sleeper": (Op("sleep", n=K_FOREVER),),
        "short": (Op("push", n=64), Op("sleep", n=K_FOREVER)),
    }
    return Kernel(cfg.values, stacks=tuple(stacks), main_body=main, bodies=bodies)


def measure(live: int, cycles: int) -> tuple[float, int]:
    """Seconds per cycle, and engine steps per cycle, for one run."""
    k = build(live, cycles)
    marks: dict[str, tuple[float, int]] = {}

    def watch(kk: Kernel) -> None:
        for name in ("start", "end"):
            if name in kk.facts and name not in marks:
                marks[name] = (time.perf_counter(), kk.steps)

    k.check = watch
    k.run()
    (t0, s0), (t1, s1) = marks["start"], marks["end"]
    return (t1 - t0) / cycles, (s1 - s0) // cycles


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    print(f"bench_kernel_cycle: Python {sys.version.split()[0]}, qemu_x86_64, mapped stacks")
    print(f"{args.cycles} cycles per run, median of {args.repeat} runs\n")
    print(f"{'live threads':>12}  {'us/cycle':>9}  {'cycles/s':>9}  {'steps/cycle':>11}")
    results: dict[int, float] = {}
    for live in (10, 1_000, 10_000):
        runs = [measure(live, args.cycles) for _ in range(args.repeat)]
        per = statistics.median(r[0] for r in runs)
        results[live] = per
        print(f"{live:>12,}  {per * 1e6:>9.1f}  {1 / per:>9,.0f}  {runs[0][1]:>11}")
    print()
    for live in (1_000, 10_000):
        ratio = results[live] / results[10]
        verdict = "met" if live != 10_000 or ratio <= 1.5 else "MISSED"
        print(f"cost at {live:,} / cost at 10: {ratio:.2f}x" + (f"  (target <= 1.5x: {verdict})"
              if live == 10_000 else ""))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
