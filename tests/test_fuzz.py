"""A seeded fuzz test of the ``mmusim`` command (issue 11): malformed input never gives a traceback.

Each case is derived from a valid input by a few random mutations, with ``random.Random`` seeded
from the case's id (``scenario-17`` is the same case on every machine and every run):

    scenario   a bundled scenario TOML, mutated as text or as a TOML document, given to
               ``run``, ``map`` or ``explore``
    trace      a trace written by ``explore --trace`` on race_self_abort, mutated as text or as
               JSON, given to ``replay``
    kconfig    a Kconfig fragment (``config -f FILE``) or ``--config LINE`` lines of ``explore``
    image      a memory image with ``--mode``/``--cr3``/addresses for ``translate`` and ``walk``:
               wrong sizes, random bytes, special files, option values out of range
    explore    ``explore`` option lists: wrong types, negative and huge numbers, unknown values
    argv       random command lines from the subcommands' own option names and odd values

Each case runs in-process through ``mmusim.cli.main`` and must end within ``CASE_SECONDS`` (a
``SIGALRM`` timer turns a hang into a failure) with exit code 0, 1 or 2 and no exception (argparse
leaves with ``SystemExit``, code 0 or 2). Exit code 2 must come with one line on stderr,
``mmusim CMD: error: ...``, no ``Traceback``, no "internal error", that *names* the input: the
case lists what may be named -- the file as ``display_path`` writes it (non-UTF-8 bytes escaped)
or as given, or the option or argument (``--cr3``, ``VADDR``) the mutation touched -- and one of
those must be in the message. ``test_fuzz_in_a_real_process`` runs a sample of the cases as
``python -m mmusim`` with a timeout, for what only a real process shows (stderr's encoding).

Every file input is also replaced by an odd name (spaces, a leading dash, non-UTF-8 bytes), a
directory, a missing file, a symlink loop, ``/dev/null``, ``/dev/zero`` (refused at its first NUL
byte) or a huge sparse file (refused by its size). A FIFO nobody writes blocks rather than ends:
it is given only as ``--image``, the one input that refuses non-regular files by their ``stat``;
a scenario, trace or fragment is read as ``cat`` reads it, so that ``mmusim run <(generate)``
works. After the cases: the regressions they found, and Ctrl-C in a real process.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mmusim.cli import main
from mmusim.examples import EXAMPLES
from mmusim.scenario import BUNDLED_DIR
from mmusim.scenario.document import display_path

CASE_SECONDS = 20
"""A case that runs longer hangs: each one takes well under a second."""

RACE = BUNDLED_DIR / "explore" / "race_self_abort.toml"
SCENARIOS = [
    RACE,
    BUNDLED_DIR / "explore" / "race_reuse.toml",
    BUNDLED_DIR / "test_idle_stack.toml",
    BUNDLED_DIR / "test_k_mem_map_unmap.toml",
    BUNDLED_DIR / "test_guard_page_front_user.toml",
    BUNDLED_DIR / "issue_119098_leak.toml",
    BUNDLED_DIR / "switch_room_x86_64.toml",
]
BOARDS = ["qemu_x86_64", "qemu_x86", "qemu_x86_atom_virt"]
FRAGMENT = """\
# a prj.conf
CONFIG_SMP=y
CONFIG_MP_MAX_NUM_CPUS=2
CONFIG_SRAM_SIZE=4096
CONFIG_HW_STACK_PROTECTION=y
# CONFIG_THREAD_STACK_MEM_MAPPED is not set
CONFIG_SRAM_BASE_ADDRESS=0x100000
"""
ODD_NAMES = [
    "plain",
    "with space",
    "-leading-dash",
    "ünïcödé",
    os.fsdecode(b"bad\xff\xfe"),
    "quote'\"",
    "semi;colon",
    "x" * 200,
    ".hidden",
    "tab\there",
]

SCALE = int(os.environ.get("MMUSIM_FUZZ_SCALE", "1"))
PER_KIND = {"scenario": 130, "trace": 100, "kconfig": 80, "image": 90, "explore": 50, "argv": 50}
CASES = {kind: n * SCALE for kind, n in PER_KIND.items()}
"""Cases per kind: 500 in all, each its own test id (``test_fuzz[trace-12]``), about 20 s. To
search further, ``MMUSIM_FUZZ_SCALE=10 pytest tests/test_fuzz.py`` runs ten times as many (the
first 500 are the same cases)."""


@dataclass
class Case:
    """One command line to run, and what its error message may name."""

    argv: list[str]
    names: set[str] = field(default_factory=set)
    what: list[str] = field(default_factory=list)  # the mutations, for the failure message


# -- mutations of values, text and documents ---------------------------------------------------


def odd_value(rng: random.Random) -> Any:
    """A value of a random type, often one that does not fit where it lands."""
    return rng.choice(
        [
            lambda: rng.randint(-5, 5),
            lambda: -rng.randint(1, 1 << 70),
            lambda: rng.randint(1 << 31, 1 << 70),
            lambda: 10 ** rng.randint(10, 400),
            lambda: rng.choice([0.5, -1.5, 1e300, math.inf, -math.inf, math.nan]),
            lambda: rng.choice([True, False]),
            lambda: rng.choice(["", "x", "no_wait", "forever", "a", "0x10", "1e3", "-1", "é"]),
            lambda: "z" * rng.randint(100, 5000),
            lambda: [],
            lambda: [rng.randint(0, 3), "x"],
            lambda: {},
            lambda: {"op": "push", "bytes": rng.randint(-10, 10**6)},
            lambda: {"unknown_key": 1},
            lambda: nested(rng.randint(5, 300)),
        ]
    )()


def nested(depth: int) -> Any:
    value: Any = 1
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


def paths_of(doc: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path (keys and list indices) to a value inside ``doc``."""
    items = (
        doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else []
    )
    for key, value in items:
        yield (*prefix, key)
        yield from paths_of(value, (*prefix, key))


