"""The ``mmusim translate`` and ``mmusim walk`` commands, including every bad-input path."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import mmusim
from mmusim.cli import COMMANDS, build_parser, main
from mmusim.examples import EXAMPLES, build
from mmusim.hw import PteFlags


@pytest.fixture
def ia32e_image(tmp_path: Path) -> Path:
    path = tmp_path / "ia32e.img"
    path.write_bytes(EXAMPLES["ia32e"].load())
    return path


@pytest.fixture
def ia32e(ia32e_image: Path) -> list[str]:
    """The machine options for the ia32e example as a file: image, mode and CR3."""
    return ["--image", str(ia32e_image), "--mode", "ia32e", "--cr3", "0x1000"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        rc = main(list(argv))
    except SystemExit as exc:  # argparse errors
        rc = int(exc.code or 0)
    out, err = capsys.readouterr()
    return rc, out, err


def test_translate_json_success_and_faults(
    capsys: pytest.CaptureFixture[str], ia32e: list[str]
) -> None:
    rc, out, err = run(
        capsys,
        "translate",
        *ia32e,
        "--nxe",
        "--json",
        "0x100010",
        "0x200ff8",
        "1056776",
        "0x456789",
        "0x800000000000",
    )
    assert rc == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows[0] == {"vaddr": 0x100010, "ok": True, "paddr": 0x10010, "page_size": 4096}
    assert rows[1] == {
        "vaddr": 0x200FF8,
        "ok": False,
        "vector": 14,
        "error_code": 0,
        "cr2": 0x200FF8,
    }
    assert rows[2] == {
        "vaddr": 0x102008,
        "ok": False,
        "vector": 14,
        "error_code": 0,
        "cr2": 0x102008,
    }
    assert rows[3] == {"vaddr": 0x456789, "ok": True, "paddr": 0x56789, "page_size": 2 << 20}
    assert rows[4] == {"vaddr": 0x800000000000, "ok": False, "vector": 13, "error_code": 0}


def test_translate_rights_cpl3_and_wp(capsys: pytest.CaptureFixture[str], ia32e: list[str]) -> None:
    base = ["translate", *ia32e, "--json"]
    _, out, _ = run(capsys, *base, "--cpl", "3", "0x100000")
    assert json.loads(out)["error_code"] == 0x5  # P U/S: supervisor page at CPL 3
    _, out, _ = run(capsys, *base, "--access", "w", "--wp", "0x100000")
    assert json.loads(out)["error_code"] == 0x3  # P W: read-only page, CR0.WP=1
    _, out, _ = run(capsys, *base, "--access", "w", "0x100000")
    assert json.loads(out)["ok"] is True  # CR0.WP=0: supervisor may write a read-only page
    _, out, _ = run(capsys, *base, "--access", "x", "--nxe", "0x101000")
    assert json.loads(out)["error_code"] == 0x11  # P I/D: NX page


def test_image_out_records_accessed_and_dirty(
    capsys: pytest.CaptureFixture[str], ia32e_image: Path, ia32e: list[str], tmp_path: Path
) -> None:
    out_path = tmp_path / "after.img"
    rc, _, err = run(
        capsys,
        "translate",
        *ia32e,
        "--access",
        "w",
        "--nxe",
        "--image-out",
        str(out_path),
        "0x300100",
    )
    assert rc == 0, err
    before, after = ia32e_image.read_bytes(), out_path.read_bytes()
    assert len(after) == len(before)
    # The PTE of 0x300000 is PT[256] of the table at 0x5000 (see mmusim/examples.py).
    pte_before = int.from_bytes(before[0x5800:0x5808], "little")
    pte_after = int.from_bytes(after[0x5800:0x5808], "little")
    assert pte_before & (PteFlags.A | PteFlags.D) == 0
    assert pte_after == pte_before | PteFlags.A | PteFlags.D
    # D is never set in a table pointer; A is.
    pml4e = int.from_bytes(after[0x1000:0x1008], "little")
    assert pml4e & PteFlags.A and not pml4e & PteFlags.D


def test_walk_text_names_levels_and_error_bits(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(
        capsys, "walk", "--example", "ia32e", "--cpl", "3", "--access", "w", "0x100000"
    )
    assert rc == 0
    assert "PML4E  @ 0x00001000" in out and "PTE    @ 0x00004800" in out
    assert "error code 0x7 (P W/R U/S)" in out
    assert "P = 1  protection violation" in out and "U/S = 1  user-mode access" in out


def test_walk_decodes_bit7_by_level(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "walk", "--example", "ia32e", "0x456789")
    pde = next(line for line in out.splitlines() if line.strip().startswith("PDE"))
    assert "PS" in pde and "=> physical address 0x56789 (2M page)" in out


def test_walk_example_without_address_walks_all(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "walk", "--example", "32")
    assert rc == 0
    assert out.count("## ") == len(EXAMPLES["32"].addresses)
    assert "(4M page)" in out


def test_walk_json(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "walk", "--example", "pae", "--json", "0x201000")
    obj = json.loads(out)
    assert obj["ok"] and obj["paddr"] == 0x20000
    assert [e["level"] for e in obj["entries"]] == ["PDPT", "PD", "PT"]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (
            ["--image", "{missing}", "--mode", "ia32e", "--cr3", "0x1000", "0x1"],
            "--image: cannot read",
        ),
        (
            ["--image", "{short}", "--mode", "ia32e", "--cr3", "0x0", "0x1"],
            "--image: image is 100 bytes",
        ),
        (["--image", "{odd}", "--mode", "ia32e", "--cr3", "0x0", "0x1"], "not a multiple of 4096"),
        (
            ["--image", "{img}", "--mode", "ia32e", "--cr3", "0x90000", "0x1"],
            "--cr3: 0x90000: root table is outside the image",
        ),
        (
            ["--image", "{img}", "--mode", "ia32e", "--cr3", "0x1zz", "0x1"],
            "--cr3: malformed number",
        ),
        (
            ["--image", "{img}", "--mode", "ia32e", "--cr3", "0x1000", "12ab"],
            "VADDR: malformed number",
        ),
        (
            ["--image", "{img}", "--mode", "ia64", "--cr3", "0x1000", "0x1"],
            "--mode: invalid choice",
        ),
        (
            ["--image", "{img}", "--mode", "pae", "--cr3", "0x1000", "--pse", "0x1"],
            "--pse: CR4.PSE has no effect",
        ),
        (
            ["--image", "{img}", "--mode", "32", "--cr3", "0x1000", "--nxe", "0x1"],
            "--nxe: 32-bit paging has no XD bit",
        ),
        (
            ["--image", "{img}", "--mode", "32", "--cr3", "0x1000", "0x100000000"],
            "VADDR: 0x100000000 is not a 32-bit",
        ),
        (
            ["--image", "{img}", "--mode", "ia32e", "--cr3", "0x1000", "--maxphyaddr", "60", "0x1"],
            "--maxphyaddr: 60 is outside 32..52",
        ),
        (
            ["--image", "{img}", "--mode", "ia32e", "--cr3", "0x10000000000", "0x1"],
            "--cr3: 0x10000000000 sets reserved bits",
        ),
        (
            ["--image", "{img}", "--mode", "ia32e", "--cr3", "0x1000", "--ac", "0x1"],
            "--ac: EFLAGS.AC only matters with --smap",
        ),
        (
            ["--image", "{img}", "--mode", "ia32e", "--cr3", "0x1000", "--cpl", "1", "0x1"],
            "--cpl: invalid choice",
        ),
        (["--image", "{img}", "--mode", "ia32e", "--cr3", "0x1000"], "VADDR: give at least one"),
        (["--image", "{img}", "--cr3", "0x1000", "0x1"], "--mode: required"),
        (["--image", "{img}", "--mode", "ia32e", "0x1"], "--cr3: required"),
        (["--mode", "ia32e", "--cr3", "0x1000", "0x1"], "--image: required"),
        (["--example", "ia32e", "--image", "{img}", "0x1"], "--example: give either"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    ia32e_image: Path,
    argv: list[str],
    needle: str,
) -> None:
    (tmp_path / "short.img").write_bytes(bytes(100))
    (tmp_path / "odd.img").write_bytes(bytes(4096 + 7))
    paths = {
        "missing": tmp_path / "nope.img",
        "short": tmp_path / "short.img",
        "odd": tmp_path / "odd.img",
        "img": ia32e_image,
    }
    argv = [a.format(**paths) for a in argv]
    rc, out, err = run(capsys, "translate", *argv)
    assert rc == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("mmusim translate: error: ")
    assert needle in err, err
    assert "Traceback" not in err


def python_m_mmusim(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m mmusim ARGV`` in a real process."""
    return subprocess.run(
        [sys.executable, "-m", "mmusim", *argv], capture_output=True, text=True, check=False
    )


