"""A scenario file being read: ``ScenarioError``, and the checks of TOML values every section uses.

Every problem with a scenario file is one ``ScenarioError``, printed as
``FILE:LINE: key: what is wrong (what is allowed)``::

    s.toml:14: bodies.main[2].op: unknown op 'jion' (did you mean 'join'? allowed: abort, ...)
    s.toml:9: stacks.s.size: expected an integer, got a string ('8k')

``Document`` holds the file's name and its ``Locator`` (``toml_lines``); its methods check one
value or table at a key path and raise the error at that path's line.

Design choices:

* The first problem stops the load: one error, one line, to fix and run again.
* A message says what was found (``describe``: the TOML type and the value) and what is allowed
  (``choices``), and guesses a near miss (``hint``, difflib's close matches) for names.
* TOML types are checked by kind: ``int``, ``bool``, ``str``, ``list``, ``table``. A boolean is
  not an integer here, although Python says it is.
* Hand-written rather than structured by a library: reproducing today's ``[stacks]`` messages
  with cattrs (strict hooks, and a walk of its exception groups back to key paths) took 44 lines
  where ``load``'s ``stacks`` takes 14, and ops, names and expressions need checks it cannot
  express.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mmusim.scenario.toml_lines import KeyPath, Locator, key_text

__all__ = [
    "Document",
    "ScenarioError",
    "choices",
    "describe",
    "display_path",
    "hint",
    "is_kind",
]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def display_path(path: str | os.PathLike[str]) -> str:
    """``path`` as text that can be printed and written as UTF-8 (JSON, SVG): a file name's bytes
    that are not UTF-8 (read by Python as lone surrogates) are shown escaped, ``bad\\xff.toml``."""
    text = os.fspath(path)
    try:
        raw = os.fsencode(text)
    except UnicodeEncodeError:  # surrogates that did not come from a file name's bytes
        raw = text.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


class ScenarioError(Exception):
    """A problem in a scenario file, at ``path``:``line``, under key ``key``."""

    def __init__(self, path: str, line: int, key: str, message: str) -> None:
        super().__init__(path, line, key, message)
        self.path = path
        self.line = line
        self.key = key
        self.message = message

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.key}: {self.message}"


# -- message parts --------------------------------------------------------------------------------


def describe(value: Any) -> str:
    """A TOML value as a message shows it: ``a string ('8k')``, ``an array``."""
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a float ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


_KIND_TEXT = {
    "int": "an integer",
    "bool": "true or false",
    "str": "a string",
    "list": "an array",
    "table": "a table",
}


def is_kind(kind: str, value: Any) -> bool:
    """Whether ``value`` is of TOML kind ``kind`` (int, bool, str, list, table)."""
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind == "list":
        return isinstance(value, list)
    if kind == "table":
        return isinstance(value, dict)
    raise AssertionError(kind)  # pragma: no cover


def choices(allowed: Iterable[str]) -> str:
    """The allowed values, as a message lists them."""
    return ", ".join(allowed)


def hint(word: str, allowed: Sequence[str]) -> str:
    """``did you mean 'x'? `` for the closest allowed word, or nothing."""
    close = difflib.get_close_matches(word, list(allowed), n=1)
    return f"did you mean {close[0]!r}? " if close else ""


# -- checks at a key path -------------------------------------------------------------------------


class Document:
    """One scenario file: its name, where its keys are, and checks that raise at their line."""

    def __init__(self, path: Path, text: str) -> None:
        self.file = display_path(path)
        self.loc = Locator(text)

    def line(self, path: KeyPath) -> int:
        """The line of the value at ``path`` (``Locator.line``)."""
        return self.loc.line(path)

    def err(self, path: KeyPath, message: str) -> ScenarioError:
        """The error for the value at ``path`` (raise it)."""
        return ScenarioError(self.file, self.loc.line(path), key_text(path), message)

    def table(self, value: Any, path: KeyPath) -> dict[str, Any]:
        """``value`` if it is a table."""
        if not isinstance(value, dict):
            raise self.err(path, f"expected a table, got {describe(value)}")
        return value

    def keys(
        self, tbl: Mapping[str, Any], path: KeyPath, allowed: Sequence[str], required: Sequence[str]
    ) -> None:
        """Every key of ``tbl`` is allowed and every required key is there."""
        for key in tbl:
            if key not in allowed:
                raise self.err(
                    (*path, key),
                    f"unknown key ({hint(key, allowed)}allowed: {choices(allowed)})",
                )
        for key in required:
            if key not in tbl:
                raise self.err(path, f"missing key {key!r} (required: {choices(required)})")

    def typed(self, tbl: Mapping[str, Any], path: KeyPath, key: str, kind: str) -> Any:
        """``tbl[key]`` if it is of kind ``kind``."""
        value = tbl[key]
        if not is_kind(kind, value):
            raise self.err((*path, key), f"expected {_KIND_TEXT[kind]}, got {describe(value)}")
        return value

    def opt(self, tbl: Mapping[str, Any], path: KeyPath, key: str, kind: str, default: Any) -> Any:
        """``tbl[key]`` if it is of kind ``kind``; ``default`` if the key is not there."""
        return self.typed(tbl, path, key, kind) if key in tbl else default

    def name(self, value: Any, path: KeyPath, what: str) -> str:
        """``value`` if it is an identifier, naming a ``what`` (thread, stack ...)."""
        if not isinstance(value, str):
            raise self.err(path, f"expected a {what} name (a string), got {describe(value)}")
        if not _NAME.fullmatch(value):
            raise self.err(path, f"{what} name {value!r} is not an identifier (letters, digits, _)")
        return value