def mutate_doc(rng: random.Random, doc: Any) -> str:
    """Change one place of a parsed document (TOML or JSON) in place; returns what was done."""
    paths = list(paths_of(doc))
    if not paths:
        return "nothing to change"
    path = rng.choice(paths)
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    how = rng.choice(["value", "value", "value", "delete", "unknown key", "duplicate", "number"])
    if how == "delete":
        del parent[key]
    elif how == "unknown key" and isinstance(parent, dict):
        parent[f"no_such_key_{rng.randint(0, 99)}"] = odd_value(rng)
    elif how == "duplicate" and isinstance(parent, list):
        parent.insert(key, copy.deepcopy(parent[key]))
    elif how == "number" and isinstance(parent[key], int) and not isinstance(parent[key], bool):
        parent[key] = rng.choice(
            [-1, 0, -parent[key], parent[key] + 1, parent[key] * 4096, 1 << 64]
        )
    else:
        parent[key] = odd_value(rng)
    return f"{how} at {'.'.join(map(str, path))}"


def mutate_text(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    """A line- or byte-level change of a file's contents; returns (new contents, what was done)."""
    lines = data.splitlines(keepends=True)
    how = rng.choice(
        [
            "delete line",
            "duplicate line",
            "swap lines",
            "truncate",
            "random bytes",
            "non-UTF-8",
            "empty",
            "insert line",
            "huge line",
            "NUL",
        ]  # fmt: skip
    )
    i, j = (rng.randrange(len(lines)), rng.randrange(len(lines))) if lines else (0, 0)
    if how == "delete line" and lines:
        del lines[i]
    elif how == "duplicate line" and lines:
        lines.insert(i, lines[i])
    elif how == "swap lines" and lines:
        lines[i], lines[j] = lines[j], lines[i]
    elif how == "insert line":
        lines.insert(i, rng.choice([b"[scenario]\n", b"x = \n", b"= 1\n", b"[[a]]\n", b"}\n", b"{\n",
                                    b'"k": 1,\n', b"CONFIG_=y\n", b"\\\n", b"# \xc3\n"]))  # fmt: skip
    elif how == "huge line":
        lines.insert(i, b"a = " + b"9" * rng.randint(100, 10_000) + b"\n")
    elif how == "truncate":
        return data[: rng.randrange(len(data) + 1)], how
    elif how == "random bytes":
        pos = rng.randrange(len(data) + 1)
        return data[:pos] + rng.randbytes(rng.randint(1, 64)) + data[pos:], how
    elif how == "non-UTF-8":
        pos = rng.randrange(len(data) + 1)
        return data[:pos] + rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80"]) + data[
            pos:
        ], how
    elif how == "NUL":
        pos = rng.randrange(len(data) + 1)
        return data[:pos] + b"\0" + data[pos:], how
    elif how == "empty":
        return b"", how
    return b"".join(lines), how


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return (
            "nan"
            if math.isnan(value)
            else ("inf" if value > 0 else "-inf")
            if math.isinf(value)
            else repr(value)
        )
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{ "
            + ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items())
            + " }"
        )
    raise TypeError(value)


