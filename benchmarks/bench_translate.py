"""Translation speed: mmusim against volatility3's Intel32e layer, on the same page tables.

Run as ``python benchmarks/bench_translate.py [--addresses N] [--repeat R] [--seed S]``
(``pip install -e '.[bench]'`` first). See benchmarks/README.md for what each row means.

The workload: IA-32e tables built with mmusim's ``PageTables`` into a ``PhysMem``, mapping 4,096 4K
pages at random distinct linear addresses spread over several PML4, PDPT and PD slots (so that no
table page is one repeated entry, which volatility3 treats as not present), to shuffled frames. The
image from ``PhysMem.to_image()`` -- the very same bytes -- backs volatility3's ``BufferDataLayer``,
with an ``Intel32e`` layer on top whose ``page_map_offset`` is CR3.

Before anything is timed, mmusim and volatility3 must give the same physical address for every
address used; the script stops with exit status 1 otherwise.

Two comparisons, each timed as the median of ``--repeat`` runs over ``--addresses`` accesses. The
runs are made in rounds, one run of every measurement per round, and a ratio is the median of its
per-round ratios, so that a slow spell of the machine hits both sides of a ratio alike:

a. TLB hit. mmusim's ``Cpu.translate(va, Access.READ)`` with a warm TLB (the rights are decided from
   the cached entry) against volatility3's ``translate()`` with its page cache warm. Both run the same
   sequence: accesses cycling through 512 distinct pages, which fit both caches (volatility3's
   ``_translate_entry`` is an ``lru_cache(maxsize=1024)``).
b. Full walk. mmusim's ``translate(mem, ctl, va, Access.READ)`` (four entry reads, rights check, A/D
   update in memory) and ``Cpu.translate`` with ``use_tlb=False``, against volatility3's
   ``translate()`` on a sequence cycling through all 4,096 pages in a fixed shuffled order: every
   access is then a miss of the 1024-entry page LRU ("all-miss"; its cache of table pages,
   ``_get_valid_table``, stays warm). For information, volatility3 "cold" clears both caches before
   every call, so that it reads every table from the buffer.

volatility3's caches are class-level ``functools.lru_cache`` objects; their ``cache_info()`` is read
around each timed run, and the hit rates it shows are printed beside the speeds.
"""

from __future__ import annotations

import argparse
import gc
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from importlib.metadata import version

import mmusim
from mmusim.hw import (
    FRAME_SIZE,
    MODE_IA32E,
    Access,
    ControlState,
    Cpu,
    PageTables,
    PhysMem,
    PteFlags,
    Translation,
    translate,
)

try:
    from volatility3.framework import contexts
    from volatility3.framework.exceptions import InvalidAddressException
    from volatility3.framework.interfaces.configuration import path_join
    from volatility3.framework.layers import intel, physical
except ImportError:  # pragma: no cover - depends on the environment
    sys.exit("bench_translate: volatility3 is not installed; run: pip install -e '.[bench]'")

PAGES = 4096  # mapped 4K pages
WORKING_SET = 512  # pages of the TLB-hit sequence: fits volatility3's 1024-entry LRU
TABLE_BASE = 0x1000  # table frames are handed out from here upwards
# Data frames: PAGES of them, drawn at random from [DATA_BASE, DATA_BASE + 2 * PAGES * 4K).
DATA_BASE = 0x100_0000
# Upper-level slots the pages are spread over: 3 PML4 slots (one in the upper, kernel half), 4 PDPT
# slots under each, 4 PD slots under each of those: 48 page tables, about 85 entries each.
PML4_SLOTS = (1, 42, 0x1F0)
PDPT_PER_PML4 = 4
PD_PER_PDPT = 4
LEAF_FLAGS = (  # read at CPL 0 is allowed through each of these
    PteFlags.RW,
    PteFlags.RW | PteFlags.US,
    PteFlags.US | PteFlags.NX,
    PteFlags.RW | PteFlags.NX | PteFlags.G,
    PteFlags(0),
)
TARGETS = {"a": 10.0, "b": 2.0}  # mmusim / volatility3


# -- the workload -----------------------------------------------------------------------------