def test_bad_input_via_real_process_has_no_traceback(tmp_path: Path) -> None:
    proc = python_m_mmusim(
        "walk", "--image", str(tmp_path / "x"), "--mode", "pae", "--cr3", "0", "0x1"
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("mmusim walk: error: --image: cannot read")
    assert "Traceback" not in proc.stderr


def test_python_dash_m_mmusim_is_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    proc = python_m_mmusim("--help")
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout.startswith("usage: mmusim ")
    assert (0, proc.stdout, "") == run(capsys, "--help")


def test_map_cli_keeps_the_documented_names() -> None:
    """docs/memmap.md once showed ``from mmusim.map_cli import run_steps, scenario_kernel``."""
    import mmusim.scenario
    from mmusim.map_cli import run_steps, scenario_kernel, scenario_loader

    assert run_steps is mmusim.scenario.run_steps
    assert scenario_kernel is mmusim.scenario.scenario_kernel
    assert scenario_loader is mmusim.scenario.scenario_loader


def test_walk_requires_address_without_example(
    capsys: pytest.CaptureFixture[str], ia32e: list[str]
) -> None:
    rc, _, err = run(capsys, "walk", *ia32e)
    assert rc == 2 and "VADDR: give the linear address" in err


@pytest.mark.parametrize("mode", sorted(EXAMPLES))
def test_bundled_examples_match_their_builder(mode: str) -> None:
    image, cr3 = build(mode)
    assert cr3 == EXAMPLES[mode].cr3
    assert image == EXAMPLES[mode].load(), "run `python -m mmusim.examples` to regenerate"


# -- file names that are not UTF-8 --------------------------------------------------------------

NON_UTF8_SCENARIO = """\
[scenario]
board = "qemu_x86"
[bodies]
main = [ { op = "push", bytes = 64 } ]
"""


def non_utf8_file(tmp_path: Path, stem: bytes, text: str) -> Path:
    """A file in ``tmp_path`` whose name has the byte 0xff (a lone surrogate in Python)."""
    path = tmp_path / os.fsdecode(stem + b"\xff.toml")
    path.write_text(text)
    return path


def test_run_json_escapes_a_non_utf8_file_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = non_utf8_file(tmp_path, b"bad", NON_UTF8_SCENARIO)
    assert main(["run", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    out.encode("utf-8")  # strict: no lone surrogates
    assert "\\ud" not in out  # nor escaped ones (invalid for strict JSON readers)
    row = json.loads(out)
    assert row["name"] == "bad\\xff"
    assert row["path"] == str(tmp_path / "bad\\xff.toml")
    assert main(["run", "--no-time", str(path)]) == 0
    capsys.readouterr().out.encode("utf-8")


def test_a_scenario_error_escapes_a_non_utf8_file_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = non_utf8_file(tmp_path, b"syn", "x = [")
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mmusim run: error: {tmp_path / 'syn'}\\xff.toml:1: toml: syntax error")


def test_map_svg_of_a_non_utf8_file_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = non_utf8_file(tmp_path, b"bad", NON_UTF8_SCENARIO)
    svg = tmp_path / os.fsdecode(b"map\xff.svg")
    assert main(["map", str(path), "--svg", str(svg)]) == 0
    capsys.readouterr()
    text = svg.read_text(encoding="utf-8")
    assert "<title>bad\\xff.toml: kernel address space after the run" in text


# -- images that are not small regular files (issue 11) -------------------------------------


def sparse_image(tmp_path: Path, size: int) -> Path:
    """The ia32e example at the start of a sparse file of ``size`` bytes (made by truncate)."""
    path = tmp_path / "sparse.img"
    with path.open("wb") as f:
        f.write(EXAMPLES["ia32e"].load())
        f.truncate(size)
    return path


def test_translate_on_a_1gib_sparse_image_reads_only_what_it_walks(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """It once read (and scanned) the whole file: 27 s and 1 GiB of memory for 1 GiB."""
    path = sparse_image(tmp_path, 1 << 30)
    start = time.perf_counter()
    rc, out, err = run(
        capsys, "translate", "--image", str(path), "--mode", "ia32e", "--cr3", "0x1000",
        "--nxe", "0x204ff8", "0x3fff_f000",
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    assert rc == 0, err
    assert out.splitlines()[0] == "0x204ff8 -> 0x23ff8 (page size 0x1000)"
    assert elapsed < 5, f"{elapsed:.1f} s for a walk on a sparse 1 GiB image"


def test_image_out_of_a_mapped_image_keeps_its_bytes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = sparse_image(tmp_path, 1 << 20)
    out_path = tmp_path / "out.img"
    machine = ["--image", str(path), "--mode", "ia32e", "--cr3", "0x1000"]
    rc, _, err = run(capsys, "translate", *machine, "--image-out", str(out_path), "0x100000")
    assert rc == 0, err
    before, after = path.read_bytes(), out_path.read_bytes()
    assert len(after) == len(before) == 1 << 20
    changed = [i for i in range(len(before)) if before[i] != after[i]]
    assert changed and all(0x1000 <= i < 0x6000 for i in changed)  # only A bits in the tables


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda p: p.mkdir(), "is a directory; give a raw memory image file"),
        (os.mkfifo, "is a FIFO; give a raw memory image file"),
        (None, "'/dev/zero' is a character device; give a raw memory image file"),
    ],
)
def test_image_that_is_not_a_regular_file_is_refused_unread(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, make: Any, needle: str
) -> None:
    """A FIFO would block the read, /dev/zero would fill memory until the process died."""
    path = Path("/dev/zero")
    if make is not None:
        path = tmp_path / "image"
        make(path)
    rc, out, err = run(
        capsys, "walk", "--image", str(path), "--mode", "ia32e", "--cr3", "0x1000", "0x1"
    )
    assert rc == 2
    assert out == ""
    assert err == f"mmusim walk: error: --image: {needle}\n" or needle in err
    assert err.startswith("mmusim walk: error: --image: ") and len(err.splitlines()) == 1


def test_image_larger_than_the_physical_address_space_is_refused_by_its_size(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = sparse_image(tmp_path, (1 << 32) + 4096)
    machine = ["--image", str(path), "--mode", "ia32e", "--cr3", "0x1000"]
    rc, _, err = run(capsys, "translate", *machine, "--maxphyaddr", "32", "0x1")
    assert rc == 2
    assert err == (
        "mmusim translate: error: --image: size 0x100001000 is larger than the physical address "
        "space of MAXPHYADDR 32 (at most 0x100000000 bytes)\n"
    )
    # ... and a wrong-sized image of 4 GiB is refused without reading it
    path.open("r+b").truncate((1 << 32) + 7)
    start = time.perf_counter()
    rc, _, err = run(capsys, "translate", *machine, "0x1")
    assert rc == 2 and "not a multiple of 4096" in err
    assert time.perf_counter() - start < 1


# -- --version and unknown options (issue 11) ------------------------------------------------


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "--version")
    assert (rc, out, err) == (0, f"mmusim {importlib.metadata.version('mmusim')}\n", "")


def test_version_falls_back_to_the_module_attribute(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    monkeypatch.setattr(mmusim, "__version__", "9.8.7")
    assert run(capsys, "--version")[:2] == (0, "mmusim 9.8.7\n")


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["--foo"], "mmusim: error: unrecognized arguments: --foo"),
        (["run", "--foo"], "mmusim run: error: unrecognized arguments: --foo"),
        (["explore", "--foo", "x.toml"], "mmusim explore: error: unrecognized arguments: --foo"),
        (["walk", "--example", "ia32e", "--foo", "0x1"], "mmusim walk: error: unrecognized arguments: --foo"),
        ([], "mmusim: error: the following arguments are required: command (see mmusim --help)"),
    ],
)  # fmt: skip
def test_unknown_option_is_named(
    capsys: pytest.CaptureFixture[str], argv: list[str], line: str
) -> None:
    """`mmusim --foo` once said "the following arguments are required: command"."""
    assert run(capsys, *argv) == (2, "", line + "\n")


