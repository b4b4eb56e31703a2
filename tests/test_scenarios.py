"""Scenario files (mmusim.scenario) and ``mmusim run`` (mmusim.cli.run).

Every bundled scenario passes; every kind of bad input is a ScenarioError at the exact FILE:LINE;
runs are deterministic; a wrong expectation fails; the CLI prints a table or JSON and exits 0/1/2.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import attrs
import pytest

from mmusim.cli import main
from mmusim.cli.run import run_paths
from mmusim.explore.model import Model
from mmusim.render.verdicts import render_table
from mmusim.runtime import Process
from mmusim.scenario import (
    BUNDLED_DIR,
    Expr,
    ExprError,
    Locator,
    ScenarioError,
    bundled_scenarios,
    fault_summary,
    load_scenario,
    run_scenario,
    scenario_kernel,
)

BUNDLED = bundled_scenarios()
REPO = Path(__file__).resolve().parent.parent

# A small valid scenario; the error tests break one line of it at a time. Line numbers matter.
BASE = """\
[scenario]
name = "base"
board = "qemu_x86_64"
config = [
    "CONFIG_INIT_STACKS=y",
]

[stacks]
s = { size = 8192, user = true }

[bodies]
front = [ { op = "touch", where = "front_guard" } ]
main = [
    { op = "create", thread = "t", stack = "s", body = "front", prio = -1, delay = "forever" },
    { op = "record", fact = "t.mapped_addr", as = "addr" },
    { op = "start", thread = "t" },
    { op = "join", thread = "t" },
    { op = "record", fact = "t.mapped_addr", as = "after" },
]

