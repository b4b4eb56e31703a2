"""``mmusim map``: the kernel address space as rows, text and SVG (mmusim.render.memmap, cli.map)."""

from __future__ import annotations

import argparse
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from helpers import X86_64_SMP, boot_kernel
from mmusim.cli.common import Parser
from mmusim.cli.map import add_map_command
from mmusim.kernel import K_FOREVER, Kernel, KernelAssert, Op, StackObject
from mmusim.kernel.geometry import PAGE
from mmusim.render.memmap import MapRow, human_size, memory_map, render_svg, render_text
from mmusim.scenario import LoadKernel, run_steps, scenario_kernel, scenario_loader

SVG_NS = "{http://www.w3.org/2000/svg}"

MAPPED = X86_64_SMP
# qemu_x86-like: ia32 PAE, one CPU, no mapped stacks (the legacy in-object guard page instead).
UNMAPPED = dict(
    X86_64=False,
    X86_PAE=True,
    SMP=False,
    THREAD_STACK_MEM_MAPPED=False,
    X86_STACK_PROTECTION=True,
    USERSPACE=True,
    PRIVILEGED_STACK_SIZE=4096,
    THREAD_STACK_INFO=True,
    INIT_STACKS=True,
    SRAM_BASE_ADDRESS=0x100000,
    SRAM_SIZE=4096,
)

STACKS = (
    StackObject("user_stack", 8192, True),
    StackObject("kstack", 4096, False),
)
BODIES = {
    "sleeper": (Op("push", n=64), Op("sleep", n=K_FOREVER)),
    "short": (Op("push", n=16),),
}
# t: a live user thread on a user-capable stack; k: a kernel thread that returns; m: k_mem_map.
MAIN = (
    Op("create", target="t", stack="user_stack", label="sleeper", prio=-1, n=0, user=True),
    Op("create", target="k", stack="kstack", label="short", prio=-1, n=0),
    Op("k_mem_map", n=2 * PAGE, target="m", user=True),
)


def make_kernel(cfg: dict[str, Any] = MAPPED, main: tuple[Op, ...] = MAIN) -> Kernel:
    return boot_kernel(cfg, main, BODIES, STACKS)


def run_kernel(cfg: dict[str, Any] = MAPPED, main: tuple[Op, ...] = MAIN) -> Kernel:
    k = make_kernel(cfg, main)
    k.run()
    return k


def row_at(rows: list[MapRow], start: int, end: int) -> MapRow:
    found = [r for r in rows if r.start == start and r.end == end]
    assert len(found) == 1, f"no single row [{start:#x}, {end:#x}):\n{render_text(rows)}"
    return found[0]


def check_structure(k: Kernel, rows: list[MapRow]) -> None:
    """Sorted, non-overlapping, non-empty rows; those in the window cover it exactly."""
    lo, hi = k.vm_base, k.vm_base + k.vm_size
    for a, b in zip(rows, rows[1:], strict=False):
        assert a.end <= b.start, f"{a} overlaps or precedes {b}"
    assert all(r.start < r.end for r in rows)
    inside = [r for r in rows if lo <= r.start < hi]
    assert inside[0].start == lo and inside[-1].end == hi
    for a, b in zip(inside, inside[1:], strict=False):
        assert a.end == b.start, f"gap between {a} and {b}"


def check_stack_rows(k: Kernel, rows: list[MapRow]) -> int:
    """Every live mapped stack: front guard | privilege stack or reserved | buffer | rear guard."""
    checked = 0
    for t in k.threads.values():
        m = t.stack_info.mapped
        if m.addr is None or t.dead:
            continue
        assert t.stack is not None
        front = row_at(rows, m.addr - PAGE, m.addr)
        rear = row_at(rows, m.addr + m.sz, m.addr + m.sz + PAGE)
        for guard, side in ((front, "front"), (rear, "rear")):
            assert (guard.rights, guard.kind) == ("---", "guard")
            assert guard.owner == f"{side} guard of {t.name} (thread stack)"
        reserved = row_at(rows, m.addr, t.stack_info.start)
        user_capable = t.stack.user_capable
        assert reserved.kind == ("priv stack" if user_capable else "reserved")
        assert reserved.rights == "rw-"  # supervisor only, even for a user thread
        buf = row_at(rows, t.stack_info.start, m.addr + m.sz)
        assert buf.kind == "stack" and buf.owner.startswith(f"stack of {t.name} ")
        assert buf.rights == ("rw-u" if t.is_user else "rw-")
        checked += 1
    return checked