# -- lazy imports (issue 11) -----------------------------------------------------------------

HEAVY = ("mmusim.kernel", "mmusim.scenario", "kconfiglib", "sortedcontainers", "hypothesis")


@pytest.mark.parametrize(
    "code",
    [
        "import mmusim.cli",
        "from mmusim.cli import main; main(['--help'])",
        "from mmusim.cli import main; main(['walk', '--example', 'ia32e', '0x204ff8'])",
        "from mmusim.cli import main; main(['translate', '--example', 'pae', '0x1'])",
    ],
)
def test_cli_imports_only_what_the_command_needs(code: str) -> None:
    """`mmusim --help` and `mmusim walk` once imported the kernel, kconfiglib and hypothesis."""
    check = f"import sys\ntry:\n    {code}\nexcept SystemExit:\n    pass\n"
    check += f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "[]"


def test_lazy_help_is_the_full_parsers_help() -> None:
    """The lazy parser (stubs with COMMAND_HELP) lists the same help as the full one."""
    assert build_parser("walk").format_help() == build_parser().format_help()
    for _, _, helps in COMMANDS:
        for name in helps:
            assert build_parser(name).format_help() == build_parser().format_help()


# -- the fast paths of a long address list: the same values, lines and errors -----------------


_WORDS = [
    *("0x1000", "0X1f", "0x10_00", "0x1__0_", "1_000", "4096", "010", "0", " 12", "12 ", "\u0663"),
    *("0x", "0x12g", "12ab", "", "-5", "-0x5", "0b1", "0o7", "1e3", "_1", "0x-1", "9" * 5000),
]