class Workload:
    """The page tables, their image, and the address sequences (all from one seed)."""

    def __init__(self, seed: int, n: int) -> None:
        rng = random.Random(seed)
        self.mem = PhysMem(DATA_BASE + 2 * PAGES * FRAME_SIZE)
        next_table = [TABLE_BASE]

        def alloc_table() -> int:
            pa = next_table[0]
            next_table[0] += FRAME_SIZE
            return pa

        pt = PageTables(self.mem, MODE_IA32E, alloc_table)
        pages: set[int] = set()
        uppers = [
            (pml4, pdpt, pd)
            for pml4 in PML4_SLOTS
            for pdpt in rng.sample(range(512), PDPT_PER_PML4)
            for pd in rng.sample(range(512), PD_PER_PDPT)
        ]
        while len(pages) < PAGES:
            pml4, pdpt, pd = rng.choice(uppers)
            va = pml4 << 39 | pdpt << 30 | pd << 21 | rng.randrange(512) << 12
            if va >> 47:
                va |= 0xFFFF << 48  # canonical upper half
            pages.add(va)
        self.pages = sorted(pages)
        frames = rng.sample(range(DATA_BASE, DATA_BASE + 2 * PAGES * FRAME_SIZE, FRAME_SIZE), PAGES)
        for va, pa in zip(self.pages, frames, strict=True):
            pt.map(va, pa, rng.choice(LEAF_FLAGS))
        pt._check()
        self.table_frames = len(pt.table_frames)
        self.image = self.mem.to_image()  # taken before any walk sets an A bit
        self.ctl = ControlState.for_mode("ia32e", pt.root, nxe=True)

        def offsets(page_list: list[int]) -> list[int]:
            return [va | rng.randrange(FRAME_SIZE) for va in page_list]

        # For the agreement check: uniformly random addresses among the mapped pages.
        self.random = offsets([rng.choice(self.pages) for _ in range(n)])
        # (a) TLB hit: cycle through a working set that fits both caches.
        ws = rng.sample(self.pages, WORKING_SET)
        self.working_set = ws
        self.hits = offsets([ws[i % WORKING_SET] for i in range(n)])
        # (b) full walk: cycle through all pages, so that a 1024-entry LRU always misses.
        order = rng.sample(self.pages, PAGES)
        self.misses = offsets([order[i % PAGES] for i in range(n)])


def _vol3_layer(image: bytes, cr3: int) -> intel.Intel32e:
    """volatility3's IA-32e layer over a BufferDataLayer holding ``image``, as its automagic builds
    one (volatility3/framework/automagic/mac.py): the configuration names the physical layer
    ("memory_layer", a TranslationLayerRequirement) and the table root ("page_map_offset")."""
    ctx = contexts.Context()
    ctx.add_layer(physical.BufferDataLayer(ctx, "bench.physical", "physical", image))
    config_path = "bench.intel32e"
    ctx.config[path_join(config_path, "memory_layer")] = "physical"
    ctx.config[path_join(config_path, "page_map_offset")] = cr3
    layer = intel.Intel32e(ctx, config_path, "intel32e")
    ctx.add_layer(layer)
    return layer


def _vol3_clear() -> None:
    intel.Intel._translate_entry.cache_clear()
    intel.Intel._get_valid_table.cache_clear()


# -- agreement --------------------------------------------------------------------------------


def check_agreement(w: Workload, layer: intel.Intel32e) -> int:
    """Every address of every sequence: the same PA from mmusim (the walker, and a Cpu through its
    TLB) and from volatility3. Returns the number of addresses checked; exits on a disagreement.

    The walks set the A bits in ``w.mem``, so the timed walks afterwards find them set (the steady
    state of a read workload) and only read the tables."""
    cpu = Cpu(w.mem, w.ctl)
    first: list[str] = []
    checked = wrong = 0
    for name, seq in (("random", w.random), ("tlb-hit", w.hits), ("full-walk", w.misses)):
        for va in seq:
            checked += 1
            t = translate(w.mem, w.ctl, va, Access.READ)
            try:
                pa_vol, layer_name = layer.translate(va)
            except InvalidAddressException as ex:
                pa_vol, layer_name = None, f"none ({ex})"
            pa_cpu = cpu.translate(va, Access.READ) if isinstance(t, Translation) else None
            ok = isinstance(t, Translation) and t.paddr == pa_vol == pa_cpu
            if not ok or layer_name != "physical":
                wrong += 1
                if len(first) < 10:
                    first.append(
                        f"  {name} VA {va:#018x}: mmusim {t!r}, Cpu {_hex(pa_cpu)}, "
                        f"volatility3 {_hex(pa_vol)} in layer {layer_name}"
                    )
    if wrong:
        print(
            f"bench_translate: mmusim and volatility3 DISAGREE on {wrong:,} of {checked:,} "
            "addresses; nothing was timed. The first ones:",
            file=sys.stderr,
        )
        print("\n".join(first), file=sys.stderr)
        sys.exit(1)
    return checked