# -- rows -------------------------------------------------------------------------------------


def test_live_mapped_stacks_show_guard_reserved_buffer_guard() -> None:
    k = run_kernel()
    rows = memory_map(k)
    # t (user, sleeping) and the two idle threads are alive and mapped.
    assert check_stack_rows(k, rows) == 3
    t = k.threads["t"]
    m = t.stack_info.mapped.addr
    assert m is not None and t.stack_info.start - m == 4096  # PRIVILEGED_STACK_SIZE
    priv = row_at(rows, m, t.stack_info.start)
    assert priv.owner == "privilege stack of t"


def test_rows_are_sorted_and_cover_the_vm_window_exactly() -> None:
    k = run_kernel()
    rows = memory_map(k)
    check_structure(k, rows)
    assert rows[0].start == k.vm_base and rows[-1].end == k.vm_base + k.vm_size
    # Neighbours with the same rights and owner are merged into one row.
    for a, b in zip(rows, rows[1:], strict=False):
        assert (a.rights, a.kind, a.owner) != (b.rights, b.kind, b.owner)


def test_kernel_image_rows() -> None:
    k = run_kernel()
    rows = memory_map(k)
    text_lo, text_hi = k.image["text"]
    data_lo, data_hi = k.image["data"]
    assert row_at(rows, text_lo, text_hi).rights == "r-x"
    assert row_at(rows, data_lo, data_hi).rights == "rw-"
    for obj in (*k.boot_stacks.values(), *k.stacks.values()):
        if not obj.name.startswith("z_interrupt_stacks"):
            assert row_at(rows, obj.addr, obj.addr + obj.obj_len).kind == "stack obj"
    backing = row_at(rows, STACKS[0].addr, STACKS[0].addr + STACKS[0].obj_len)
    assert backing.owner == (
        f"stack object user_stack (backs t's stack at {k.threads['t'].stack_info.mapped.addr:#x})"
    )


def test_k_mem_map_region_is_guard_mapping_guard_with_user_marker() -> None:
    k = run_kernel()
    rows = memory_map(k)
    r = k.mappings["m"]
    front = row_at(rows, r.addr - PAGE, r.addr)
    body = row_at(rows, r.addr, r.addr + r.size)
    rear = row_at(rows, r.addr + r.size, r.addr + r.size + PAGE)
    assert (front.kind, front.rights, front.owner) == (
        "guard",
        "---",
        "front guard of m (k_mem_map)",
    )
    assert (body.kind, body.rights, body.owner) == ("anon", "rw-u", "k_mem_map m")
    assert (rear.kind, rear.rights, rear.owner) == ("guard", "---", "rear guard of m (k_mem_map)")


def test_pending_deferred_cleanup_is_marked() -> None:
    k = run_kernel()
    addr = k.cleanup.stack_addr  # main returned last: its stack waits in the slot
    assert addr is not None and k.cleanup.thread is k.threads["main"]
    rows = memory_map(k)
    pending = [r for r in rows if addr - PAGE <= r.start < addr + k.cleanup.stack_sz + PAGE]
    assert [r.kind for r in pending] == ["guard", "reserved", "stack", "guard"]
    assert all("dead, unmap pending" in r.owner for r in pending)
    # k returned earlier: the pending slot was finished, its stack unmapped, its object unmapped.
    kstack = k.stacks["kstack"]
    assert row_at(rows, kstack.addr, kstack.addr + kstack.obj_len).owner == (
        "stack object kstack (not mapped)"
    )


def test_leaked_mapping_is_shown_as_dead_still_mapped() -> None:
    main = (
        Op("create", target="t", stack="user_stack", label="sleeper", prio=-1, n=0),
        Op("abort", target="t"),  # pre-fix do_thread_cleanup ignores t: its mapping leaks
    )
    k = run_kernel({**MAPPED, "SIM_ABORT_CLEANUP_LEAK": True}, main)
    t = k.threads["t"]
    m, sz = t.stack_info.mapped.addr, t.stack_info.mapped.sz
    assert t.dead and m is not None
    rows = memory_map(k)
    buf = row_at(rows, t.stack_info.start, m + sz)
    assert buf.owner == "stack of t (alias of user_stack; dead, still mapped)"
    assert row_at(rows, m - PAGE, m).rights == "---"