@pytest.mark.parametrize("word", _WORDS)
def test_bulk_vaddr_parse_is_parse_int(word: str) -> None:
    """``ParseInts`` gives ``parse_int``'s value, or its error, for every word."""
    import argparse

    from mmusim.cli.common import ParseInts, parse_int

    try:
        expected: int | str = parse_int(word)
    except argparse.ArgumentTypeError as exc:
        expected = str(exc)
    try:
        got: int | str = ParseInts.convert(["0x1", word, "7"])[1]
    except argparse.ArgumentTypeError as exc:
        got = str(exc)
    assert got == expected


def test_a_bad_address_among_many_is_the_first_one_named(
    capsys: pytest.CaptureFixture[str],
) -> None:
    words = [f"{0x100000 + i:#x}" for i in range(5000)]
    words[1234], words[3000] = "-7", "0xzz"
    rc, out, err = run(capsys, "translate", "--example", "32", *words)
    assert (rc, out) == (2, "")
    assert err == "mmusim translate: error: argument VADDR: '-7' is negative\n"
    words[1234], words[3000] = "0x100000000", "0x1" + "0" * 17
    rc, out, err = run(capsys, "translate", "--example", "32", *words)
    assert err == (
        "mmusim translate: error: VADDR: 0x100000000 is not a 32-bit linear address "
        "(32-bit paging)\n"
    )


