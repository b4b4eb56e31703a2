"""The syntax of configuration lines (``prj.conf`` fragments, board defconfigs, ``.config``).

Pure text: nothing here knows the Kconfig tree. A line is one of

* blank, or a comment (``# ...``): ignored;
* ``CONFIG_NAME=value``: an assignment;
* ``# CONFIG_NAME is not set``: the assignment ``NAME=n`` (bool symbols only).

Leading and trailing blanks are ignored. Anything else is malformed. Values are then checked
against the symbol's type: a bool is ``y`` or ``n``; an int is decimal; a hex is ``0x`` followed by
hex digits (the prefix is required, so ``400000`` cannot be misread; a bare ``0``, as in
Zephyr's ``CONFIG_KERNEL_VM_OFFSET=0``, is fine); a string is a double-quoted
literal with ``\\"`` and ``\\\\`` escapes. kconfiglib itself is laxer (it reads only the first
character of a bool and takes hex without ``0x``); mmusim refuses what kconfiglib would guess at.
"""

from __future__ import annotations

import re
import sys

import attrs

_ASSIGN = re.compile(r"CONFIG_([A-Za-z0-9_]+)=(.*)")
_UNSET = re.compile(r"#\s*CONFIG_([A-Za-z0-9_]+) is not set")
_SPACED = re.compile(r"(?:CONFIG_)?([A-Za-z0-9_]+)\s+=\s*(.*)|(?:CONFIG_)?([A-Za-z0-9_]+)=\s+(.*)")
_NO_PREFIX = re.compile(r"([A-Za-z0-9_]+)=(.*)")

_INT = re.compile(r"[-+]?[0-9]+")
_HEX = re.compile(r"0[xX][0-9a-fA-F]+|0")
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')


class SyntaxProblem(Exception):
    """A line or value that cannot be read; the message is the reason, without file and line."""


@attrs.frozen
class Line:
    """One assignment as written: ``NAME`` (no ``CONFIG_`` prefix) and the value text.

    ``unset`` marks the ``# CONFIG_NAME is not set`` form (``value`` is then ``"n"``).
    """

    name: str
    value: str
    unset: bool = False


def parse_line(text: str) -> Line | None:
    """The assignment on ``text``, or None for a blank or comment line; SyntaxProblem if malformed."""
    line = text.strip()
    if not line:
        return None
    m = _UNSET.fullmatch(line)
    if m:
        return Line(m.group(1), "n", unset=True)
    if line.startswith("#"):
        return None
    m = _ASSIGN.fullmatch(line)
    if m and not m.group(2).startswith((" ", "\t")):
        return Line(m.group(1), m.group(2))
    raise SyntaxProblem(_malformed(line))


def _malformed(line: str) -> str:
    m = _SPACED.fullmatch(line)
    if m:
        name = m.group(1) or m.group(3)
        value = (m.group(2) if m.group(1) else m.group(4)).strip()
        return f"malformed line {line!r}: no blanks around '=' (write CONFIG_{name}={value})"
    m = _NO_PREFIX.fullmatch(line)
    if m:
        return (
            f"malformed line {line!r}: symbol names need the CONFIG_ prefix"
            f" (write CONFIG_{m.group(1)}={m.group(2)})"
        )
    return (
        f"malformed line {line!r}: expected CONFIG_NAME=value, '# CONFIG_NAME is not set',"
        " a comment or a blank line"
    )


def check_value(name: str, kind: str, value: str) -> str:
    """``value`` as kconfiglib should receive it, for a symbol of type ``kind``.

    ``kind`` is kconfiglib's type name: ``bool``, ``int``, ``hex`` or ``string``. Raises
    SyntaxProblem if the text is not a value of that type. Ints are passed on in canonical form
    (``+007`` becomes ``7``); hex keeps its digits as written; strings are unescaped.
    """
    if kind == "bool":
        if value in ("y", "n"):
            return value
        raise SyntaxProblem(f"{name} is a bool symbol: {value!r} is not y or n")
    if kind == "int":
        digits = len(value.lstrip("+-"))
        if _INT.fullmatch(value) and digits > sys.get_int_max_str_digits():
            raise SyntaxProblem(f"{name} is an int symbol: a number of {digits} digits is out of "
                                f"range (Python reads at most {sys.get_int_max_str_digits()})")  # fmt: skip
        if _INT.fullmatch(value):
            return str(int(value, 10))
        raise SyntaxProblem(f"{name} is an int symbol: {value!r} is not a decimal integer")
    if kind == "hex":
        if _HEX.fullmatch(value):
            return value
        hint = f" (write 0x{value})" if re.fullmatch(r"[0-9a-fA-F]+", value) else ""
        raise SyntaxProblem(
            f"{name} is a hex symbol: {value!r} is not a hex number starting with 0x{hint}"
        )
    if kind == "string":
        m = _STRING.fullmatch(value)
        if m:
            return re.sub(r"\\(.)", r"\1", m.group(1))
        raise SyntaxProblem(f"{name} is a string symbol: {value} is not a double-quoted string")
    raise SyntaxProblem(f"{name} has type {kind}, which mmusim does not support")


def value_number(kind: str, text: str) -> int:
    """The integer an int (decimal) or hex value text stands for."""
    return int(text, 16 if kind == "hex" else 10)