def toml_dump(doc: dict[str, Any]) -> str:
    """A TOML document: the top-level tables as ``[table]`` sections, all else inline."""
    plain = [
        f"{json.dumps(k)} = {toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)
    ]
    out = ["\n".join(plain)]
    for key, value in doc.items():
        if isinstance(value, dict):
            body = "\n".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items())
            out.append(f"[{json.dumps(key)}]\n{body}")
    return "\n\n".join(out) + "\n"


def odd_file(rng: random.Random, tmp: Path, data: bytes, suffix: str) -> tuple[Path, str]:
    """Write ``data`` to a file with an odd name, or pick a special file instead."""
    specials = ["directory", "/dev/null", "/dev/zero", "missing", "symlink loop", "huge"]
    kind = rng.choice(["file"] * 10 + specials)
    if kind in ("/dev/null", "/dev/zero"):  # /dev/zero: never ends, read up to a limit only
        return Path(kind), kind
    path = tmp / (rng.choice(ODD_NAMES) + suffix)
    while path.exists() or path.is_symlink():  # a second file of the case: a name of its own
        path = path.with_name("1" + path.name)
    if kind == "directory":
        path.mkdir()
    elif kind == "symlink loop":
        path.symlink_to(path.name)
    elif kind == "file":
        path.write_bytes(data)
    elif kind == "huge":  # sparse: 17 MiB, or past 1 GiB, of zeros on no disk space
        path.write_bytes(data)
        os.truncate(path, rng.choice([17 << 20, (1 << 30) + 4096]))
    return path, kind


def file_names(path: Path) -> set[str]:
    """How an error message may name ``path``: as ``display_path`` shows it, or as given."""
    return {display_path(path), str(path)}


def flip(rng: random.Random, p: float) -> bool:
    return rng.random() < p


# -- the generators, one per kind of input -----------------------------------------------------


def gen_scenario(rng: random.Random, tmp: Path, bases: dict[str, Any]) -> Case:
    base = rng.choice(SCENARIOS)
    data, what = base.read_bytes(), [base.name]
    for _ in range(rng.randint(1, 3)):
        if flip(rng, 0.5):
            try:
                doc = tomllib.loads(data.decode("utf-8"))
                what.append(mutate_doc(rng, doc))
                data = toml_dump(doc).encode("utf-8", "surrogatepass")
                continue
            except (ValueError, UnicodeDecodeError, TypeError):  # not TOML (any longer)
                pass
        data, how = mutate_text(rng, data)
        what.append(how)
    path, kind = odd_file(rng, tmp, data, ".toml")
    what.append(kind)
    command = rng.choice([["run", "--no-time"], ["run", "--json"], ["map"], ["map", "--json"],
                          ["explore", "--no-time", "--max-states", "40"],
                          ["view", "--max-steps", "150", "--out", str(tmp / "view.html")]])  # fmt: skip
    argv = [*command, str(path)]
    if command[0] == "map" and flip(rng, 0.3):
        argv += ["--step", str(rng.choice([0, 1, 50, 10**9, -1]))]
        what.append("--step")
    return Case(argv, file_names(path) | {"--step"}, what)


def gen_trace(rng: random.Random, tmp: Path, bases: dict[str, Any]) -> Case:
    doc = copy.deepcopy(bases["trace"])
    what = []
    for _ in range(rng.randint(1, 3)):
        what.append(mutate_doc(rng, doc))
    data = json.dumps(doc, indent=rng.choice([None, 1])).encode("utf-8", "surrogatepass")
    if flip(rng, 0.3):
        data, how = mutate_text(rng, data)
        what.append(how)
    path, kind = odd_file(rng, tmp, data, ".json")
    what.append(kind)
    argv = (
        ["replay", str(path)]
        if flip(rng, 0.7)
        else ["view", str(path), "--out", str(tmp / "v.html")]
    )
    names = file_names(path)
    if flip(rng, 0.2):
        scn, skind = odd_file(rng, tmp, RACE.read_bytes(), ".toml")
        argv += ["--scenario", str(scn)]
        names |= {"--scenario"}
        what.append(f"--scenario {skind}")
    return Case(argv, names, what)


