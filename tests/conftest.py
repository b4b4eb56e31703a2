"""Fixtures shared by the test modules, and the one place that says how they import helpers.

Test modules import their shared helpers by plain module name: ``helpers`` (entry bits, page
sizes, the table-frame allocator, the leaf-frame decoder) and the ``oracle`` package (random and
hand-written raw tables, the Unicorn oracle). pytest's default import mode already puts this directory on ``sys.path``; it is added
here as well, so that those imports hold in any import mode and no test module needs an
``ImportError`` fallback of its own.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from helpers import TmpFile  # noqa: E402 (needs the sys.path entry above)


@pytest.fixture
def tmp_file(tmp_path: Path) -> TmpFile:
    """A writer of small text files in the test's ``tmp_path``: ``tmp_file(name, text)`` writes
    ``text`` to ``tmp_path / name`` and returns that path (a prj.conf fragment, a scenario)."""

    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write
