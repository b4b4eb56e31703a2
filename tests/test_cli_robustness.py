"""The ``mmusim explore``/``replay``/``map`` commands on awkward input (issue 11): a kernel
assertion is a verdict, bad input is one line and exit code 2, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mmusim.cli import main
from mmusim.scenario import BUNDLED_DIR

LEAK = BUNDLED_DIR / "issue_119098_leak.toml"
RACE = BUNDLED_DIR / "explore" / "race_self_abort.toml"
ASSERTS = "setup_thread_stack: __ASSERT_NO_MSG(stack_mapped != 0)"


# -- 1. a kernel assertion is a verdict --------------------------------------------------------


def test_explore_reports_an_assertion_before_the_root_as_a_violation(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    trace = tmp_path / "t.json"
    argv = ["explore", "--max-states", "100", "--no-time", str(LEAK), "--trace", str(trace)]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert out.startswith("VIOLATION  kernel assert: the scenario makes Zephyr assert: " + ASSERTS)
    assert "the default schedule asserts before the exploration root" in out
    assert "with pytest.raises(KernelAssert):" in out
    data = json.loads(trace.read_text())
    assert data["violation"]["kind"] == "kernel assert"
    main(["replay", str(trace)])
    out = capsys.readouterr().out
    assert "VIOLATION  kernel assert: the scenario makes Zephyr assert: " + ASSERTS in out


@pytest.mark.parametrize("how", [["--pct", "--runs", "2"], ["--json"]])
def test_explore_modes_report_the_assertion(
    capsys: pytest.CaptureFixture[str], how: list[str]
) -> None:
    assert main(["explore", "--no-time", str(LEAK), *how]) == 1
    assert "the scenario makes Zephyr assert: " + ASSERTS in capsys.readouterr().out


def test_minimal_reports_the_assertion() -> None:
    from mmusim.explore import Model, minimal

    v = minimal(Model(LEAK)).violation
    assert v is not None and v.kind == "kernel assert"
    assert v.messages[0].startswith("the scenario makes Zephyr assert: " + ASSERTS)


def test_map_reports_an_assertion_as_the_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["map", str(LEAK)]) == 1
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith(f"ASSERT  {LEAK}: the scenario makes Zephyr assert: {ASSERTS}")
    assert out.endswith("(in step 890; --step 889 maps the state just before it)\n")


# -- 2. --trace is checked before the search ---------------------------------------------------


@pytest.mark.parametrize(
    ("trace", "why"),
    [
        ("no/such/dir/t.json", "no/such/dir/t.json: no such directory 'no/such/dir'"),
        (".", ". is a directory (give a file name)"),
    ],
)
def test_trace_path_is_checked_before_searching(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    trace: str,
    why: str,
) -> None:
    import mmusim.cli.explore as cli_explore

    def no_search(*_: object, **__: object) -> None:
        raise AssertionError("searched before checking --trace")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli_explore, "explore", no_search)
    assert main(["explore", str(RACE), "--trace", trace]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"mmusim explore: error: --trace: {why}\n"


# -- 3. a closed stdout keeps the verdict ------------------------------------------------------


def test_closed_stdout_keeps_the_exit_code_and_the_trace_file(tmp_path: Path) -> None:
    trace = tmp_path / "t.json"
    argv = ["explore", str(RACE), "--mutant", "self-unmap", "--trace", str(trace)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mmusim", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # as `| head -0` does: every write meets a closed pipe
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 1, err
    assert err == ""
    assert json.loads(trace.read_text())["violation"]["kind"] == "invariant"


# -- 4. the scenario's max_steps bounds every execution ----------------------------------------

BUSY = """\
[scenario]
name = "busy"
description = "a thread that keeps its CPU busy for longer than max_steps allows"
board = "qemu_x86_64"
max_steps = 300

[stacks]
stack_a = { size = 4096 }

[bodies]
spin = [ { op = "repeat", times = 100000, do = [
    { op = "push", bytes = 8 }, { op = "pop", bytes = 8 } ] } ]
