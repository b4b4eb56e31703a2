"""Progress on long runs (issue 11): a live line on a terminal (a real pseudo-terminal here), never
in piped output, with --json or with --no-progress. (Ctrl-C: tests/test_fuzz.py.)"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from mmusim import _progress
from mmusim.cli import progress
from mmusim.scenario import BUNDLED_DIR

RACE = str(BUNDLED_DIR / "explore" / "race_self_abort.toml")
BLOCKED = str(BUNDLED_DIR / "explore" / "race_abort_blocked.toml")  # a violation in about 1 s
MMUSIM = [sys.executable, "-m", "mmusim"]


def on_terminal(
    argv: list[str], *, cols: int = 120, cwd: Path | None = None, timeout: float = 120
) -> tuple[int, str]:
    """Run ``mmusim ARGV`` (or ``python ARGV`` when it starts with ``-m``) with stdout and stderr
    on one pseudo-terminal of ``cols`` columns; returns the exit code and everything written,
    carriage returns included."""
    command = [sys.executable, *argv] if argv[0] == "-m" else [*MMUSIM, *argv]
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, cols, 0, 0))
    p = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave, cwd=cwd)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return p.wait(timeout=timeout), b"".join(chunks).decode()


def test_explore_shows_progress_on_a_terminal_then_erases_it() -> None:
    code, text = on_terminal(["explore", BLOCKED])
    assert code == 1  # the window is found: a violation, then its minimal trace
    assert "\rexplore: " in text and "states/s" in text and "depth " in text
    assert "\rminimal trace: " in text and " on queue" in text
    # The line is erased (spaces, carriage return) before the report, which reads as usual.
    report = text[text.index("VIOLATION") :]
    assert "\r" not in report.replace("\r\n", "\n")
    assert "explore:" not in report


def test_explore_with_workers_shows_the_whole_search() -> None:
    # The workers bring their counters to the work pool when they poll it; the line adds them up
    # with the shared visited set's size.
    fix = "CONFIG_SIM_CLEANUP_WAITS_FOR_SWITCH=y"
    code, text = on_terminal(["explore", RACE, "--config", fix, "--workers", "2"])
    assert code == 0
    lines = [t for t in text.split("\r") if t.startswith("explore: ") and " states, " in t]
    assert lines and "states/s" in lines[-1] and "executions" in lines[-1]
    counts = [int(t.split("explore: ")[1].split(" states")[0].split()[-1].replace(",", ""))
              for t in lines]  # fmt: skip
    assert counts == sorted(counts) and counts[-1] > 0  # the states grow as the search goes
    report = text[text.index("PASS") :]
    assert "explore:" not in report and "6,903 states" in report


def test_pct_shows_runs_out_of_the_total() -> None:
    code, text = on_terminal(["explore", "--pct", "--runs", "5", "--depth", "1", RACE])
    assert code == 0
    assert "\rpct: run " in text and "/5, " in text and "transitions/s" in text


def test_run_shows_a_bar_over_the_scenarios() -> None:
    code, text = on_terminal(["run", str(BUNDLED_DIR / "explore")])
    assert code == 0
    n = len(list((BUNDLED_DIR / "explore").glob("*.toml")))
    assert f"\rrun  0/{n} " in text and "race_self_abort" in text
    assert text.rstrip().endswith(f"{n} passed, 0 failed")


@pytest.mark.parametrize(
    "argv",
    [
        ["explore", "--max-states", "300", "--json", RACE],
        ["explore", "--max-states", "300", "--no-progress", RACE],
        ["run", "--json", str(BUNDLED_DIR / "explore")],
        ["run", "--no-progress", str(BUNDLED_DIR / "explore")],
    ],
)
def test_no_progress_with_json_or_when_asked(argv: list[str]) -> None:
    _, text = on_terminal(argv)
    assert "\rexplore: " not in text and "\rrun  " not in text and "\rminimal" not in text
    if "--json" in argv:
        for line in text.splitlines():
            json.loads(line)  # nothing but the JSON objects


def test_no_progress_in_piped_output() -> None:
    p = subprocess.run(
        [*MMUSIM, "explore", "--no-time", BLOCKED],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 1 and p.stderr == ""
    assert "\r" not in p.stdout and p.stdout.startswith("VIOLATION")


def test_no_progress_without_tqdm(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty:
        def isatty(self) -> bool:
            return True

    assert progress.progress_wanted(False, False, Tty(), Tty())
    monkeypatch.setattr(_progress.importlib.util, "find_spec", lambda name: None)
    assert not progress.progress_wanted(False, False, Tty(), Tty())


def test_progress_wanted_only_for_two_terminals(tmp_path: Path) -> None:
    class Tty:
        def isatty(self) -> bool:
            return True

    with open(tmp_path / "f", "w") as f:
        assert not progress.progress_wanted(False, False, f, Tty())
        assert not progress.progress_wanted(False, False, Tty(), f)
    assert not progress.progress_wanted(True, False, Tty(), Tty())
    assert not progress.progress_wanted(False, True, Tty(), Tty())
    assert not progress.progress_wanted(False, False, object(), Tty())  # no isatty at all


CAMPAIGN = """
from hypothesis import settings


def test_campaign(machine):
    machine.check(settings(max_examples=6, stateful_step_count=5, deadline=None))
"""


def run_pytest_on_terminal(tmp_path: Path, *extra: str) -> tuple[int, str]:
    (tmp_path / "test_campaign.py").write_text(CAMPAIGN)
    argv = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
            str(tmp_path / "test_campaign.py"), *extra]  # fmt: skip
    return on_terminal(argv, cols=160, cwd=tmp_path, timeout=300)


def test_a_property_campaign_shows_its_examples_on_the_terminal(tmp_path: Path) -> None:
    code, text = run_pytest_on_terminal(tmp_path)
    assert code == 0, text
    assert "\rtest_campaign: " in text and " examples, " in text and " kernel steps (max " in text
    assert "1 passed" in text


def test_a_property_campaign_line_can_be_turned_off(tmp_path: Path) -> None:
    code, text = run_pytest_on_terminal(tmp_path, "--mmusim-no-progress")
    assert code == 0, text
    assert "\rtest_campaign: " not in text and "1 passed" in text


def test_a_campaign_counts_every_example() -> None:
    from hypothesis import settings

    from mmusim.testing import KernelMachine

    seen: list[tuple[int, int]] = []
    KernelMachine.check(
        settings(max_examples=4, stateful_step_count=3, deadline=None, derandomize=True,
                 database=None),
        progress=lambda c: seen.append((c.examples, c.kernel_steps)),
    )  # fmt: skip
    assert [n for n, _ in seen] == list(range(1, len(seen) + 1)) and len(seen) >= 4
    assert all(b >= a for (_, a), (_, b) in zip(seen, seen[1:], strict=False))
