"""The command line's translation speed: ``mmusim translate`` against volatility3's Intel32e layer.

Run as ``python benchmarks/bench_cli.py [--addresses N] [--repeat R] [--seed S]``
(``pip install -e '.[bench]'`` first). See benchmarks/README.md for what each row means.

bench_translate.py times mmusim's walker; this times what a user of the command runs:
``mmusim translate --json`` (and the text form) with N addresses on one image file, so argument
parsing, the checks, the walks and the printing of every result. The workload is
bench_translate.py's (the same seed gives the same tables, image and addresses): its full-walk
sequence, N accesses cycling through all 4,096 mapped pages, so volatility3's page LRU always
misses. The image file holds exactly the bytes that back volatility3's ``BufferDataLayer``.

Rows, timed in rounds as bench_translate.py does (a ratio is the median of the per-round ratios):

* in process: ``mmusim.cli.main(["translate", ...])`` with standard output redirected to
  ``/dev/null`` (a text file, as a shell redirection gives the command), per walk = time / N;
* volatility3's ``translate()``, all-miss, on the same addresses in the same rounds;
* mmusim's walker alone on the same addresses (the floor the command adds its work to);
* whole process, for information: ``mmusim translate ...`` run as a subprocess, Python's start-up,
  imports and the image load included, per walk = wall time / N.

Before anything is timed, the command's output (``--json`` and text) must give volatility3's
physical address for every address; the script stops with exit status 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

# bench_translate.py lives next to this script (sys.path[0] when run as a script).
from bench_translate import Workload, _vol3_clear, _vol3_layer

import mmusim
from mmusim.cli import main as mmusim_main
from mmusim.hw import Access, translate

try:
    from volatility3.framework.exceptions import InvalidAddressException
except ImportError:  # pragma: no cover - depends on the environment
    sys.exit("bench_cli: volatility3 is not installed; run: pip install -e '.[bench]'")

TARGET = 1.5  # mmusim translate (in process) / volatility3 all-miss, per walk
_TEXT_PA = re.compile(r"^(0x[0-9a-f]+) -> (0x[0-9a-f]+) \(page size 0x[0-9a-f]+\)$")


# -- the command ------------------------------------------------------------------------------


def translate_argv(image: Path, w: Workload, vas: list[int], as_json: bool) -> list[str]:
    """``mmusim translate``'s arguments (after ``mmusim``) for ``vas`` on ``image``."""
    argv = ["translate", "--image", str(image), "--mode", "ia32e", "--cr3", f"{w.ctl.cr3:#x}"]
    argv += ["--nxe", *(["--json"] if as_json else []), *[f"{va:#x}" for va in vas]]
    return argv


def run_in_process(argv: list[str], out: object) -> int:
    """``mmusim ARGV`` in this process, its standard output going to ``out``."""
    with contextlib.redirect_stdout(out):  # type: ignore[type-var]
        return mmusim_main(argv)


def command_path() -> list[str]:
    """How to start the installed command: its console script next to this Python, else -m."""
    script = Path(sys.executable).with_name("mmusim")
    return [str(script)] if script.exists() else [sys.executable, "-m", "mmusim"]


# -- agreement --------------------------------------------------------------------------------


def check_agreement(layer: object, argvs: dict[str, list[str]], vas: list[int]) -> int:
    """Both output forms of the command against volatility3: the same PA for every address, in
    order. Returns the number of lines checked; exits on a disagreement."""
    expected: list[int | None] = []
    for va in vas:
        try:
            expected.append(layer.translate(va)[0])  # type: ignore[attr-defined]
        except InvalidAddressException:
            expected.append(None)
    first: list[str] = []
    checked = wrong = 0
    for form, argv in argvs.items():
        buf = io.StringIO()
        rc = run_in_process(argv, buf)
        lines = buf.getvalue().splitlines()
        if rc != 0 or len(lines) != len(vas):
            sys.exit(f"bench_cli: mmusim translate ({form}) exited {rc} with {len(lines)} lines")
        for va, pa_vol, line in zip(vas, expected, lines, strict=True):
            checked += 1
            if form == "json":
                obj = json.loads(line)
                got_va, pa = obj["vaddr"], obj.get("paddr")
            else:
                m = _TEXT_PA.match(line)
                got_va, pa = (int(m[1], 16), int(m[2], 16)) if m else (None, None)
            if got_va != va or pa is None or pa != pa_vol:
                wrong += 1
                if len(first) < 10:
                    first.append(f"  {form} VA {va:#x}: mmusim {line!r}, volatility3 {pa_vol}")
    if wrong:
        print(
            f"bench_cli: mmusim translate and volatility3 DISAGREE on {wrong:,} of {checked:,} "
            "lines; nothing was timed. The first ones:",
            file=sys.stderr,
        )
        print("\n".join(first), file=sys.stderr)
        sys.exit(1)
    return checked


# -- timing -----------------------------------------------------------------------------------


class Row:
    """One timed measurement: ``prepare`` (untimed) then ``run`` over ``n`` walks, per round."""

    def __init__(
        self,
        key: str,
        label: str,
        run: Callable[[], None],
        n: int,
        prepare: Callable[[], None] | None = None,
        no_gc: bool = True,
    ) -> None:
        self.key, self.label, self.run, self.n, self.prepare = key, label, run, n, prepare
        self.no_gc = no_gc  # a subprocess has its own collector; this one has nothing to do
        self.seconds: list[float] = []

    def once(self) -> None:
        if self.prepare is not None:
            self.prepare()
        gc.collect()
        if self.no_gc:
            gc.disable()
        try:
            t0 = time.perf_counter()
            self.run()
            self.seconds.append(time.perf_counter() - t0)
        finally:
            gc.enable()

    @property
    def per_second(self) -> float:
        return self.n / statistics.median(self.seconds)

    @property
    def spread(self) -> float:
        return (max(self.seconds) - min(self.seconds)) / statistics.median(self.seconds)