[expect]
faults = [ { thread = "t", reason = 2, in = "front_guard", cr2 = "addr - 2048" } ]
facts = [
    { fact = "addr", not_equals = "null" },
    { fact = "after", equals = "null" },
]
"""


def write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def edit(old: str, new: str, base: str = BASE) -> str:
    assert base.count(old) == 1, old
    return base.replace(old, new)


# -- the bundled scenarios ------------------------------------------------------------------------


def test_bundled_scenarios_are_found() -> None:
    assert len(BUNDLED) >= 20
    assert (REPO / "scenarios").resolve() == BUNDLED_DIR
    assert all(p.parent == BUNDLED_DIR for p in BUNDLED)


@pytest.mark.parametrize("path", BUNDLED, ids=[p.stem for p in BUNDLED])
def test_bundled_scenario_passes(path: Path) -> None:
    r = run_scenario(path)
    assert r.verdict == "pass", "\n".join(r.failures)
    assert r.name == path.stem  # named after the file (the Zephyr test)


def test_every_zephyr_test_is_ported() -> None:
    """Reference sections 5.1, 5.3 and 5.4: each Zephyr test appears in some zephyr_test."""
    named = " ".join(load_scenario(p).zephyr_test for p in BUNDLED)
    for test in (
        "test_guard_page_front ",
        "test_guard_page_rear ",
        "test_guard_page_front_user",
        "test_guard_page_rear_user",
        "test_mapped_stack_abort_reuse",
        "test_stack_buffer",
        "test_idle_stack",
        "test_k_mem_map_unmap",
        "test_k_mem_map_guard_before",
        "test_k_mem_map_guard_after",
        "test_k_mem_map_exhaustion",
        "test_k_mem_map_user",
        "test_k_mem_map_phys_bare_unmap_reclaim_addr",
        "test_k_mem_unmap_phys_bare",
        "test_k_mem_map_phys_bare_rw",
    ):
        assert test in named + " ", test


@pytest.mark.parametrize("seed", range(12))
def test_smp_self_abort_passes_under_many_seeds(seed: int) -> None:
    r = run_scenario(BUNDLED_DIR / "smp_simultaneous_self_abort.toml", seed=seed)
    assert r.verdict == "pass", "\n".join(r.failures)
    assert r.seed == seed and r.facts["pending"][0] in ("a", "b")


def test_issue_119098_pair_differs_only_by_the_knob() -> None:
    leak = load_scenario(BUNDLED_DIR / "issue_119098_leak.toml")
    fixed = load_scenario(BUNDLED_DIR / "issue_119098_fixed.toml")
    assert leak.config.values["SIM_ABORT_CLEANUP_LEAK"] is True
    assert fixed.config.values["SIM_ABORT_CLEANUP_LEAK"] is False
    assert leak.config.values["KERNEL_VM_SIZE"] == fixed.config.values["KERNEL_VM_SIZE"]
    r = run_scenario(leak)
    assert r.error is not None and "__ASSERT_NO_MSG(stack_mapped != 0)" in r.error
    assert len(set(r.facts["addr"])) == len(r.facts["addr"]) > 5


# -- determinism ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["smp_simultaneous_self_abort", "stackprot_mapped_stack_suite", "issue_119098_leak"]
)
def test_runs_are_deterministic(name: str) -> None:
    a = run_scenario(BUNDLED_DIR / f"{name}.toml")
    b = run_scenario(BUNDLED_DIR / f"{name}.toml")
    assert (a.log, a.faults, a.facts, a.steps, a.error) == (
        b.log,
        b.faults,
        b.facts,
        b.steps,
        b.error,
    )
    assert a.to_json() | {"time_ms": 0} == b.to_json() | {"time_ms": 0}


def test_seed_override_changes_only_the_schedule() -> None:
    path = BUNDLED_DIR / "smp_simultaneous_self_abort.toml"
    assert load_scenario(path).seed == 7
    runs = {seed: run_scenario(path, seed=seed) for seed in (None, 0, 7)}
    assert runs[7].facts == run_scenario(path).facts  # the file's own seed
    assert runs[None].seed is None and all(r.passed for r in runs.values())


# -- expectations can fail ------------------------------------------------------------------------


def test_base_scenario_passes(tmp_path: Path) -> None:
    r = run_scenario(write(tmp_path, BASE))
    assert r.verdict == "pass", r.failures
    assert r.faults[0]["in"] == "front_guard" and r.faults[0]["reason"] == 2


@pytest.mark.parametrize(
    ("old", "new", "failure"),
    [
        ("reason = 2,", "reason = 0,", r"expect\.faults\[0\] \(line 22\): reason is 2, expected 0"),
        ('in = "front_guard"', 'in = "rear_guard"', r"in is 'front_guard', expected 'rear_guard'"),
        ('cr2 = "addr - 2048"', 'cr2 = "addr - 2047"', r"cr2 is 0x[0-9a-f]+, expected 0x"),
        (
            'faults = [ { thread = "t", reason = 2, in = "front_guard", cr2 = "addr - 2048" } ]',
            "faults = []",
            r"expect\.faults \(line 22\): expected 0 fault\(s\), got 1: t reason 2 on CPU",
        ),
        (
            '{ fact = "after", equals = "null" },',
            '{ fact = "after", not_equals = "null" },',
            r"expect\.facts\[1\] \(line 25\): fact 'after': is null, expected anything else",
        ),
        (
            '{ fact = "addr", not_equals = "null" },',
            '{ expr = "addr % 8192 == 1" },',
            r"expect\.facts\[0\] \(line 24\): 'addr % 8192 == 1' is false \(addr = 0x",
        ),
        (
            '{ fact = "addr", not_equals = "null" },',
            '{ fact = "addr", count = 2 },',
            r"fact 'addr': recorded 1 time\(s\), expected 2",
        ),
        (
            '{ fact = "addr", not_equals = "null" },',
            '{ expr = "addr[3] == 0" },',
            r"'addr\[3\] == 0': cannot evaluate: addr\[3\]: 'addr' has 1 value\(s\)",
        ),
        (
            '{ fact = "addr", not_equals = "null" },',
            '{ expr = "after + 1 == 2" },',
            r"cannot evaluate: add of null",
        ),
    ],
)
def test_wrong_expectation_fails(tmp_path: Path, old: str, new: str, failure: str) -> None:
    r = run_scenario(write(tmp_path, edit(old, new)))
    assert r.verdict == "fail"
    assert any(re.search(failure, f) for f in r.failures), r.failures


def test_wrong_log_and_thread_expectations_fail(tmp_path: Path) -> None:
    text = BASE + textwrap.dedent("""\
        log_contains = ["no such line"]
        log_not_contains = ["Stack overflow"]
        threads = [ { thread = "t", exit_reason = "returned", state = "queued", dead = false } ]
    """)
    r = run_scenario(write(tmp_path, text))
    assert r.verdict == "fail"
    assert r.failures == (
        "expect.threads[0] (line 29): t exit_reason is 'fatal: Stack overflow', expected 'returned'",
        "expect.threads[0] (line 29): t is dead, expected not dead",
        "expect.threads[0] (line 29): t state is 'dead', expected 'queued'",
        "expect.log_contains (line 27): the log has no 'no such line'",
        "expect.log_not_contains (line 28): the log has 'Stack overflow'",
    )


def test_kernel_assertion_fails_unless_expected(tmp_path: Path) -> None:
    # K_USER on a kernel-only stack: Zephyr asserts (z_stack_is_user_capable)
    text = edit("s = { size = 8192, user = true }", "s = { size = 8192 }")
    text = edit(
        'config = [\n    "CONFIG_INIT_STACKS=y",', 'config = [\n    "CONFIG_USERSPACE=y",', text
    )
    text = edit("]\n\n[stacks]", '    "CONFIG_PRIVILEGED_STACK_SIZE=4096",\n]\n\n[stacks]', text)
    text = edit('delay = "forever" }', 'delay = "forever", user = true }', text)
    r = run_scenario(write(tmp_path, text))
    assert r.verdict == "fail" and r.error is not None
    assert r.failures[0].startswith("run stopped: kernel assertion: k_thread_create: K_USER")
    expected = text + 'error = "on kernel-only stack"\n'
    expected = edit(
        'faults = [ { thread = "t", reason = 2, in = "front_guard", cr2 = "addr - 2048" } ]',
        "",
        expected,
    )
    expected = edit(
        '    { fact = "addr", not_equals = "null" },\n    { fact = "after", equals = "null" },\n',
        "",
        expected,
    )
    r = run_scenario(write(tmp_path, expected, "expected.toml"))
    assert r.verdict == "pass", r.failures
    wrong = expected.replace('error = "on kernel-only stack"', 'error = "something else"')
    r = run_scenario(write(tmp_path, wrong, "wrong.toml"))
    assert r.verdict == "fail"
    assert "expected an error containing 'something else', got: kernel assertion" in r.failures[0]


def test_expected_error_that_never_comes_fails(tmp_path: Path) -> None:
    r = run_scenario(write(tmp_path, BASE + 'error = "boom"\n'))
    assert r.verdict == "fail"
    assert r.failures[0] == (
        "expect.error (line 27): expected the run to stop on an error containing 'boom', "
        "but it completed"
    )


def test_invariant_violation_is_a_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mmusim.kernel import invariants

    monkeypatch.setattr(invariants, "CHECKS", (lambda k: ["made up"] if k.steps == 5 else [],))
    r = run_scenario(write(tmp_path, BASE))
    assert r.verdict == "fail" and r.steps == 5
    assert r.failures[0] == "run stopped: invariant violated after step 5:\n  made up"


def test_internal_error_is_an_error_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mmusim.kernel import Kernel

    def broken(self: Any, **kw: Any) -> None:
        raise ZeroDivisionError("oops")

    monkeypatch.setattr(Kernel, "run", broken)
    r = run_scenario(write(tmp_path, BASE))
    assert r.verdict == "error"
    assert r.failures == ("internal error: ZeroDivisionError: oops",)


# -- bad input: ScenarioError at FILE:LINE --------------------------------------------------------

# fmt: off
BAD = [
    # (name, old, new, line, key, message fragment)
    ("toml syntax", 'name = "base"', 'name = "base', 2, "toml", "syntax error: "),
    ("unknown section", "[expect]", "[expected]", 21, "expected", "unknown key (did you mean 'expect'?"),
    ("missing section", '[scenario]\nname = "base"\nboard = "qemu_x86_64"\nconfig = [\n    "CONFIG_INIT_STACKS=y",\n]\n', "", 1, "(file)", "missing key 'scenario'"),
    ("unknown scenario key", 'name = "base"', 'nmae = "base"', 2, "scenario.nmae", "did you mean 'name'?"),
    ("missing board", 'board = "qemu_x86_64"\n', "", 1, "scenario", "missing key 'board'"),
    ("unknown board", '"qemu_x86_64"', '"qemu_x86"', None, None, None),  # valid: control
    ("bad board", '"qemu_x86_64"', '"qemu_x86_46"', 3, "scenario.board", "unknown board 'qemu_x86_46'"),
    ("bad config line", '"CONFIG_INIT_STACKS=y"', '"CONFIG_INIT_STACK=y"', 5, "scenario.config[0]", "unknown symbol CONFIG_INIT_STACK (did you mean CONFIG_INIT_STACKS?)"),
    ("config not a string", '"CONFIG_INIT_STACKS=y"', "1", 5, "scenario.config[0]", "expected a string like \"CONFIG_X=y\", got an integer (1)"),
    ("config dependency", '"CONFIG_INIT_STACKS=y"', '"CONFIG_PRIVILEGED_STACK_SIZE=4096"', 5, "scenario.config[0]", "has no effect"),
    ("seed type", 'name = "base"', 'name = "base"\nseed = "7"', 3, "scenario.seed", "expected an integer, got a string ('7')"),
    ("stack size type", "size = 8192", 'size = "8k"', 9, "stacks.s.size", "expected an integer, got a string ('8k')"),
    ("stack unknown key", "user = true", "usr = true", 9, "stacks.s.usr", "unknown key (did you mean 'user'?"),
    ("stack missing size", "size = 8192, user = true", "user = true", 9, "stacks.s", "missing key 'size'"),
    ("no main body", "main = [", "mian = [", 11, "bodies", "missing key 'main'"),
    ("unknown op", 'op = "start"', 'op = "strat"', 16, "bodies.main[2].op", "unknown op 'strat' (did you mean 'start'?"),
    ("op without op", '{ op = "start", thread = "t" }', '{ thread = "t" }', 16, "bodies.main[2]", "missing key 'op'"),
    ("op missing key", '{ op = "start", thread = "t" }', '{ op = "start" }', 16, "bodies.main[2]", "missing key 'thread' (required: thread)"),
    ("op unknown key", '{ op = "start", thread = "t" }', '{ op = "start", thread = "t", tick = 1 }', 16, "bodies.main[2].tick", "unknown key (allowed: op, thread)"),
    ("op wrong type", "prio = -1", "prio = true", 14, "bodies.main[0].prio", "expected an integer, got a boolean (true)"),
    ("op not a table", '{ op = "start", thread = "t" }', '"start"', 16, "bodies.main[2]", "expected an op table"),
    ("bad where", '"front_guard" }', '"front" }', 12, "bodies.front[0].where", "unknown place 'front'"),
    ("bad delay", 'delay = "forever"', 'delay = 5', 14, "bodies.main[0].delay", "bad delay 5"),
    ("bad ticks", '{ op = "start", thread = "t" }', '{ op = "sleep", ticks = -3 }', 16, "bodies.main[2].ticks", "bad tick count -3"),
    ("unknown stack", 'stack = "s"', 'stack = "t"', 14, "bodies.main[0].stack", "unknown stack 't'"),
    ("unknown body", 'body = "front"', 'body = "rear"', 14, "bodies.main[0].body", "unknown body 'rear'"),
    ("unknown thread", '{ op = "join", thread = "t" }', '{ op = "join", thread = "u" }', 17, "bodies.main[3].thread", "unknown thread 'u'"),
    ("creating main", 'thread = "t", stack', 'thread = "main", stack', 14, "bodies.main[0].thread", "'main' is the main thread"),
    ("bad thread name", 'thread = "t", stack', 'thread = "a b", stack', 14, "bodies.main[0].thread", "not an identifier"),
    ("unknown mapping", '{ op = "start", thread = "t" }', '{ op = "write", mapping = "m" }', 16, "bodies.main[2].mapping", "unknown mapping 'm'"),
    ("write without target", '{ op = "start", thread = "t" }', '{ op = "write", offset = 8 }', 16, "bodies.main[2]", "exactly one of addr, mapping, at"),
    ("bad fact field", '"t.mapped_addr", as = "addr"', '"t.mapped_adr", as = "addr"', 15, "bodies.main[1].fact", "unknown field 'mapped_adr' (did you mean 'mapped_addr'?"),
    ("bad fact thread", '"t.mapped_addr", as = "addr"', '"u.mapped_addr", as = "addr"', 15, "bodies.main[1].fact", "unknown thread 'u'"),
    ("bad global fact", '"t.mapped_addr", as = "addr"', '"freemem", as = "addr"', 15, "bodies.main[1].fact", "bad fact 'freemem' (did you mean 'free_mem'?"),
    ("bad stack fact", '"t.mapped_addr", as = "addr"', '"stack.s.size", as = "addr"', 15, "bodies.main[1].fact", "unknown field 'size'"),
    ("bad mapping fact", '"t.mapped_addr", as = "addr"', '"mapping.m", as = "addr"', 15, "bodies.main[1].fact", "unknown mapping 'm'"),
    ("nested op", '{ op = "start", thread = "t" }', '{ op = "repeat", times = 2, do = [\n        { op = "yield" },\n        { op = "jion" },\n    ] }', 18, "bodies.main[2].do[1].op", "unknown op 'jion' (did you mean 'join'?"),
    ("repeat times", '{ op = "start", thread = "t" }', '{ op = "repeat", times = -1, do = [] }', 16, "bodies.main[2].times", "-1 is negative"),
    ("unknown expect key", "facts = [", "fact = [", 23, "expect.fact", "unknown key (did you mean 'facts'?"),
    ("unknown recorded fact", '{ fact = "after", equals', '{ fact = "afterwards", equals', 25, "expect.facts[1].fact", "unknown fact 'afterwards' (did you mean 'after'?"),
    ("fact without check", '{ fact = "after", equals = "null" }', '{ fact = "after" }', 25, "expect.facts[1]", "no check for fact 'after'"),
    ("fact check type", '{ fact = "after", equals = "null" }', '{ fact = "after", all_equal = 1 }', 25, "expect.facts[1].all_equal", "expected true, got an integer (1)"),
    ("expr syntax", '{ fact = "after", equals = "null" }', '{ expr = "after ==" }', 25, "expect.facts[1].expr", "not an expression"),
    ("expr not allowed", '{ fact = "after", equals = "null" }', '{ expr = "__import__(\'os\').system(\'x\')" }', 25, "expect.facts[1].expr", "calls are only abs, len, max, min"),
    ("expr attribute call", '{ fact = "after", equals = "null" }', '{ expr = "after.__class__" }', 25, "expect.facts[1].expr", "unknown fact 'after.__class__'"),
    ("expr lambda", '{ fact = "after", equals = "null" }', '{ expr = "(lambda: 1)()" }', 25, "expect.facts[1].expr", "calls are only"),
    ("expr power", '{ fact = "after", equals = "null" }', '{ expr = "addr ** 99" }', 25, "expect.facts[1].expr", "operator Pow is not allowed"),
    ("expr unknown fact", '{ fact = "after", equals = "null" }', '{ expr = "adr == 1" }', 25, "expect.facts[1].expr", "unknown fact 'adr' (did you mean 'addr'?"),
    ("expr and fact", '{ fact = "after", equals = "null" }', '{ fact = "after", expr = "1" }', 25, "expect.facts[1]", "exactly one of 'fact'"),
    ("fault reason", "reason = 2,", "reason = 9,", 22, "expect.faults[0].reason", "reason 9 is not a K_ERR_* code"),
    ("fault in", 'in = "front_guard"', 'in = "front"', 22, "expect.faults[0].in", "unknown place 'front' (did you mean 'front_guard'?"),
    ("fault thread", '{ thread = "t", reason', '{ thread = "x", reason', 22, "expect.faults[0].thread", "unknown thread 'x'"),
    ("fault cpu", "reason = 2,", "reason = 2, cpu = 2,", 22, "expect.faults[0].cpu", "CPU 2 does not exist (2 CPU(s))"),
    ("fault cr2 expr", 'cr2 = "addr - 2048"', 'cr2 = "adr - 2048"', 22, "expect.faults[0].cr2", "unknown fact 'adr'"),
    ("fault cr2 type", 'cr2 = "addr - 2048"', "cr2 = true", 22, "expect.faults[0].cr2", "expected an integer or an expression"),
]
# fmt: on


@pytest.mark.parametrize(
    ("old", "new", "line", "key", "message"),
    [b[1:] for b in BAD],
    ids=[b[0] for b in BAD],
)
def test_bad_input_is_a_scenario_error_at_file_line(
    tmp_path: Path, old: str, new: str, line: int | None, key: str | None, message: str | None
) -> None:
    path = write(tmp_path, edit(old, new))
    if line is None:
        load_scenario(path)  # the control case loads
        return
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    e = info.value
    assert str(e).startswith(f"{path}:{line}: {key}: "), str(e)
    assert (e.path, e.line, e.key) == (str(path), line, key)
    assert message in e.message, e.message


# A valid scenario with a process ([runtime]); the runtime error cases break one line of it.
RT_BASE = """\
[scenario]
name = "rt"
board = "qemu_x86_64"

