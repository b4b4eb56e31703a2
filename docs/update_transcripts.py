"""Refresh the output under every ``$ mmusim ...`` line of the docs' ```console blocks.

    .venv/bin/python docs/update_transcripts.py

The commands run in the checkout's top directory: they name files relative to it. Where mmusim is
installed differs from machine to machine, so that directory is shown as ``...`` (``normalize``).
tests/test_docs.py fails when a transcript no longer matches what the command prints.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import sys
from pathlib import Path

import mmusim
from mmusim.cli import main

#: The directory that holds the ``mmusim`` package: a checkout, or site-packages.
INSTALLED = str(Path(mmusim.__file__).resolve().parent.parent)

_BLOCK = re.compile(r"(```console\n)(.*?)(```)", re.S)


def normalize(output: str) -> str:
    """``output`` with the installation directory shown as ``...``, the same on every machine."""
    return output.replace(INSTALLED + "/", ".../")


def run(command: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        contextlib.suppress(SystemExit),
    ):
        main(shlex.split(command)[1:])
    return normalize(out.getvalue() + err.getvalue()).rstrip("\n") + "\n"


def refresh(block: str) -> str:
    parts = []
    for line in block.splitlines():
        if line.startswith("$ "):
            parts.append(line + "\n" + (run(line[2:]) if line.startswith("$ mmusim ") else ""))
    return "".join(parts)


def main_() -> None:
    docs = Path(__file__).resolve().parent
    paths = [Path(a).resolve() for a in sys.argv[1:]] or sorted(docs.rglob("*.md"))
    os.chdir(docs.parent)  # the checkout: the commands name files relative to it
    for path in paths:
        text = path.read_text()
        new = _BLOCK.sub(lambda m: m.group(1) + refresh(m.group(2)) + m.group(3), text)
        if new != text:
            path.write_text(new)
            print(f"updated {path}")


if __name__ == "__main__":
    main_()