@pytest.mark.parametrize("mode", ["32", "pae", "ia32e"])
def test_json_line_is_json_dumps_of_the_result(mode: str) -> None:
    """``translate --json`` writes its lines without the encoder: the same text as json.dumps."""
    import random

    from mmusim.hw import Access, ControlState, PhysMem, translate
    from mmusim.render.walk import result_json, result_json_line

    ex = EXAMPLES[mode]
    mem = PhysMem.from_image(ex.load())
    ctl = ControlState.for_mode(mode, ex.cr3, nxe=ex.nxe, pse=ex.pse)
    rng = random.Random(11)
    width = 64 if mode == "ia32e" else 32
    vas = [va for _, va in ex.addresses] + [rng.getrandbits(width) for _ in range(300)]
    vas += [va + off for va in (0x100000, 0x200000) for off in range(0, 0x40000, 0x1001)]
    kinds = set()
    for access in Access:
        for cpl in (0, 3):
            for va in vas:
                res = translate(mem, ctl, va, access, cpl)
                kinds.add(type(res).__name__)
                assert result_json_line(va, res) == json.dumps(result_json(va, res))
    assert kinds >= {"Translation", "PageFault"} | ({"GeneralProtection"} if width == 64 else set())


_MANY = [f"{0x100000 + 8 * i:#x}" if i % 3 else str(0x200000 + i) for i in range(600)]
_EX = ["translate", "--example", "ia32e"]