[runtime]
flavour = "linux"

[bodies]
h = [ { op = "classify_fault" }, { op = "siglongjmp" } ]
quiet = [ { op = "push", bytes = 64 }, { op = "coro_yield" } ]
main = [
    { op = "sigaction", handler = "h", onstack = true },
    { op = "mmap", name = "alt", bytes = 8192, prot = ["read", "write"] },
    { op = "sigaltstack", mapping = "alt" },
    { op = "mmap", name = "s", bytes = 16384, prot = ["read", "write"], flags = ["noreserve"] },
    { op = "mprotect", mapping = "s", bytes = 4096, prot = [] },
    { op = "coro_create", name = "c", mapping = "s", guard = 1, body = "quiet" },
    { op = "coro_switch", name = "c" },
    { op = "sigsetjmp", do = [ { op = "on_stack", mapping = "s", do = [ { op = "push", bytes = 16384 } ] } ], on_jump = [ { op = "move_sp", by = 0 } ] },
]

[expect]
facts = [
    { fact = "report", equals = "Segmentation fault from reading the address 0x7fffaff8." },
    { expr = "sigsegv.si_addr == s + 4096 - 8 and areas == 3" },
]
threads = [ { thread = "main", exit_reason = "returned" } ]
"""

# fmt: off
RT_BAD = [
    # (name, old, new, line, key, message fragment)
    ("runtime control", 'flavour = "linux"', 'flavour = "nanos"', None, None, None),
    ("no runtime section", '[runtime]\nflavour = "linux"\n', "", 7, "bodies.h[0].op", "op 'classify_fault' needs a process: add a [runtime] section (flavour = linux, nanos, haiku)"),
    ("unknown flavour", 'flavour = "linux"', 'flavour = "linx"', 6, "runtime.flavour", "unknown flavour 'linx' (did you mean 'linux'? allowed: linux, nanos, haiku)"),
    ("flavour type", 'flavour = "linux"', "flavour = 1", 6, "runtime.flavour", "expected a string, got an integer (1)"),
    ("missing flavour", 'flavour = "linux"', "rlimit_stack = 8388608", 5, "runtime", "missing key 'flavour'"),
    ("unknown runtime key", 'flavour = "linux"', 'flavour = "linux"\nrlimit = 1', 7, "runtime.rlimit", "unknown key (did you mean 'rlimit_stack'?"),
    ("bad rlimit", 'flavour = "linux"', 'flavour = "linux"\nrlimit_stack = 100', 7, "runtime.rlimit_stack", "100 is not a positive multiple of 4096"),
    ("negative gap", 'flavour = "linux"', 'flavour = "linux"\nstack_guard_gap_pages = -1', 7, "runtime.stack_guard_gap_pages", "-1 is negative"),
    ("mmap negative bytes", "bytes = 8192,", "bytes = -8192,", 13, "bodies.main[1].bytes", "-8192 is not positive (allowed: an integer > 0)"),
    ("mmap bytes type", "bytes = 8192,", 'bytes = "8k",', 13, "bodies.main[1].bytes", "expected an integer, got a string ('8k')"),
    ("mmap missing bytes", 'name = "alt", bytes = 8192,', 'name = "alt",', 13, "bodies.main[1]", "missing key 'bytes' (required: bytes)"),
    ("mmap unknown key", 'name = "alt", bytes', 'name = "alt", size = 1, bytes', 13, "bodies.main[1].size", "unknown key (allowed: op, name, bytes, prot, flags, mapping, offset, addr, guard)"),
    ("unknown prot", 'prot = ["read", "write"] },', 'prot = ["read", "wrte"] },', 13, "bodies.main[1].prot[1]", "unknown protection 'wrte' (did you mean 'write'? allowed: read, write, exec)"),
    ("prot not an array", 'prot = ["read", "write"] },', 'prot = "rw" },', 13, "bodies.main[1].prot", "expected an array of protection names (read, write, exec; [] for none), got a string ('rw')"),
    ("unknown flag", 'flags = ["noreserve"]', 'flags = ["grows_down"]', 15, "bodies.main[3].flags[0]", "unknown mmap flag 'grows_down' (did you mean 'growsdown'? allowed: fixed, growsdown, noreserve)"),
    ("bad mapping name", 'name = "alt", bytes', 'name = "a b", bytes', 13, "bodies.main[1].name", "mapping name 'a b' is not an identifier"),
    ("unknown mapping", '{ op = "sigaltstack", mapping = "alt" }', '{ op = "sigaltstack", mapping = "alts" }', 14, "bodies.main[2].mapping", "unknown mapping 'alts' (did you mean 'alt'? mmap'd in this file: alt, s; an mmap op with name = ... defines one)"),
    ("sigaltstack missing mapping", '{ op = "sigaltstack", mapping = "alt" }', '{ op = "sigaltstack" }', 14, "bodies.main[2]", "missing key 'mapping'"),
    ("sigaltstack bytes", '{ op = "sigaltstack", mapping = "alt" }', '{ op = "sigaltstack", mapping = "alt", bytes = 0 }', 14, "bodies.main[2].bytes", "0 is not positive"),
    ("mprotect without place", '{ op = "mprotect", mapping = "s", bytes', '{ op = "mprotect", bytes', 16, "bodies.main[4]", "mprotect needs exactly one of addr, mapping (got none)"),
    ("mprotect both places", '{ op = "mprotect", mapping = "s", bytes', '{ op = "mprotect", mapping = "s", addr = 4096, bytes', 16, "bodies.main[4]", "mprotect needs exactly one of addr, mapping (got addr, mapping)"),
    ("mprotect missing prot", 'bytes = 4096, prot = [] },', "bytes = 4096 },", 16, "bodies.main[4]", "missing key 'prot'"),
    ("offset without mapping", '"mmap", name = "alt", bytes = 8192,', '"mmap", name = "alt", offset = 4096, bytes = 8192,', 13, "bodies.main[1]", "mmap needs exactly one of addr, mapping (got none)"),
    ("negative offset", '{ op = "mprotect", mapping = "s", bytes', '{ op = "mprotect", mapping = "s", offset = -1, bytes', 16, "bodies.main[4].offset", "-1 is negative"),
    ("unknown handler", 'handler = "h"', 'handler = "hh"', 12, "bodies.main[0].handler", "unknown body 'hh' (did you mean 'h'?"),
    ("onstack type", "onstack = true", 'onstack = "yes"', 12, "bodies.main[0].onstack", "expected true or false, got a string ('yes')"),
    ("missing handler", 'handler = "h", onstack', "onstack", 12, "bodies.main[0]", "missing key 'handler'"),
    ("coro unknown body", 'guard = 1, body = "quiet"', 'guard = 1, body = "loud"', 17, "bodies.main[5].body", "unknown body 'loud'"),
    ("coro unknown mapping", 'name = "c", mapping = "s"', 'name = "c", mapping = "t"', 17, "bodies.main[5].mapping", "unknown mapping 't'"),
    ("coro negative guard", "guard = 1,", "guard = -1,", 17, "bodies.main[5].guard", "-1 is negative"),
    ("unknown coroutine", '{ op = "coro_switch", name = "c" }', '{ op = "coro_switch", name = "d" }', 18, "bodies.main[6].name", "unknown coroutine 'd' (created in this file: c; a coro_create op defines one)"),
    ("sigsetjmp missing do", '{ op = "sigsetjmp", do = [ { op = "on_stack", mapping = "s", do = [ { op = "push", bytes = 16384 } ] } ], on_jump', '{ op = "sigsetjmp", on_jump', 19, "bodies.main[7]", "missing key 'do'"),
    ("nested runtime op", '{ op = "push", bytes = 16384 }', '{ op = "push", bytes = 16384 }, { op = "mmap" }', 19, "bodies.main[7].do[0].do[1]", "missing key 'bytes'"),
    ("on_jump bad op", '{ op = "move_sp", by = 0 }', '{ op = "move_sp", by = "up" }', 19, "bodies.main[7].on_jump[0].by", "expected an integer, got a string ('up')"),
    ("on_jump not ops", 'on_jump = [ { op = "move_sp", by = 0 } ]', 'on_jump = "h"', 19, "bodies.main[7].on_jump", "expected an array of ops"),
    ("siglongjmp key", '{ op = "siglongjmp" }', '{ op = "siglongjmp", env = 1 }', 9, "bodies.h[1].env", "unknown key (allowed: op)"),
    ("unknown runtime fact", "and areas == 3", "and area == 3", 25, "expect.facts[1].expr", "unknown fact 'area' (did you mean 'areas'?"),
    ("unknown sigsegv fact", '"sigsegv.si_addr == s', '"sigsegv.addr == s', 25, "expect.facts[1].expr", "unknown fact 'sigsegv.addr'"),
]
# fmt: on


@pytest.mark.parametrize(
    ("old", "new", "line", "key", "message"),
    [b[1:] for b in RT_BAD],
    ids=[b[0] for b in RT_BAD],
)
def test_bad_runtime_input_is_a_scenario_error_at_file_line(
    tmp_path: Path, old: str, new: str, line: int | None, key: str | None, message: str | None
) -> None:
    path = write(tmp_path, edit(old, new, RT_BASE))
    if line is None:
        assert run_scenario(path).verdict == "pass"  # the control case loads and passes
        return
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    e = info.value
    assert str(e).startswith(f"{path}:{line}: {key}: "), str(e)
    assert message in e.message, e.message


def test_runtime_base_scenario_passes_and_its_facts_are_checked(tmp_path: Path) -> None:
    assert run_scenario(write(tmp_path, RT_BASE)).verdict == "pass"
    r = run_scenario(write(tmp_path, edit("and areas == 3", "and areas == 4", RT_BASE)))
    assert r.verdict == "fail" and "areas = [1, 2, 3]" in r.failures[0], r.failures
    r = run_scenario(
        write(
            tmp_path, edit('exit_reason = "returned"', 'exit_reason = "killed by SIGSEGV"', RT_BASE)
        )
    )
    assert r.failures == (
        "expect.threads[0] (line 27): main exit_reason is 'returned', expected 'killed by SIGSEGV'",
    )


def test_a_runtime_scenario_boots_with_its_process_for_run_map_and_explore() -> None:
    path = BUNDLED_DIR / "nanos_growsdown_gap.toml"
    scn = load_scenario(path)
    assert scn.runtime is not None and scn.runtime.flavour == "nanos"
    p = Process.of(scn.boot())
    assert p is not None and p.space.flavour.name == "nanos"
    assert Process.of(scenario_kernel(path, None)) is not None  # mmusim map's kernel
    assert Process.of(Model(scn).boot()) is not None  # mmusim explore's
    assert Process.of(load_scenario(BUNDLED_DIR / "test_idle_stack.toml").boot()) is None


def test_runtime_section_options_reach_the_process(tmp_path: Path) -> None:
    text = edit(
        'flavour = "linux"',
        'flavour = "linux"\nrlimit_stack = 65536\nstack_guard_gap_pages = 1',
        RT_BASE,
    )
    p = Process.of(load_scenario(write(tmp_path, text)).boot())
    assert p is not None
    assert p.space.rlimit_stack == 65536 and p.space.flavour.stack_guard_gap == 4096


def test_unreadable_file_is_a_scenario_error(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"missing\.toml:1: \(file\): cannot read scenario"):
        load_scenario(tmp_path / "missing.toml")


def test_config_lines_sharing_a_line_name_the_array(tmp_path: Path) -> None:
    text = edit(
        'config = [\n    "CONFIG_INIT_STACKS=y",\n]',
        'config = ["CONFIG_INIT_STACKS=y", "CONFIG_SMPP=y"]\n\n',
    )
    with pytest.raises(ScenarioError) as info:
        load_scenario(write(tmp_path, text))
    assert (info.value.line, info.value.key) == (4, "scenario.config")
    assert "CONFIG_SMPP" in info.value.message


def test_config_errors_from_kconfig_rules_point_at_the_line(tmp_path: Path) -> None:
    text = edit(
        '"CONFIG_INIT_STACKS=y",',
        '"CONFIG_INIT_STACKS=y",\n    "CONFIG_USERSPACE=y",\n    "CONFIG_PRIVILEGED_STACK_SIZE=100",',
    )
    with pytest.raises(ScenarioError) as info:
        load_scenario(write(tmp_path, text))
    assert (info.value.line, info.value.key) == (7, "scenario.config[2]")
    assert "not a positive multiple of MMU_PAGE_SIZE" in info.value.message


@pytest.mark.parametrize(("opener", "closer"), [("[", "]"), ("{a=", "}")])
def test_deeply_nested_toml_is_a_scenario_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], opener: str, closer: str
) -> None:
    text = BASE + "x = " + opener * 5000 + closer * 5000 + "\n"
    path = write(tmp_path, text)
    line = BASE.count("\n") + 1
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert (info.value.path, info.value.line, info.value.key) == (str(path), line, "toml")
    assert info.value.message.startswith("nested too deeply for the TOML reader")
    for command in ("run", "map", "explore"):
        assert main([command, str(path)]) == 2
        err = capsys.readouterr().err
        assert err == f"mmusim {command}: error: {path}:{line}: toml: {info.value.message}\n"


def test_an_unbootable_ram_size_is_a_config_error_at_its_line(tmp_path: Path) -> None:
    text = edit(
        '"CONFIG_INIT_STACKS=y",', '"CONFIG_INIT_STACKS=y",\n    "CONFIG_SRAM_SIZE=99999996",'
    )
    with pytest.raises(ScenarioError) as info:
        load_scenario(write(tmp_path, text))
    assert (info.value.line, info.value.key) == (6, "scenario.config[1]")
    assert info.value.message == "SRAM_SIZE=99999996 is out of range: allowed 256..1048576"


def test_an_image_too_big_for_the_vm_window_is_a_kernel_assertion_not_an_internal_error(
    tmp_path: Path,
) -> None:
    # 1 GiB of RAM needs more page tables than qemu_x86_atom_virt's 4 MiB window holds
    text = edit('board = "qemu_x86_64"', 'board = "qemu_x86_atom_virt"').replace(
        '"CONFIG_INIT_STACKS=y",', '"CONFIG_SRAM_SIZE=1048576",\n    "CONFIG_USERSPACE=y",'
    )
    r = run_scenario(write(tmp_path, text))
    assert r.verdict == "fail"
    assert "kernel assertion: boot: the kernel image" in r.failures[0]
    assert (
        "does not fit in the kernel's virtual window (KERNEL_VM_SIZE 0x400000 bytes)"
        in (r.failures[0])
    )


# -- the locator ----------------------------------------------------------------------------------

LOCATOR_DOC = """\
# comment [not.a.table]
title = "a [b] {c} # d"          # trailing comment with = and [
"quoted key" = 'lit ] }'
a.b.c = 1