def test_map_holds_at_every_step() -> None:
    """Mid-operation states (PTEs written one by one under z_mm_lock) still give a well-formed
    map, and a guard page recorded by a region is never present."""
    k = make_kernel()
    steps = 0
    while run_steps(k, 1):
        steps += 1
        rows = memory_map(k)
        check_structure(k, rows)
        assert all(r.rights == "---" for r in rows if r.kind == "guard"), render_text(rows)
    assert k.quiescent() and steps == k.steps > 20


def test_legacy_unmapped_stacks_live_in_noinit_with_read_only_guard() -> None:
    k = run_kernel(UNMAPPED, MAIN[:2])  # no k_mem_map: its guards are not stack guards
    rows = memory_map(k)
    check_structure(k, rows)
    noinit_lo, noinit_hi = k.image[".noinit"]
    stack_kinds = {"stack", "priv stack", "reserved", "guard", "stack obj"}
    for r in rows:
        if r.kind in stack_kinds:
            assert noinit_lo <= r.start and r.end <= noinit_hi, r
    guards = [r for r in rows if r.kind == "guard"]
    assert guards and all(r.rights == "r--" for r in guards)  # present, read-only, NX
    assert all(r.owner.startswith("legacy guard (read-only) of ") for r in guards)
    assert not any(r.kind == "stack obj" for r in rows)
    # Every thread's object: legacy guard page first, then (user-capable) privilege stack, buffer.
    for t in k.threads.values():
        assert t.stack is not None
        a = t.stack.addr
        assert row_at(rows, a, a + PAGE).owner.startswith(f"legacy guard (read-only) of {t.name}")
    t = k.threads["t"]
    assert row_at(rows, t.stack.addr + PAGE, t.stack_info.start).kind == "priv stack"  # type: ignore[union-attr]
    assert row_at(rows, t.stack_info.start, t.stack_info.start + t.stack_info.size).rights == "rw-u"


def test_legacy_guard_not_yet_armed_is_not_a_guard() -> None:
    k = make_kernel(UNMAPPED, ())  # nothing created on user_stack
    rows = memory_map(k)
    obj = k.stacks["user_stack"]
    first = row_at(rows, obj.addr, obj.addr + PAGE)
    assert (first.kind, first.rights) == ("reserved", "rw-")
    assert "not armed" in first.owner


# -- text -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "text"),
    [(4096, "4K"), (0x200000, "2M"), (0x7E9000, "8100K"), (1 << 30, "1G"), (100, "100B")],
)
def test_human_size(n: int, text: str) -> None:
    assert human_size(n) == text


def test_render_text_is_an_aligned_table() -> None:
    k = run_kernel()
    rows = memory_map(k)
    lines = render_text(rows).splitlines()
    assert len(lines) == len(rows) + 1
    perm = lines[0].index("PERM")
    kind = lines[0].index("KIND")
    for line, r in zip(lines[1:], rows, strict=True):
        assert line.startswith(f"0x{r.start:08x}-0x{r.end:08x}")
        assert line[perm:].startswith(r.rights) and line[kind:].startswith(r.kind)
        assert line.endswith(r.owner)
    t = k.threads["t"]
    m = t.stack_info.mapped.addr
    assert m is not None
    (line,) = [x for x in lines if x.startswith(f"0x{m - PAGE:08x}-0x{m:08x} ")]
    assert line.split()[1:4] == ["4K", "---", "guard"]
    assert line.endswith("  front guard of t (thread stack)")


# -- SVG --------------------------------------------------------------------------------------