def _hex(pa: int | None) -> str:
    return "-" if pa is None else f"{pa:#x}"


# -- timing -----------------------------------------------------------------------------------


class Measurement:
    """One timed loop over a sequence: ``prepare`` (untimed) then ``run``, repeated."""

    def __init__(
        self,
        key: str,
        label: str,
        run: Callable[[], None],
        n: int,
        prepare: Callable[[], None] | None = None,
        vol3: bool = False,
        caches_note: str = "",
    ) -> None:
        self.key, self.label, self.run, self.n, self.prepare = key, label, run, n, prepare
        self.vol3 = vol3  # read volatility3's cache statistics around each run
        self.caches_note = caches_note  # ... or, where a run clears them, say this instead
        self.seconds: list[float] = []
        self.cache_hits = [0, 0]  # _translate_entry, _get_valid_table
        self.cache_calls = [0, 0]

    def once(self) -> None:
        if self.prepare is not None:
            self.prepare()
        before = _cache_counts() if self.vol3 and not self.caches_note else None
        gc.collect()
        gc.disable()
        try:
            t0 = time.perf_counter()
            self.run()
            self.seconds.append(time.perf_counter() - t0)
        finally:
            gc.enable()
        if before is not None:
            after = _cache_counts()
            for i in range(2):
                hits = after[i][0] - before[i][0]
                misses = after[i][1] - before[i][1]
                self.cache_hits[i] += hits
                self.cache_calls[i] += hits + misses

    @property
    def per_second(self) -> float:
        return self.n / statistics.median(self.seconds)

    @property
    def spread(self) -> float:
        """(slowest - fastest) / median run time."""
        return (max(self.seconds) - min(self.seconds)) / statistics.median(self.seconds)

    def hit_rates(self) -> str:
        if not self.vol3 or self.caches_note:
            return self.caches_note
        return ", ".join(
            f"{name} {100 * self.cache_hits[i] / self.cache_calls[i]:.0f}% hits"
            for i, name in enumerate(("page LRU", "table cache"))
            if self.cache_calls[i]
        )


def _cache_counts() -> tuple[tuple[int, int], tuple[int, int]]:
    a = intel.Intel._translate_entry.cache_info()
    b = intel.Intel._get_valid_table.cache_info()
    return (a.hits, a.misses), (b.hits, b.misses)


def measurements(w: Workload, layer: intel.Intel32e, n: int) -> list[Measurement]:
    read = Access.READ
    hits, misses = w.hits, w.misses

    # (a) mmusim: a CPU whose TLB holds the working set.
    cpu_tlb = Cpu(w.mem, w.ctl)
    for va in w.working_set:
        cpu_tlb.translate(va, read)

    def mmusim_hit() -> None:
        tr = cpu_tlb.translate
        for va in hits:
            tr(va, read)

    def vol3_warm() -> None:
        for va in w.working_set:
            layer.translate(va)

    def vol3_seq(seq: list[int]) -> Callable[[], None]:
        def run() -> None:
            tr = layer.translate
            for va in seq:
                tr(va)

        return run

    # (b) mmusim: the walker alone, and a CPU without a TLB.
    mem, ctl = w.mem, w.ctl
    cpu_walk = Cpu(w.mem, w.ctl, use_tlb=False)

    def mmusim_walk() -> None:
        for va in misses:
            translate(mem, ctl, va, read)

    def mmusim_cpu_walk() -> None:
        tr = cpu_walk.translate
        for va in misses:
            tr(va, read)

    def vol3_cold() -> None:
        tr = layer.translate
        clear_pages = intel.Intel._translate_entry.cache_clear
        clear_tables = intel.Intel._get_valid_table.cache_clear
        for va in misses:
            clear_pages()
            clear_tables()
            tr(va)

    return [
        Measurement("a.mmusim", "mmusim  Cpu.translate, TLB hit", mmusim_hit, n),
        Measurement(
            "a.vol3",
            "vol3    translate(), page LRU hit",
            vol3_seq(hits),
            n,
            prepare=vol3_warm,
            vol3=True,
        ),
        Measurement("b.mmusim", "mmusim  translate(mem, ctl, va, READ)", mmusim_walk, n),
        Measurement("b.cpu", "mmusim  Cpu(use_tlb=False).translate", mmusim_cpu_walk, n),
        Measurement(
            "b.vol3",
            "vol3    translate(), all-miss",
            vol3_seq(misses),
            n,
            prepare=_vol3_clear,
            vol3=True,
        ),
        Measurement(
            "b.cold",
            "vol3    translate(), cold",
            vol3_cold,
            n,
            vol3=True,
            caches_note="both cleared before every call",
        ),
    ]


