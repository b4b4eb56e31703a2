"""The docs are executable: every ```python block runs, every `$ mmusim ...` transcript matches."""

from __future__ import annotations

import contextlib
import re
import shlex
from pathlib import Path

import pytest

from mmusim.cli import main

DOCS = sorted((Path(__file__).parent.parent / "docs").glob("*.md"))
_BLOCK = re.compile(r"```(python|console)\n(.*?)```", re.S)


def _blocks(kind: str) -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        for i, m in enumerate(_BLOCK.finditer(path.read_text())):
            if m.group(1) == kind:
                found.append((f"{path.name}#{i}", m.group(2)))
    return found


@pytest.mark.parametrize(("where", "code"), _blocks("python"))
def test_python_blocks_run(where: str, code: str) -> None:
    exec(compile(code, where, "exec"), {})


def _transcripts() -> list[tuple[str, str, str]]:
    """Each ``$ mmusim ...`` line of a console block, with the output shown under it."""
    out = []
    for where, block in _blocks("console"):
        for chunk in re.split(r"^(?=\$ )", block, flags=re.M):
            if chunk.startswith("$ mmusim "):
                command, _, shown = chunk.partition("\n")
                out.append((where, command[2:], shown))
    return out


@pytest.mark.parametrize(("where", "command", "shown"), _transcripts())
def test_console_transcripts_match(
    where: str, command: str, shown: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = shlex.split(command)[1:]
    with contextlib.suppress(SystemExit):
        main(argv)
    out, err = capsys.readouterr()
    assert (out + err).rstrip("\n") == shown.rstrip("\n"), f"{where}: {command}"


def test_docs_have_transcripts() -> None:
    assert _transcripts(), "docs/cli.md should show real mmusim output"