def kconfig_line(rng: random.Random) -> str:
    name = rng.choice(["SMP", "MP_MAX_NUM_CPUS", "SRAM_SIZE", "THREAD_STACK_MEM_MAPPED",
                       "SRAM_BASE_ADDRESS", "HW_STACK_PROTECTION", "X86_64", "NO_SUCH", ""])  # fmt: skip
    value = rng.choice(["y", "n", "m", "0", "-1", "0x", "99999999999999999999999", '"str"', "",
                        "yes", "1.5", "\"unterminated", "é"])  # fmt: skip
    return rng.choice([f"CONFIG_{name}={value}", f"# CONFIG_{name} is not set",
                       f"{name}={value}", f"CONFIG_{name} = {value}", f"CONFIG_{name}"])  # fmt: skip


def gen_kconfig(rng: random.Random, tmp: Path, bases: dict[str, Any]) -> Case:
    if flip(rng, 0.25):  # explore --config LINE
        lines = [kconfig_line(rng) for _ in range(rng.randint(1, 3))]
        argv = ["explore", "--no-time", "--max-states", "30", str(RACE)]
        for line in lines:
            argv += ["--config", line]
        return Case(argv, {"--config"}, lines)
    board = rng.choice(BOARDS + ["no_such_board", ""]) if flip(rng, 0.15) else "qemu_x86_64"
    argv, names, what = ["config", "--board", board], {"--board"}, [board]
    for _ in range(rng.randint(1, 2)):
        text = FRAGMENT.encode()
        for _ in range(rng.randint(1, 3)):
            if flip(rng, 0.5):
                lines = text.decode("utf-8", "replace").splitlines()
                lines.insert(rng.randrange(len(lines) + 1), kconfig_line(rng))
                text = ("\n".join(lines) + "\n").encode()
                what.append("line")
            else:
                text, how = mutate_text(rng, text)
                what.append(how)
        path, kind = odd_file(rng, tmp, text, ".conf")
        what.append(kind)
        argv += ["-f", str(path)]
        names |= file_names(path)
    if flip(rng, 0.3):
        argv.append("--json")
    return Case(argv, names, what)


