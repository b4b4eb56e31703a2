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

from mmusim.cli import progress
from mmusim.scenario import BUNDLED_DIR

RACE = str(BUNDLED_DIR / "explore" / "race_self_abort.toml")
BLOCKED = str(BUNDLED_DIR / "explore" / "race_abort_blocked.toml")  # a violation in about 1 s
MMUSIM = [sys.executable, "-m", "mmusim"]


def on_terminal(argv: list[str]) -> tuple[int, str]:
    """Run ``mmusim ARGV`` with stdout and stderr on one pseudo-terminal of 120 columns; returns
    the exit code and everything written, carriage returns included."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    p = subprocess.Popen([*MMUSIM, *argv], stdin=slave, stdout=slave, stderr=slave)
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
    return p.wait(timeout=120), b"".join(chunks).decode()


def test_explore_shows_progress_on_a_terminal_then_erases_it() -> None:
    code, text = on_terminal(["explore", BLOCKED])
    assert code == 1  # the window is found: a violation, then its minimal trace
    assert "\rexplore: " in text and "states/s" in text and "depth " in text
    assert "\rminimal trace: " in text and " on queue" in text
    # The line is erased (spaces, carriage return) before the report, which reads as usual.
    report = text[text.index("VIOLATION") :]
    assert "\r" not in report.replace("\r\n", "\n")
    assert "explore:" not in report


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
    monkeypatch.setattr(progress.importlib.util, "find_spec", lambda name: None)
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