# -- report -----------------------------------------------------------------------------------


def _rate(x: float) -> str:
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.0f}k"


def report(ms: dict[str, Measurement]) -> None:
    print()
    print(f"{'measurement':<53} {'ops/s':>8} {'us/op':>7} {'spread':>7}  volatility3 caches")
    print("-" * 110)
    for m in ms.values():
        us = 1e6 / m.per_second
        line = (
            f"{m.label:<53} {_rate(m.per_second):>8} {us:>7.3f} {m.spread:>6.0%}  {m.hit_rates()}"
        )
        print(line.rstrip())
    print()
    rows = [
        ("a", "TLB hit: Cpu.translate / vol3 LRU hit", "a.mmusim", "a.vol3", True),
        ("b", "full walk: translate() / vol3 all-miss", "b.mmusim", "b.vol3", True),
        ("b", "full walk: Cpu(use_tlb=False) / vol3 all-miss", "b.cpu", "b.vol3", True),
        ("b", "full walk: translate() / vol3 cold", "b.mmusim", "b.cold", False),
        ("b", "full walk: Cpu(use_tlb=False) / vol3 cold", "b.cpu", "b.cold", False),
    ]
    print(f"{'comparison':<50} {'mmusim':>8} {'vol3':>8} {'ratio':>7} {'target':>8}  met")
    print("-" * 90)
    for group, label, mine, theirs, judged in rows:
        ratio = _ratio(ms[mine], ms[theirs])
        target = TARGETS[group]
        met = ("yes" if ratio >= target else "NO") if judged else "(info)"
        print(
            f"{group}  {label:<47} {_rate(ms[mine].per_second):>8} "
            f"{_rate(ms[theirs].per_second):>8} {ratio:>6.1f}x {'>= ' + format(target, 'g') + 'x':>8}"
            f"  {met}"
        )
    print()
    print("ops/s: median run. spread: (slowest - fastest run) / median run. ratio: median over the")
    print("rounds of mmusim's speed / volatility3's in the same round (a round runs every")
    print("measurement once, so a slow spell of the machine affects both sides of a ratio alike).")
    print("Targets are judged against volatility3's all-miss (its table cache warm, the faster of")
    print("its two walk variants); the 'cold' rows are for information.")


def _ratio(mine: Measurement, theirs: Measurement) -> float:
    """Median over the rounds of mine's speed / theirs' (both ran ``n`` accesses per round)."""
    return statistics.median(t / m for m, t in zip(mine.seconds, theirs.seconds, strict=True))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--addresses", type=int, default=100_000, help="accesses per timed run")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per measurement (median)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the tables and addresses")
    args = ap.parse_args(argv)
    if args.addresses < 1 or args.repeat < 1:
        ap.error("--addresses and --repeat must be at least 1")

    print("bench_translate: mmusim vs volatility3, IA-32e 4K pages")
    print(
        f"Python {platform.python_version()} ({platform.python_implementation()}), "
        f"volatility3 {version('volatility3')}, mmusim {mmusim.__version__}, {platform.machine()}"
    )
    t0 = time.perf_counter()
    w = Workload(args.seed, args.addresses)
    layer = _vol3_layer(w.image, w.ctl.cr3)
    print(
        f"workload: {PAGES} pages over {w.table_frames} table frames, image {len(w.image) >> 20} MiB, "
        f"seed {args.seed}; {args.addresses:,} accesses per run, median of {args.repeat} runs"
    )
    checked = check_agreement(w, layer)
    print(
        f"agreement: mmusim (walker and Cpu) and volatility3 give the same PA for all "
        f"{checked:,} addresses checked"
    )

    ms = {m.key: m for m in measurements(w, layer, args.addresses)}
    for _ in range(args.repeat):
        for m in ms.values():
            m.once()
    report(ms)
    print(f"total time {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
