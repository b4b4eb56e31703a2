"""Where a value is in a TOML file: key paths mapped to line numbers.

``tomllib`` gives values but no positions, and a scenario error must name its line
(``s.toml:14: bodies.main[2].op: ...``). ``Locator`` re-reads the raw text with a small scanner
and records, for each key path, the line it starts on. A key path is a tuple of table keys and
array indexes, ``("bodies", "main", 2, "op")``; ``key_text`` writes it the way the error
messages show it, ``bodies.main[2].op``.

Design choices:

* The scanner only runs on text ``tomllib`` has already accepted, so it checks nothing: it walks
  tables, ``[[arrays of tables]]``, dotted keys, inline tables, arrays (of scalars, inline tables,
  arrays) over several lines, comments and all four kinds of strings, and skips scalar values
  without parsing them. On text it does not understand it stops and keeps what it found so far.
* The first line wins: a table opened by a header keeps the header's line even when dotted keys
  or later headers extend it, so an error about a whole table points at where it starts.
* A path with no line of its own (a missing key, say) takes its longest prefix's line.
* Libraries that report positions were tried instead. tree-sitter with tree-sitter-toml gives
  the same lines on every valid file tried and would save about 100 lines, but it is two
  compiled packages (the grammar's last release is from 2024) in a pure-Python project, and on
  broken text it finds other keys than the scanner (whose behaviour a test pins). toml-rs'
  ``load_with_metadata`` has no line for table headers (``[bodies]``), so three of the tests'
  error messages would move a line. tomlkit keeps no positions. So the scanner stays: stdlib
  only, about 0.4 ms a file.
"""

from __future__ import annotations

import contextlib
import re
import tomllib
from bisect import bisect_right

__all__ = ["KeyPath", "Locator", "key_text"]

KeyPath = tuple[str | int, ...]  # ("bodies", "main", 2, "thread")

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def key_text(path: KeyPath) -> str:
    """``path`` as messages show it: ``bodies.main[2].op``, ``"odd key".x``; ``(file)`` if empty."""
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            part = p if _BARE_KEY.fullmatch(p) else f'"{p}"'
            out += f".{part}" if out else part
    return out or "(file)"


class _Stop(Exception):
    """The scanner met something it does not understand: keep the lines found so far."""


class Locator:
    """Maps key paths of a TOML document to the line they start on.

    Covers what scenario files use: ``[table]`` and ``[[array.of.tables]]`` headers, dotted keys,
    inline tables, arrays (of scalars, inline tables, arrays) over several lines, comments, and all
    four kinds of strings. Array elements are indexed from 0: ``("bodies", "main", 2, "op")``.
    Meant for text ``tomllib`` accepted; on anything else it keeps what it found so far.
    """

    def __init__(self, text: str) -> None:
        self._s = text
        self._i = 0
        self._starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]
        self._aot: dict[KeyPath, int] = {}
        self.lines: dict[KeyPath, int] = {}
        with contextlib.suppress(_Stop, IndexError):
            self._document()

    def line(self, path: KeyPath) -> int:
        """The line of ``path``, or of its longest prefix that has one (1 if none)."""
        for n in range(len(path), 0, -1):
            hit = self.lines.get(path[:n])
            if hit is not None:
                return hit
        return 1

    # -- scanning ---------------------------------------------------------------------------

    def _line_at(self, i: int) -> int:
        return bisect_right(self._starts, i)

    def _mark(self, path: KeyPath, line: int, start: int = 1) -> None:
        for n in range(start, len(path) + 1):
            self.lines.setdefault(path[:n], line)

    def _skip(self, newlines: bool = True) -> None:
        s, n = self._s, len(self._s)
        while self._i < n:
            ch = s[self._i]
            if ch in " \t\r" or (newlines and ch == "\n"):
                self._i += 1
            elif ch == "#":
                end = s.find("\n", self._i)
                self._i = n if end < 0 else end
            else:
                return

    def _expect(self, token: str) -> None:
        self._skip(newlines=False)
        if not self._s.startswith(token, self._i):
            raise _Stop
        self._i += len(token)

    def _document(self) -> None:
        s = self._s
        table: KeyPath = ()
        while True:
            self._skip()
            if self._i >= len(s):
                return
            line = self._line_at(self._i)
            if s.startswith("[[", self._i):
                self._i += 2
                key = self._key()
                self._expect("]]")
                index = self._aot.get(key, 0)
                self._aot[key] = index + 1
                table = (*key, index)
                self._mark(key, line)
                self.lines[table] = line
            elif s[self._i] == "[":
                self._i += 1
                table = self._key()
                self._expect("]")
                self._mark(table, line)
            else:
                self._keyval(table)

    def _keyval(self, table: KeyPath) -> None:
        line = self._line_at(self._i)
        full = table + self._key()
        self._mark(full, line, start=len(table) + 1)
        self._expect("=")
        self._value(full)

    def _key(self) -> KeyPath:
        s = self._s
        parts: list[str | int] = []
        while True:
            self._skip(newlines=False)
            if s[self._i] in "\"'":
                parts.append(self._string())
            else:
                m = _BARE_KEY.match(s, self._i)
                if m is None:
                    raise _Stop
                parts.append(m.group())
                self._i = m.end()
            self._skip(newlines=False)
            if s[self._i] != ".":
                return tuple(parts)
            self._i += 1

    def _string(self) -> str:
        """Consume a string at the cursor and return its value."""
        s, start = self._s, self._i
        for quote in ('"""', "'''"):
            if s.startswith(quote, start):
                i = start + 3
                while True:
                    if quote == '"""' and s[i] == "\\":
                        i += 2
                        continue
                    if s.startswith(quote, i):
                        i += 3
                        while i < len(s) and s[i] == quote[0]:  # up to two more quotes
                            i += 1
                        break
                    i += 1
                self._i = i
                return ""  # multi-line strings are values only, never keys here
        quote = s[start]
        i = start + 1
        while s[i] != quote:
            if s[i] == "\n":
                raise _Stop
            i += 2 if quote == '"' and s[i] == "\\" else 1
        self._i = i + 1
        raw = s[start : i + 1]
        try:
            return str(tomllib.loads(f"k = {raw}")["k"])
        except tomllib.TOMLDecodeError:
            return raw[1:-1]

    def _value(self, path: KeyPath) -> None:
        self._skip(newlines=False)
        s = self._s
        ch = s[self._i]
        if ch == "{":
            self._i += 1
            while True:
                self._skip()
                if s[self._i] == "}":
                    self._i += 1
                    return
                self._keyval(path)
                self._skip()
                if s[self._i] == ",":
                    self._i += 1
        elif ch == "[":
            self._i += 1
            index = 0
            while True:
                self._skip()
                if s[self._i] == "]":
                    self._i += 1
                    return
                self._mark((*path, index), self._line_at(self._i), start=len(path) + 1)
                self._value((*path, index))
                index += 1
                self._skip()
                if s[self._i] == ",":
                    self._i += 1
        elif ch in "\"'":
            self._string()
        else:
            start = self._i
            while self._i < len(s) and s[self._i] not in ",]}\n#":
                self._i += 1
            if self._i == start:
                raise _Stop