def test_svg_parses_and_marks_every_guard_page() -> None:
    k = run_kernel()
    rows = memory_map(k)
    svg = render_svg(rows, "test <map> & more")
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG_NS}svg"
    texts = [e.text for e in root.iter(f"{SVG_NS}text")]
    guard_pages = sum(r.size // PAGE for r in rows if r.kind == "guard")
    assert guard_pages == 10  # two each: idle 00, idle 01, t, main (unmap pending), m
    assert texts.count("GUARD") == guard_pages
    groups = [g for g in root.iter(f"{SVG_NS}g") if "kind-guard" in g.get("class", "")]
    assert len(groups) == guard_pages
    for g in groups:
        rect = g.find(f"{SVG_NS}rect")
        assert rect is not None and rect.get("fill") == "url(#guard-hatch)"
    assert root.find(f"{SVG_NS}defs/{SVG_NS}pattern[@id='guard-hatch']") is not None
    free = [g for g in root.iter(f"{SVG_NS}g") if g.get("class") == "row kind-free"]
    assert free and all(g.find(f"{SVG_NS}rect").get("fill") == "#f0f0f0" for g in free)  # type: ignore[union-attr]
    assert root.findtext(f"{SVG_NS}title") == "test <map> & more"


def test_svg_draws_high_addresses_on_top() -> None:
    rows = memory_map(run_kernel())
    root = ET.fromstring(render_svg(rows, "t"))
    bands = [g.find(f"{SVG_NS}rect") for g in root.iter(f"{SVG_NS}g")]
    ys = [int(b.get("y", "0")) for b in bands if b is not None]
    assert len(ys) == len(rows) and ys == sorted(ys)  # drawn top-down from the last row


def test_output_is_deterministic() -> None:
    a, b = run_kernel(), run_kernel()
    rows_a, rows_b = memory_map(a), memory_map(b)
    assert rows_a == rows_b == memory_map(a)
    assert render_text(rows_a) == render_text(rows_b)
    assert render_svg(rows_a, "x").encode() == render_svg(rows_b, "x").encode()


# -- the command ------------------------------------------------------------------------------


def _cli(
    tmp_path: Path, fail: Exception | None = None
) -> tuple[argparse.ArgumentParser, list[Any]]:
    calls: list[Any] = []

    def build(path: str) -> Kernel:
        calls.append(path)
        if fail is not None:
            raise fail
        return make_kernel()

    return _map_parser(scenario_loader(build)), calls


def _map_parser(load_kernel: LoadKernel) -> argparse.ArgumentParser:
    """``mmusim`` with only the ``map`` subcommand, mapping what ``load_kernel`` makes."""
    parser = Parser(prog="mmusim")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    add_map_command(sub, load_kernel)
    return parser


def _main(parser: argparse.ArgumentParser, argv: list[str]) -> int:
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_cli_prints_the_map_after_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser, calls = _cli(tmp_path)
    assert _main(parser, ["map", "demo.yaml"]) == 0
    out = capsys.readouterr().out
    assert calls == ["demo.yaml"]
    assert out == render_text(memory_map(run_kernel()))


def test_cli_step_json_and_svg(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser, _ = _cli(tmp_path)
    svg = tmp_path / "map.svg"
    assert _main(parser, ["map", "demo.yaml", "--step", "5", "--json", "--svg", str(svg)]) == 0
    doc = json.loads(capsys.readouterr().out)
    k = make_kernel()
    run_steps(k, 5)
    rows = memory_map(k)
    assert doc["steps"] == 5
    assert [(r["start"], r["end"], r["rights"], r["kind"]) for r in doc["rows"]] == [
        (r.start, r.end, r.rights, r.kind) for r in rows
    ]
    root = ET.fromstring(svg.read_text())
    assert root.findtext(f"{SVG_NS}title") == "demo.yaml: kernel address space after step 5"


@pytest.mark.parametrize(
    ("fail", "message"),
    [
        (FileNotFoundError(2, "No such file or directory"), "demo.yaml: No such file or directory"),
        (
            KernelAssert("boot: the kernel image does not fit\n  in SRAM"),
            "demo.yaml: boot: the kernel image does not fit; in SRAM",
        ),
        (
            ValueError("demo.yaml:3: unknown op 'pushh'"),
            "demo.yaml: demo.yaml:3: unknown op 'pushh'",
        ),
    ],
)
def test_cli_errors_are_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fail: Exception, message: str
) -> None:
    parser, _ = _cli(tmp_path, fail)
    assert _main(parser, ["map", "demo.yaml"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"mmusim map: error: {message}\n"


def test_cli_svg_write_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser, _ = _cli(tmp_path)
    bad = tmp_path / "no-such-dir" / "map.svg"
    assert _main(parser, ["map", "demo.yaml", "--svg", str(bad)]) == 2
    err = capsys.readouterr().err
    assert (
        err == f"mmusim map: error: --svg: cannot write {str(bad)!r}: No such file or directory\n"
    )


@pytest.mark.parametrize(
    ("step", "why"), [("x", "'x' is not a number"), ("-1", "'-1' is negative")]
)
def test_cli_bad_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], step: str, why: str
) -> None:
    parser, calls = _cli(tmp_path)
    with pytest.raises(SystemExit) as exc:
        _main(parser, ["map", "demo.yaml", "--step", step])
    assert exc.value.code == 2 and calls == []
    assert capsys.readouterr().err == f"mmusim map: error: argument --step: {why}\n"


def recording(k: Kernel) -> list[tuple[int, str]]:
    """Make ``k`` record every action it performs; returns the (growing) record."""
    seen: list[tuple[int, str]] = []
    perform = k.do

    def do(action: tuple[int, str]) -> None:
        seen.append(action)
        perform(action)

    k.do = do  # type: ignore[method-assign]
    return seen


@pytest.mark.parametrize("seed", [None, 7])
def test_run_steps_follows_the_run_schedule(seed: int | None) -> None:
    """run_steps(k, n, seed=s) takes exactly the first n actions Kernel.run(seed=s) takes."""
    k = make_kernel()
    full = recording(k)
    k.run(seed=seed)
    for n in (0, 1, 17, len(full), len(full) + 50):
        k2 = make_kernel()
        part = recording(k2)
        assert run_steps(k2, n, seed=seed) == min(n, len(full))
        assert part == full[:n]


def test_kernel_assertion_during_the_run_names_the_step(
    capsys: pytest.CaptureFixture[str],
) -> None:
    bad_main = (Op("join", target="nobody"),)
    parser = _map_parser(scenario_loader(lambda path: make_kernel(main=bad_main)))
    assert _main(parser, ["map", "demo.toml"]) == 1  # the scenario's outcome, not bad input
    assert capsys.readouterr().out == (
        "ASSERT  demo.toml: the scenario makes Zephyr assert: no thread named 'nobody' "
        "(in step 1; --step 0 maps the state just before it)\n"
    )


SCENARIO = """\
[scenario]
name = "front"
description = "a thread writes into its front guard"
board = "qemu_x86_64"
config = ["CONFIG_USERSPACE=y", "CONFIG_PRIVILEGED_STACK_SIZE=4096"]

[stacks]
area = { size = 8192, user = true }

[bodies]
body = [ { op = "touch", where = "front_guard" } ]
main = [
    { op = "create", thread = "t", stack = "area", body = "body", prio = -1, delay = "forever" },
    { op = "start", thread = "t" },
    { op = "sleep", ticks = "forever" },  # main outlives t
]
"""


def test_scenario_file_after_the_run_and_at_a_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "front.toml"
    path.write_text(SCENARIO)
    k = scenario_kernel(str(path), None)
    assert k.quiescent() and k.faults and k.cleanup.thread is not None
    parser = _map_parser(scenario_kernel)
    assert _main(parser, ["map", str(path)]) == 0
    after = capsys.readouterr().out
    assert after == render_text(memory_map(k))
    # t faulted in its front guard and was aborted; main (asleep) outlives it, so t's stack waits
    # in the deferred slot.
    assert "front guard of t (thread stack; dead, unmap pending)" in after
    assert _main(parser, ["map", str(path), "--step", "0"]) == 0
    at_boot = capsys.readouterr().out
    assert " of t " not in at_boot and "stack object area (not mapped)" in at_boot


def test_scenario_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(SCENARIO.replace("size = 8192", 'size = "big"'))
    assert _main(_map_parser(scenario_kernel), ["map", str(path)]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(f"mmusim map: error: {path}:8: stacks.area.size: ") and err.count("\n") == 1
    )
    assert _main(_map_parser(scenario_kernel), ["map", str(tmp_path / "missing.toml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mmusim map: error: {tmp_path / 'missing.toml'}:1: ")
    assert "No such file or directory" in err


# -- the docs ---------------------------------------------------------------------------------

DOCS = Path(__file__).parent.parent / "docs"


def test_docs_examples_show_real_output() -> None:
    """docs/memmap.md pastes the output of its own python examples, and the SVG beside it is the
    drawing of the first one; regenerate both when the map changes."""
    text = (DOCS / "memmap.md").read_text()
    # The first two python blocks show their output; the last ("From Python") only runs, in
    # tests/test_docs.py.
    code = re.findall(r"```python\n(.*?)```", text, re.S)[:2]
    shown = re.findall(r"```text\n(.*?)```", text, re.S)
    assert len(code) == len(shown) == 2
    first: dict[str, Any] = {}
    exec(compile(code[0], "memmap.md#example", "exec"), first)
    assert shown[0] == first["text"]
    assert (DOCS / "img" / "memmap-example.svg").read_text() == first["svg"]
    second: dict[str, Any] = {}
    exec(compile(code[1], "memmap.md#legacy", "exec"), second)
    assert shown[1] == second["legacy"]