def _with(i: int, word: str) -> list[str]:
    words = list(_MANY)
    words[i] = word
    return words


@pytest.mark.parametrize(
    "argv",
    [
        _EX + _MANY,
        _EX + ["--json", "--cpl", "3", "--access", "w"] + _MANY,
        _EX + _with(500, "zz"),
        _EX + _with(1, "yy"),
        _EX + _MANY + [""],
        _EX + _with(400, " -5"),
        _EX + ["--bogus"] + _MANY,
        _EX + _MANY[:300] + ["--json"] + _MANY[300:],
        _EX + _MANY[:300] + ["--"] + _MANY[300:],
        _EX + _MANY[:300] + ["-5"] + _MANY[300:],
        _EX + ["--cr3"] + _MANY,
        _EX + ["--access"] + _MANY,
        ["translate", "--example", "32"] + _with(450, "0x100000000"),
        ["translate", *_MANY],
        ["--bogus", "translate", *_MANY],
        ["walk", "--example", "ia32e", *_MANY],
    ],
)
def test_a_long_address_list_parses_as_argparse_would(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    """``main`` holds a long run of trailing addresses back from argparse (it is slow per word):
    the output, errors and exit code are those of argparse given every word."""
    fast = run(capsys, *argv)
    monkeypatch.setattr("mmusim.cli._HOLD_BACK_MIN", 10**9)
    assert run(capsys, *argv) == fast


def test_a_long_address_list_is_held_back_from_argparse() -> None:
    from mmusim.cli import _hold_back_addresses

    assert _hold_back_addresses("translate", _EX + _MANY) == (_EX + _MANY[:1], _MANY[1:])
    assert _hold_back_addresses("translate", _EX + _MANY[:10]) == (_EX + _MANY[:10], [])
    assert _hold_back_addresses("walk", _EX + _MANY) == (_EX + _MANY, [])
