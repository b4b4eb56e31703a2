"""Refresh the output under every ``$ mmusim ...`` line of the docs' ```console blocks.

    .venv/bin/python docs/update_transcripts.py

tests/test_docs.py fails when a transcript no longer matches what the command prints.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import sys
from pathlib import Path

from mmusim.cli import main

_BLOCK = re.compile(r"(```console\n)(.*?)(```)", re.S)


def run(command: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        contextlib.suppress(SystemExit),
    ):
        main(shlex.split(command)[1:])
    return (out.getvalue() + err.getvalue()).rstrip("\n") + "\n"


def refresh(block: str) -> str:
    parts = []
    for line in block.splitlines():
        if line.startswith("$ "):
            parts.append(line + "\n" + (run(line[2:]) if line.startswith("$ mmusim ") else ""))
    return "".join(parts)


def main_() -> None:
    for path in sys.argv[1:] or sorted(Path(__file__).parent.glob("*.md")):
        path = Path(path)
        text = path.read_text()
        new = _BLOCK.sub(lambda m: m.group(1) + refresh(m.group(2)) + m.group(3), text)
        if new != text:
            path.write_text(new)
            print(f"updated {path}")


if __name__ == "__main__":
    main_()