main = [
    { op = "create", thread = "a", stack = "stack_a", body = "spin", delay = "no_wait" },
    MARKER
    { op = "join", thread = "a" },
]
"""
BOUND = (
    "VIOLATION  step bound: the run is not quiescent after the scenario's max_steps "
    "(300 engine steps from boot)"
)


@pytest.mark.parametrize("marker", [True, False])
@pytest.mark.parametrize("how", [[], ["--pct", "--runs", "3"]])
def test_explore_stops_at_the_scenarios_max_steps(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, marker: bool, how: list[str]
) -> None:
    mark = '{ op = "record", fact = "vm_free_pages", as = "explore" },' if marker else ""
    scn = tmp_path / "busy.toml"
    scn.write_text(BUSY.replace("MARKER", mark))
    trace = tmp_path / "t.json"
    assert main(["explore", "--no-time", str(scn), "--trace", str(trace), *how]) == 1
    assert capsys.readouterr().out.startswith(BOUND)
    main(["replay", str(trace)])
    assert BOUND in capsys.readouterr().out


# -- 5. the PCT bound of a deep search ---------------------------------------------------------


def test_pct_bound_of_a_large_depth_does_not_overflow() -> None:
    from mmusim.explore.pct import bound, bound_text

    assert bound_text(2, 100, 2) == "0.005"
    assert bound(2, 300, 200) == 0.0  # below the smallest float, not an OverflowError
    assert bound_text(2, 300, 200) == "5.65e-494"  # 2 * 300**199 = 1.77e493
    assert bound_text(1, 10, 401) == "1e-400"


def test_explore_pct_with_depth_200(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explore", "--pct", "--depth", "200", "--runs", "2", str(RACE)]) == 0
    out = capsys.readouterr().out
    assert "per-run bound 1/(n*k^(d-1)) = " in out and "e-" in out.split("per-run bound")[1]


# -- 6. a hand-edited trace is checked, field by field -----------------------------------------


def _edit(data: dict[str, Any], where: str, value: Any) -> None:
    """Set ``data[where]`` for a dotted path with list indices: ``steps.3.cpu``."""
    *parents, last = where.split(".")
    obj: Any = data
    for p in parents:
        obj = obj[int(p)] if isinstance(obj, list) else obj[p]
    if value is KeyError:
        del obj[last]
    else:
        obj[int(last) if isinstance(obj, list) else last] = value


@pytest.fixture(scope="module")
def good_trace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("trace") / "good.json"
    assert main(["explore", str(RACE), "--mutant", "self-unmap", "--trace", str(path)]) == 1
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@pytest.mark.parametrize(
    ("where", "value", "why"),
    [
        ("steps.3.cpu", "0", "steps[3].cpu: expected an integer, got a string"),
        ("steps.0.cpu", True, "steps[0].cpu: expected an integer, got a boolean"),
        ("steps.1.kind", 7, "steps[1].kind: expected a string, got an integer"),
        ("steps.1.kind", "jump", "steps[1].kind: 'jump' is not one of step, irq, evict, tick"),
        ("steps.2.thread", None, "steps[2].thread: expected a string, got null"),
        ("steps.0.label", KeyError, "steps[0].label: missing (expected a string)"),
        ("steps.0", [], "steps[0]: expected an object, got a list"),
        ("steps", {}, "steps: expected a list of steps, got an object"),
        ("scenario", 3, "scenario: expected a string (the scenario file), got an integer"),
        ("violation", [1], "violation: expected an object or null, got a list"),
        ("violation.kind", 1, "violation.kind: expected a string, got an integer"),
        ("config", "CONFIG_X=y", "config: expected a list of strings, got a string"),
        ("ignore", [1], "ignore[0]: expected a string, got an integer"),
    ],
)
def test_replay_names_the_file_and_the_field(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    good_trace: dict[str, Any],
    where: str,
    value: Any,
    why: str,
) -> None:
    data = json.loads(json.dumps(good_trace))
    _edit(data, where, value)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    assert main(["replay", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"mmusim replay: error: {path}: {why}\n"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "not JSON: Expecting value at line 1 column 1"),
        ("[" * 100_000 + "]" * 100_000, "not a trace: the JSON is nested too deeply"),
        ("[1]", "the trace: expected an object, got a list"),
        ('{"format": "x"}', "format: not an mmusim trace ('mmusim-trace/1' expected)"),
    ],
)
def test_replay_of_a_file_that_is_no_trace(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, why: str
) -> None:
    path = tmp_path / "t.json"
    path.write_text(text)
    assert main(["replay", str(path)]) == 2
    assert capsys.readouterr().err == f"mmusim replay: error: {path}: {why}\n"


# -- 7. replay from another directory, --scenario, the hash, the exit code ---------------------


def test_replay_from_another_directory_and_with_scenario(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    scn = tmp_path / "race.toml"
    scn.write_text(RACE.read_text())
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path)
    argv = ["explore", "race.toml", "--mutant", "self-unmap", "--trace", "a/t.json"]
    assert main(argv) == 1
    monkeypatch.chdir(tmp_path / "b")
    capsys.readouterr()
    assert main(["replay", "../a/t.json"]) == 1  # reproduces the violation: exit 1, as explore
    assert "== invariant here ==" in capsys.readouterr().out
    # The scenario moved: --scenario names it; the hash still has to match.
    moved = tmp_path / "b" / "moved.toml"
    scn.rename(moved)
    assert main(["replay", "../a/t.json"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mmusim replay: error: ../a/t.json: scenario: ")
    assert err.endswith("race.toml: no such scenario file (give it with --scenario FILE)\n")
    assert main(["replay", "../a/t.json", "--scenario", "moved.toml"]) == 1
    capsys.readouterr()
    moved.write_text(moved.read_text() + "\n# edited\n")
    assert main(["replay", "../a/t.json", "--scenario", "moved.toml"]) == 2
    assert capsys.readouterr().err == (
        "mmusim replay: error: ../a/t.json: scenario: moved.toml is not the file the trace was "
        "recorded on (its sha256 differs): the scenario changed\n"
    )
    assert main(["replay", "../a/t.json", "--scenario", "nosuch.toml"]) == 2
    assert capsys.readouterr().err == (
        "mmusim replay: error: --scenario: nosuch.toml: no such scenario file\n"
    )


def test_replay_exits_0_when_the_violation_is_gone(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, good_trace: dict[str, Any]
) -> None:
    data = json.loads(json.dumps(good_trace))
    data["violation"]["kind"] = "kernel assert"  # as if recorded on a kernel that asserted
    path = tmp_path / "t.json"
    path.write_text(json.dumps(data))
    rc = main(["replay", str(path)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "the trace no longer ends in its violation (the kernel no longer asserts)" in out