def rows(
    w: Workload, layer: object, argvs: dict[str, list[str]], vas: list[int], devnull: object
) -> list[Row]:
    n = len(vas)
    tr = layer.translate  # type: ignore[attr-defined]

    def cli(argv: list[str]) -> Callable[[], None]:
        def run() -> None:
            if run_in_process(argv, devnull) != 0:
                sys.exit("bench_cli: mmusim translate failed")

        return run

    def whole(argv: list[str]) -> Callable[[], None]:
        cmd = command_path() + argv

        def run() -> None:
            subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)

        return run

    def vol3() -> None:
        for va in vas:
            tr(va)

    mem, ctl, read = w.mem, w.ctl, Access.READ

    def walker() -> None:
        for va in vas:
            translate(mem, ctl, va, read)

    return [
        Row("cli.json", "mmusim  translate --json, in process", cli(argvs["json"]), n),
        Row("cli.text", "mmusim  translate (text), in process", cli(argvs["text"]), n),
        Row("walker", "mmusim  translate() walker alone", walker, n),
        Row("vol3", "vol3    translate(), all-miss", vol3, n, prepare=_vol3_clear),
        Row(
            "proc.json",
            "mmusim  translate --json, whole process",
            whole(argvs["json"]),
            n,
            no_gc=False,
        ),
        Row(
            "proc.text",
            "mmusim  translate (text), whole process",
            whole(argvs["text"]),
            n,
            no_gc=False,
        ),
    ]


# -- report -----------------------------------------------------------------------------------


def _rate(x: float) -> str:
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.0f}k"


def _ratio(mine: Row, theirs: Row) -> float:
    """Median over the rounds of mine's speed / theirs' (both ran ``n`` walks per round)."""
    return statistics.median(t / m for m, t in zip(mine.seconds, theirs.seconds, strict=True))


def report(rs: dict[str, Row]) -> None:
    print()
    print(f"{'measurement':<45} {'walks/s':>8} {'us/walk':>8} {'spread':>7}")
    print("-" * 72)
    for r in rs.values():
        print(f"{r.label:<45} {_rate(r.per_second):>8} {1e6 / r.per_second:>8.3f} {r.spread:>6.0%}")
    print()
    comparisons = [
        ("translate --json, in process / vol3 all-miss", "cli.json", True),
        ("translate (text), in process / vol3 all-miss", "cli.text", True),
        ("walker alone / vol3 all-miss", "walker", False),
        ("translate --json, whole process / vol3 all-miss", "proc.json", False),
        ("translate (text), whole process / vol3 all-miss", "proc.text", False),
    ]
    print(
        f"{'comparison (per walk)':<50} {'mmusim':>8} {'vol3':>8} {'ratio':>7} {'target':>8}  met"
    )
    print("-" * 90)
    vol3 = rs["vol3"]
    for label, key, judged in comparisons:
        ratio = _ratio(rs[key], vol3)
        met = ("yes" if ratio >= TARGET else "NO") if judged else "(info)"
        print(
            f"{label:<50} {_rate(rs[key].per_second):>8} {_rate(vol3.per_second):>8} "
            f"{ratio:>6.2f}x {'>= ' + format(TARGET, 'g') + 'x':>8}  {met}"
        )
    print()
    print("walks/s: median run (N walks / its time). ratio: median over the rounds of mmusim's")
    print("speed / volatility3's in the same round. 'in process' is mmusim.cli.main() with stdout")
    print("to /dev/null: parsing, checks, walks, printing. 'whole process' adds Python's start-up,")
    print("the imports and the image load, for information (volatility3 is timed in process).")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--addresses", type=int, default=20_000, help="addresses per command")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per measurement (median)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the tables and addresses")
    args = ap.parse_args(argv)
    if args.addresses < 1 or args.repeat < 1:
        ap.error("--addresses and --repeat must be at least 1")

    print("bench_cli: mmusim translate (the command) vs volatility3, IA-32e 4K pages")
    print(
        f"Python {platform.python_version()} ({platform.python_implementation()}), "
        f"volatility3 {version('volatility3')}, mmusim {mmusim.__version__}, {platform.machine()}"
    )
    t0 = time.perf_counter()
    w = Workload(args.seed, args.addresses)
    vas = w.misses
    layer = _vol3_layer(w.image, w.ctl.cr3)
    with tempfile.TemporaryDirectory(prefix="bench_cli.") as tmp:
        image = Path(tmp) / "image.bin"
        image.write_bytes(w.image)
        argvs = {form: translate_argv(image, w, vas, form == "json") for form in ("json", "text")}
        print(
            f"workload: bench_translate's, seed {args.seed}: image {len(w.image) >> 20} MiB, "
            f"{len(vas):,} addresses cycling through all pages; median of {args.repeat} runs"
        )
        checked = check_agreement(layer, argvs, vas)
        print(
            f"agreement: mmusim translate (--json and text) and volatility3 give the same PA on "
            f"all {checked:,} lines"
        )
        for va in vas:  # the walker row in the steady state, as in bench_translate.py
            translate(w.mem, w.ctl, va, Access.READ)
        with open(os.devnull, "w") as devnull:
            rs = {r.key: r for r in rows(w, layer, argvs, vas, devnull)}
            for _ in range(args.repeat):
                for r in rs.values():
                    r.once()
    report(rs)
    print(f"total time {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