def gen_image(rng: random.Random, tmp: Path, bases: dict[str, Any]) -> Case:
    ex = rng.choice(list(EXAMPLES.values()))
    image = bytearray(ex.load())
    what = [ex.mode]
    change = rng.choice(["none", "size", "size", "bytes", "bytes", "tables"])
    if change == "size":
        image = image[: rng.choice([0, 1, 4095, 4096, 4097, len(image) - 1, len(image) // 2])]
        if flip(rng, 0.3):
            image += rng.randbytes(rng.choice([1, 100, 4096, 5000]))
    elif change == "bytes":  # random page tables: a walk may lead anywhere, but is a result
        for _ in range(rng.randint(1, 200)):
            pos = rng.randrange(len(image))
            image[pos] = rng.randrange(256)
    elif change == "tables":
        image[0x1000:0x6000] = rng.randbytes(0x5000)
    what.append(change)
    kind = rng.choice(["file"] * 10 + ["directory", "/dev/null", "missing", "fifo"])
    if kind == "fifo":  # refused by its stat: never opened
        path = tmp / ("1" + rng.choice(ODD_NAMES) + ".img")
        os.mkfifo(path)
    else:
        path, kind = odd_file(rng, tmp, bytes(image), ".img")
    what.append(kind)
    opts: dict[str, str | None] = {"--image": str(path), "--mode": ex.mode, "--cr3": hex(ex.cr3)}
    if ex.nxe:
        opts["--nxe"] = None
    if ex.pse:
        opts["--pse"] = None
    vaddrs = [hex(va) for _, va in ex.addresses]
    touched: set[str] = set()
    for _ in range(rng.randint(0, 3)):
        opt = rng.choice(["--mode", "--cr3", "--maxphyaddr", "--access", "--cpl", "--image-out",
                          "--pse", "--nxe", "--smep", "--smap", "--ac", "--wp", "--example",
                          "--image", "VADDR", "--json"])  # fmt: skip
        touched.add(opt)
        if opt in ("--pse", "--nxe", "--smep", "--smap", "--ac", "--wp", "--json"):
            if opt in opts:
                del opts[opt]
            else:
                opts[opt] = None
        elif opt == "VADDR":
            vaddrs = [rng.choice(["0", "-1", "0x", "zz", hex(1 << 64), hex(1 << 32), "1_000",
                                  "0xffff_8000_0000_0000", "4096", hex(rng.getrandbits(64))])
                      for _ in range(rng.randint(0, 3))]  # fmt: skip
        elif opt == "--image-out":
            out, okind = odd_file(rng, tmp, b"", ".out")
            opts[opt] = str(out if okind != "missing" else tmp / "no" / "dir" / "o.img")
            touched |= file_names(out) | file_names(tmp / "no" / "dir" / "o.img")
        elif opt == "--image":
            opts.pop("--image", None)
        else:
            opts[opt] = rng.choice({
                "--mode": ["32", "pae", "ia32e", "64", "", "PAE"],
                "--cr3": ["0", "-1", "0x1001", hex(1 << 40), hex(1 << 52), "zz", hex(len(image))],
                "--maxphyaddr": ["32", "31", "52", "53", "0", "-4", "x", "1000000000000"],
                "--access": ["r", "w", "x", "rw", ""],
                "--cpl": ["0", "3", "1", "x", "-0"],
                "--example": sorted(EXAMPLES) + ["nope"],
            }[opt])  # fmt: skip
        what.append(opt)
    argv = [rng.choice(["translate", "walk"])]
    for opt, value in opts.items():
        argv += [opt] if value is None else [opt, value]
    if argv[0] == "walk":  # one address (or none with --example)
        vaddrs = vaddrs[:1] if not flip(rng, 0.1) else vaddrs[:2]
    argv += vaddrs
    names = file_names(path) | {"--image"} | touched | {"VADDR", "--mode", "--cr3", *vaddrs}
    return Case(argv, names, what)


def gen_explore(rng: random.Random, tmp: Path, bases: dict[str, Any]) -> Case:
    base: dict[str, list[str]] = {"--max-states": ["40"], "--no-time": [], "--json": []}
    if flip(rng, 0.5):
        base.update({"--pct": [], "--runs": ["3"], "--depth": ["2"], "--seed": ["1"]})
    if flip(rng, 0.3):
        base["--mutant"] = ["self-unmap"]
    if flip(rng, 0.3):
        base["--max-preemptions"] = ["1"]
    touched = set()
    for _ in range(rng.randint(1, 3)):
        opt = rng.choice(["--max-states", "--max-preemptions", "--depth", "--runs", "--seed",
                          "--mutant", "--ignore", "--trace", "--config", "--bogus", "-x",
                          "--workers", "--resume", "--checkpoint", "--checkpoint-every",
                          "--random-walk", "--dask", "--dask-timeout"])  # fmt: skip
        touched.add(opt)
        value = rng.choice(["-1", "0", "x", "1.5", "", "0x10", "1e3", " 3", "None", "-0"])
        if opt in ("--max-states", "--max-preemptions", "--seed", "--depth"):
            value = rng.choice([value, str(10 ** rng.randint(9, 40))])  # huge: still a bound
            if opt == "--depth":  # a deep PCT run is a long one: keep it short
                base.setdefault("--runs", ["2"])
        if opt == "--mutant":
            value = rng.choice(["nope", "SELF-UNMAP", ""])
        if opt == "--workers":
            value = rng.choice([value, "2", str(10 ** rng.randint(3, 30))])
        if opt == "--dask":  # nothing listens on port 1: refused, or not reached in 0.2 s
            value = rng.choice([value, "tcp://127.0.0.1:1", "nonsense://x:1", "127.0.0.1"])
            base.setdefault("--dask-timeout", ["0.2"])
        if opt == "--dask-timeout":  # short, or refused: the fuzz waits for no scheduler
            value = rng.choice(["0", "-1", "x", "nan", "", "0.1", "inf"])
        if opt == "--random-walk":
            base[opt] = []
            base.setdefault("--runs", ["2"])
            continue
        if opt in ("--trace", "--resume", "--checkpoint"):
            out, kind = odd_file(rng, tmp, b"{}", ".json")
            value = str(out if kind != "missing" else tmp / "no" / "t.json")
            touched |= file_names(Path(value))
        base[opt] = [] if flip(rng, 0.1) else [value]  # a missing value too
    argv = ["explore", str(RACE)]
    items = list(base.items())
    rng.shuffle(items)
    for opt, values in items:
        argv += [opt, *values]
    if flip(rng, 0.2):
        argv = argv[: rng.randrange(2, len(argv) + 1)]
    return Case(argv, touched | set(base) | {"SCENARIO"}, [" ".join(argv[2:])])


OPTIONS = {
    "translate": ["--image", "--mode", "--cr3", "--example", "--json", "--access", "--cpl"],
    "walk": ["--image", "--mode", "--cr3", "--example", "--json", "--maxphyaddr"],
    "config": ["--board", "-f", "--fragment", "--json"],
    "run": ["--json", "--log", "--no-time", "--seed"],
    "map": ["--step", "--svg", "--json"],
    "explore": ["--max-states", "--pct", "--runs", "--trace", "--mutant"],
    "replay": ["--scenario"],
    "menuconfig": ["--board", "-o", "--output"],
    "compare": ["--policy", "--board", "--json", "--svg", "--no-timing"],
    "quiz": ["--seed", "--mode", "--level", "--answers", "--json", "--image-out"],
    "view": ["--out", "--scenario", "--max-steps"],
}


def gen_argv(rng: random.Random, tmp: Path, bases: dict[str, Any]) -> Case:
    command = rng.choice([*OPTIONS, "nope", "", "-h", "--version", "--bogus", "RUN"])
    pool = OPTIONS.get(command, ["--json"]) + ["--bogus", "-", "--", "-x", "--json=1"]
    values = ["", "0", "-1", "x", "qemu_x86_64", str(RACE), str(tmp), os.devnull,
              str(tmp / "missing.toml"), os.fsdecode(b"\xff.toml"), "--", "ünï", "1" * 50]  # fmt: skip
    argv = [command] if command else []
    for _ in range(rng.randint(0, 5)):
        argv.append(rng.choice(pool) if flip(rng, 0.5) else rng.choice(values))
    if command == "config" and "--board" not in argv and flip(rng, 0.7):
        argv += ["--board", "qemu_x86_64"]
    if command == "run":  # not all the bundled scenarios (no path): a long run, not a hang
        argv.append(str(RACE))
    if command == "view":  # the page goes to the case's folder, not to the current directory
        argv += ["--max-steps", "100", "--out", str(tmp / "argv-view.html")]
    names = {a for a in argv if a} | {display_path(a) for a in argv if a} | set(pool)
    names |= {"command", "VADDR", "SCENARIO", "--image", "--board", "FILE"}
    return Case(argv, names, ["argv"])


GENERATORS: dict[str, Callable[[random.Random, Path, dict[str, Any]], Case]] = {
    "scenario": gen_scenario,
    "trace": gen_trace,
    "kconfig": gen_kconfig,
    "image": gen_image,
    "explore": gen_explore,
    "argv": gen_argv,
}


def make_case(kind: str, seed: int, tmp: Path, bases: dict[str, Any]) -> Case:
    """Case ``seed`` of ``kind``: the same on every run (its generator's only randomness)."""
    rng = random.Random(f"mmusim-fuzz/{kind}/{seed}")
    return GENERATORS[kind](rng, tmp, bases)


# -- running a case ----------------------------------------------------------------------------


class Hang(BaseException):
    """The case ran out of time (a ``BaseException``: no ``except Exception`` swallows it)."""


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Raise ``Hang`` in the main thread after ``seconds``."""

    def on_alarm(signum: int, frame: object) -> None:
        raise Hang(f"no result after {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def check_result(case: Case, code: object, out: str, err: str) -> None:
    about = f"argv={case.argv!r}\nmutations={case.what!r}\nstdout={out[-2000:]!r}\nstderr={err!r}"
    assert code in (0, 1, 2), about
    assert "Traceback" not in err and "Traceback" not in out, about
    assert "internal error" not in err.lower(), about
    if code == 2:
        assert err.startswith("mmusim"), about
        assert ": error: " in err, about
        lines = err.rstrip("\n").split("\n")
        multiline_name = any("\n" in name for name in case.names)
        assert len(lines) == 1 or multiline_name, about
        assert any(name in err for name in case.names if name), about


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The valid inputs the cases mutate (those not bundled): a trace of race_self_abort."""
    path = tmp_path_factory.mktemp("base") / "race.json"
    argv = ["explore", str(RACE), "--mutant", "self-unmap", "--max-states", "200", "--trace"]
    with pytest.MonkeyPatch.context():
        assert main([*argv, str(path)]) == 1
    return {"trace": json.loads(path.read_text())}


ALL_CASES = [(kind, seed) for kind, n in CASES.items() for seed in range(n)]


@pytest.mark.parametrize(("kind", "seed"), ALL_CASES, ids=[f"{k}-{s}" for k, s in ALL_CASES])
def test_fuzz(
    kind: str,
    seed: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    bases: dict[str, Any],
) -> None:
    monkeypatch.chdir(tmp_path)  # relative outputs (.config, traces) land here
    case = make_case(kind, seed, tmp_path, bases)
    capsys.readouterr()
    try:
        with deadline(CASE_SECONDS):
            code: object = main(case.argv)
    except SystemExit as exc:  # argparse: --help, --version, usage errors
        code = exc.code
    out, err = capsys.readouterr()
    check_result(case, code, out, err)


SUBPROCESS_SAMPLE = [("scenario", 3), ("trace", 5), ("kconfig", 7), ("image", 11), ("argv", 13)]


@pytest.mark.parametrize(("kind", "seed"), SUBPROCESS_SAMPLE)
def test_fuzz_in_a_real_process(
    kind: str, seed: int, tmp_path: Path, bases: dict[str, Any]
) -> None:
    case = make_case(kind, seed, tmp_path, bases)
    proc = subprocess.run(
        [sys.executable, "-m", "mmusim", *case.argv],
        capture_output=True,
        cwd=tmp_path,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    out = proc.stdout.decode("utf-8", "backslashreplace")
    err = proc.stderr.decode("utf-8", "backslashreplace")
    check_result(case, proc.returncode, out, err)


# -- regressions: inputs the fuzzer found crashing, kept as plain cases --------------------------

NON_UTF8 = os.fsdecode(b"TMP/bad\xff")  # a file name whose bytes are not UTF-8
RACE_TEXT = str(RACE)

REGRESSIONS: list[tuple[list[str], int, str]] = [
    # --access took any substring of "rwx" ('', 'rw'): a KeyError in walk and translate
    (["walk", "--example", "ia32e", "--access", "", "0x1000"], 2, "argument --access"),
    (["translate", "--example", "pae", "--access", "rw", "0x1000"], 2, "argument --access"),
    # a non-UTF-8 file name in an error line, or on stdout: UnicodeEncodeError on a strict
    # UTF-8 stream (capsys's, or a terminal's); now escaped as display_path does, bad\xff
    (["config", "--board", "qemu_x86_64", "-f", NON_UTF8 + ".conf"], 2, "TMP/bad\\xff.conf"),
    (["replay", NON_UTF8 + ".json"], 2, "TMP/bad\\xff.json"),
    (["explore", RACE_TEXT, "--mutant", "self-unmap", "--trace", NON_UTF8 + ".json"], 1, ""),
    # argparse's own errors about a non-UTF-8 argument: UnicodeEncodeError on a strict stderr
    (["run", os.fsdecode(b"--bogus\xff")], 2, "--bogus\\xff"),
    # a number of more digits than int() reads (4300): a traceback (run, config) or an error
    # that named neither file nor line (explore, replay)
    (["run", "TMP/long.toml"], 2, "TMP/long.toml:3: toml: a number of more than 4300 digits"),
    (["explore", "TMP/long.toml"], 2, "TMP/long.toml:3: toml: a number of more than 4300"),
    (["config", "--board", "qemu_x86", "-f", "TMP/long.conf"], 2, "TMP/long.conf:2: SRAM_SIZE"),
    (["replay", "TMP/long.json"], 2, "TMP/long.json: not a trace: a number of more than 4300"),
    # a scenario whose kernel cannot boot (a stack larger than RAM): a KernelAssert traceback
    (["explore", "TMP/big.toml"], 2, "TMP/big.toml: the kernel does not boot: boot: the kernel"),
    # a file that is not UTF-8 in its third line: the error said line 1 and a byte offset
    (
        ["run", "TMP/latin1.toml"],
        2,
        "TMP/latin1.toml:3: (file): not UTF-8 text: byte 0xe9 at column 12",
    ),
    (["config", "--board", "qemu_x86", "-f", "TMP/latin1.toml"], 2, "TMP/latin1.toml:3: not UTF-8"),
    (["replay", "TMP/latin1.toml"], 2, "TMP/latin1.toml:3: not a trace: not UTF-8 text: byte 0xe9"),
    # a huge file, or one that never ends: MemoryError (or all the memory) reading it whole
    (["run", "TMP/huge.toml"], 2, "TMP/huge.toml:1: (file): cannot read scenario: larger than"),
    (["map", "/dev/zero"], 2, "/dev/zero:1: (file): not text: a NUL byte at column 1"),
    (["replay", "/dev/zero"], 2, "/dev/zero:1: not a trace: not text: a NUL byte at column 1"),
    (["run", "TMP/nul.toml"], 2, "TMP/nul.toml:2: (file): not text: a NUL byte at column 3"),
    (["config", "--board", "qemu_x86", "-f", "TMP/huge.toml"], 2, "TMP/huge.toml: cannot read"),
    (["replay", "TMP/huge.json"], 2, "TMP/huge.json: cannot read: larger than 1,073,741,824 bytes"),
    # a checkpoint is read whole when it begins as one (a search of ten million states writes more
    # than 1 GiB); a huge file that does not is still refused unread
    (
        ["explore", RACE_TEXT, "--resume", "TMP/huge.json"],
        2,
        "--resume: TMP/huge.json: cannot read: larger than 1,073,741,824 bytes",
    ),
    # a --config line that turns off a board line's dependency: the error named only the board
    (["explore", RACE_TEXT, "--config", "# CONFIG_X86_64 is not set"], 2, "--config:1"),
    # a huge PCT --depth: MemoryError, OverflowError or minutes drawing change points
    (["explore", RACE_TEXT, "--pct", "--runs", "2", "--depth", "1000000000"], 2, "--depth"),
    (["explore", RACE_TEXT, "--pct", "--runs", "2", "--depth", str(10**30)], 2, "--depth"),
]


@pytest.mark.parametrize(("argv", "expected", "named"), REGRESSIONS)
def test_fuzz_regression(
    argv: list[str],
    expected: int,
    named: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [a.replace("TMP", str(tmp_path)) for a in argv]
    long = "9" * 5000
    (tmp_path / "long.toml").write_text(f'[scenario]\nname = "x"\nseed = {long}\n')
    (tmp_path / "long.conf").write_text(f"# a number\nCONFIG_SRAM_SIZE={long}\n")
    (tmp_path / "long.json").write_text(f'{{"format": {long}}}')
    for name, size in (("huge.toml", 17 << 20), ("huge.json", 3 << 30)):  # sparse files
        (tmp_path / name).touch()
        os.truncate(tmp_path / name, size)
    (tmp_path / "nul.toml").write_bytes(b"# a\n# \0\n")
    (tmp_path / "latin1.toml").write_bytes(b'[scenario]\n\nname = "caf\xe9"\n')
    big = RACE.read_text().replace("stack_a = { size = 4096 }", "stack_a = { size = 1e23 }")
    (tmp_path / "big.toml").write_text(big.replace("1e23", str(10**23)))
    try:
        code: object = main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    check_result(Case(argv, {named.replace("TMP", str(tmp_path))}), code, out, err)
    assert code == expected, err
    if expected == 1:  # the trace: replay it, its name on stdout
        assert main(["replay", argv[-1]]) == 1
        assert "bad\\xff.json" in capsys.readouterr().out


def default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_an_interrupted_run_is_one_line_and_exit_130(tmp_path: Path) -> None:
    """Ctrl-C in the middle of a long search: no traceback, no trace file, exit code 130."""
    trace = tmp_path / "t.json"
    argv = ["explore", str(RACE), "--pct", "--runs", "100000000", "--trace", str(trace)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mmusim", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        # as from a terminal: a test run in a background job of a shell (`.ci/run &`) has SIGINT
        # ignored, which its children inherit, and then Python raises no KeyboardInterrupt
        preexec_fn=default_sigint,
    )
    try:
        assert proc.stdout is not None
        time.sleep(2)  # imported and searching by now (the search would take hours)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert err == b"mmusim explore: interrupted\n"
    assert not trace.exists()