[t]
x = { y = 1, z = [ { w = 2 }, { w = "]" } ] }
arr = [
    1,   # one
    [2, 3],
    { k = \"\"\"multi
line ] } string\"\"\" },
    { k = 4 },
]
text = \"\"\"
  [fake]
  key = 5
\"\"\"

[[runs]]
n = 1

[[runs]]
n = 2
m.q = 3

["odd name".sub]
v = 'x'
"""


def test_locator_finds_every_kind_of_key() -> None:
    loc = Locator(LOCATOR_DOC)
    lines = {
        ("title",): 2,
        ("quoted key",): 3,
        ("a",): 4,
        ("a", "b", "c"): 4,
        ("t",): 6,
        ("t", "x"): 7,
        ("t", "x", "y"): 7,
        ("t", "x", "z", 1, "w"): 7,
        ("t", "arr"): 8,
        ("t", "arr", 0): 9,
        ("t", "arr", 1): 10,
        ("t", "arr", 1, 1): 10,
        ("t", "arr", 2): 11,
        ("t", "arr", 2, "k"): 11,
        ("t", "arr", 3, "k"): 13,
        ("t", "text"): 15,
        ("runs",): 20,
        ("runs", 0, "n"): 21,
        ("runs", 1): 23,
        ("runs", 1, "n"): 24,
        ("runs", 1, "m", "q"): 25,
        ("odd name", "sub"): 27,
        ("odd name", "sub", "v"): 28,
    }
    for path, line in lines.items():
        assert loc.line(path) == line, path
    assert ("fake",) not in loc.lines and ("not",) not in loc.lines
    # a path that is not there: its longest known prefix
    assert loc.line(("t", "arr", 3, "missing")) == 13
    assert loc.line(("nothing",)) == 1


def test_locator_survives_broken_text() -> None:
    loc = Locator("a = 1\nb = [ 1, 2\nc = {")
    assert loc.line(("a",)) == 1 and loc.line(("b",)) == 2


# -- expressions ----------------------------------------------------------------------------------


FACTS: dict[str, list[Any]] = {"a": [1, 2, 3], "t.mapped_addr": [0x1000, None], "p": ["x"]}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("a", 3),
        ("a[0] + a[-1] * 2", 7),
        ("a // 2 == 1 and a % 2 == 1", True),
        ("len(a) == 3 and min(a) == 1 and max(a) == 3", True),
        ("max(a[0], 7, a) == 7", True),
        ("abs(-a)", 3),
        ("t.mapped_addr == null", True),
        ("t.mapped_addr[0] != null", True),
        ("not a or p == 'x'", True),
        ("1 < a[1] <= 2 < a", True),
        ('p == "x" and true', True),
        ("len(missing)", 0),
    ],
)
def test_expressions_evaluate(text: str, value: Any) -> None:
    assert Expr.parse(text).evaluate(FACTS) == value


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("a[5]", "a[5]: 'a' has 3 value(s)"),
        ("t.mapped_addr + 1", "add of null"),
        ("a // (a - 3)", "division by zero"),
        ("p < 1", "lt needs integers, got 'x', 1"),
        ("p * 1000000", "mul needs integers"),
        ("missing + 1", "fact 'missing' was never recorded"),
    ],
)
def test_expression_errors(text: str, error: str) -> None:
    with pytest.raises(ExprError, match=re.escape(error)):
        Expr.parse(text).evaluate(FACTS)


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os')",
        "a.__class__.__mro__()",
        "[x for x in a]",
        "a if a else 1",
        "a ** 2",
        "a / 2",
        "a[a]",
        "a[0:2]",
        "{}",
        "f'{a}'",
        "None",
        "1.5",
        "len(a, a)",
        "min(key=a)",
        "a := 1",
    ],
)
def test_expressions_outside_the_whitelist_are_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        Expr.parse(text)


def test_expression_names() -> None:
    assert Expr.parse("a[0] + len(b) + c.d.e - null").names == {"a", "b", "c.d.e"}


# -- the CLI --------------------------------------------------------------------------------------


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_table_for_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, BASE, "a_good.toml")
    write(tmp_path, edit("reason = 2,", "reason = 0,"), "b_bad.toml")
    rc, out, err = cli(["run", str(tmp_path)], capsys)
    assert (rc, err) == (1, "")
    lines = out.splitlines()
    assert re.fullmatch(r"scenario +verdict +faults +steps +time", lines[0])
    assert set(lines[1]) <= {"-", " "}
    assert re.fullmatch(r"base +pass +1: t reason 2 +\d+ +\d+ ms", lines[2])
    assert re.fullmatch(r"base +fail +1: t reason 2 +\d+ +\d+ ms", lines[3])
    assert lines[4].startswith("    expect.faults[0] (line 22): reason is 2, expected 0")
    assert lines[-1] == "1 passed, 1 failed"


def test_cli_json_and_seed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    smp = BUNDLED_DIR / "smp_simultaneous_self_abort.toml"
    rc, out, err = cli(
        ["run", str(smp), str(write(tmp_path, BASE)), "--json", "--seed", "3"], capsys
    )
    assert (rc, err) == (0, "")
    docs = [json.loads(line) for line in out.splitlines()]
    assert [d["name"] for d in docs] == ["smp_simultaneous_self_abort", "base"]
    assert all(d["verdict"] == "pass" and d["seed"] == 3 for d in docs)
    assert docs[1]["faults"][0]["in"] == "front_guard" and docs[1]["failures"] == []
    assert set(docs[0]) == {
        "name", "path", "board", "seed", "verdict", "failures", "faults", "error", "facts",
        "log", "steps", "time_ms",
    }  # fmt: skip


def test_cli_bad_scenario_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write(tmp_path, BASE, "good.toml")
    bad = write(tmp_path, edit('op = "start"', 'op = "strat"'), "bad.toml")
    rc, out, err = cli(["run", str(good), str(bad)], capsys)
    assert (rc, out) == (2, "")  # nothing ran
    assert err.count("\n") == 1
    assert err.startswith(f"mmusim run: error: {bad}:16: bodies.main[2].op: unknown op 'strat'")
    rc, out, err = cli(["run", str(tmp_path / "nope.toml")], capsys)
    assert (rc, out, err) == (
        2,
        "",
        f"mmusim run: error: {tmp_path / 'nope.toml'}: no such file or directory\n",
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, _, err = cli(["run", str(empty)], capsys)
    assert rc == 2 and "no *.toml scenario files" in err


def test_cli_bad_seed_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli(["run", "--seed", "-1"], capsys)
    assert info.value.code == 2
    assert "seed -1 is negative" in capsys.readouterr().err


def test_run_paths_defaults_to_the_bundled_scenarios(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import mmusim.cli.run as scli

    few = [BUNDLED_DIR / "test_guard_page_front.toml", BUNDLED_DIR / "test_k_mem_map_user.toml"]
    monkeypatch.setattr(scli, "bundled_scenarios", lambda: few)
    rc = run_paths([])
    out = capsys.readouterr().out
    assert rc == 0 and out.splitlines()[-1] == "2 passed, 0 failed"
    assert "test_guard_page_front " in out and "1: u2 reason 0" in out


def test_render_table_counts_errors() -> None:
    results = [run_scenario(BUNDLED_DIR / "test_guard_page_front.toml")]
    broken = attrs.evolve(results[0], verdict="error", failures=("internal error: x",))
    assert render_table([*results, broken]).splitlines()[-1] == "1 passed, 0 failed, 1 error"


def test_fault_summary() -> None:
    f = [{"thread": "t", "reason": 2}, {"thread": "u", "reason": 0}, {"thread": "v", "reason": 0}]
    assert fault_summary([]) == "0"
    assert fault_summary(f[:1]) == "1: t reason 2"
    assert fault_summary(f) == "3: t reason 2, u reason 0, ..."


def test_the_documented_example_passes(tmp_path: Path) -> None:
    doc = (REPO / "docs" / "scenarios.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", doc, re.S)
    assert len(blocks) == 1
    r = run_scenario(write(tmp_path, blocks[0], "example.toml"))
    assert r.verdict == "pass", r.failures
