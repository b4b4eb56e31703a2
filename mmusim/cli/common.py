"""What every ``mmusim`` subcommand shares: one-line errors and the argument types.

Bad input never gives a traceback: it gives one line naming the argument and the problem, and exit
code 2 (``mmusim translate: error: --cr3: 0x90000 is outside the image (size 0x40000)``). Three
pieces make that so, all here: ``Parser`` turns argparse's own errors (unknown option, bad
``type=``) into one line instead of a usage dump; ``fail`` prints a subcommand's error line; and
``UsageError`` lets code deep in a subcommand give up with one, which ``main`` prints with ``fail``.

The argument types (``parse_int``, ``parse_seed``, ``parse_step_count``) each accept a whole
number in their own syntax and word their errors for the option they serve.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TextIO

import mmusim

__all__ = [
    "COMMAND_HELP",
    "Parser",
    "ParseInts",
    "PipeSafeStdout",
    "UsageError",
    "VersionAction",
    "fail",
    "one_line",
    "parse_int",
    "parse_seed",
    "parse_step_count",
    "printable",
    "version",
]


class Terminated(BaseException):
    """SIGTERM (a machine shutting down, a batch system's time limit) where a command asked to
    stop as for Ctrl-C: one line, ``mmusim explore: terminated``, and the shell's code 143.
    A ``BaseException``, as ``KeyboardInterrupt`` is, so cleanups run and nothing swallows it."""


class UsageError(Exception):
    """Bad command-line input: ``argument`` names the option, ``message`` the problem."""

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(f"{argument}: {message}")


COMMAND_HELP: dict[str, str] = {
    "translate": "translate linear addresses on a memory image (one fresh walk each)",
    "walk": "show a page walk level by level",
    "config": "print the resolved Kconfig configuration of a board (+ fragments)",
    "menuconfig": "browse and change the configuration in kconfiglib's menuconfig",
    "run": "run scenario files (default: the bundled Zephyr test ports) and report verdicts",
    "map": "show the kernel address space of a scenario (guards, stacks, free space)",
    "explore": "explore every interleaving of a scenario's CPUs; report a minimal counterexample",
    "compare": "run one battery of stack attacks on every stack strategy, side by side",
    "quiz": "print a seeded problem (translate, guard, tlb) and, with --answers, its answer",
    "replay": "replay a saved counterexample trace step by step",
    "view": "write a scenario run or a trace as an HTML page to step through in a browser",
}
"""Each subcommand's one-line help: its module's parser and the lazy ``--help`` stubs
(``mmusim.cli.COMMANDS``) both take it from here."""


def fail(command: str, message: str, *, file: TextIO | None = None) -> int:
    """Print ``mmusim COMMAND: error: MESSAGE`` to stderr (or ``file``); return exit code 2.
    A file name in ``message`` whose bytes are not UTF-8 is shown escaped (``printable``)."""
    line = printable(f"mmusim {command}: error: {message}")
    print(line, file=sys.stderr if file is None else file)
    return 2


def printable(text: str) -> str:
    """``text`` as UTF-8 can carry it: the bytes of a file name that are not UTF-8 (which Python
    reads as lone surrogates) escaped, ``bad\\xff.toml``, as ``display_path`` shows a path. Any
    stream can print the result, whatever its ``errors`` setting."""
    try:
        raw = os.fsencode(text)
    except UnicodeEncodeError:  # surrogates that did not come from a file name's bytes
        raw = text.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line: its non-blank lines, stripped, joined by ``; ``."""
    return "; ".join(part.strip() for part in str(exc).splitlines() if part.strip())


class PipeSafeStdout:
    """Standard output that survives its reader going away (``mmusim explore ... | head -2``).

    Python's recommended handling of a closed pipe: on ``BrokenPipeError`` point file descriptor 1
    at ``/dev/null`` (so no later flush fails, not even at exit) and drop the rest of the output.
    The command itself goes on -- it still writes its files -- and its exit code is kept, so a
    violation still exits 1. ``main`` puts one in ``sys.stdout`` for every subcommand."""

    def __init__(self, inner: TextIO) -> None:
        self.inner = inner
        self.broken = False

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                try:
                    return self.inner.write(text)
                except UnicodeEncodeError:  # a non-UTF-8 file name, on a strict UTF-8 stdout
                    self.inner.write(printable(text))
                    return len(text)
            except BrokenPipeError:
                self._drop()
        return len(text)

    def flush(self) -> None:
        flush = getattr(self.inner, "flush", None)  # a stand-in stdout may have none
        if not self.broken and flush is not None:
            try:
                flush()
            except BrokenPipeError:
                self._drop()

    def _drop(self) -> None:
        self.broken = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.inner.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):  # not a real file (e.g. under a test)
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class Parser(argparse.ArgumentParser):
    """argparse, but errors are one line (no usage dump) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")

    def _get_value(self, action: argparse.Action, arg_string: str) -> Any:
        # argparse converts every value through its type registry, even with no ``type=`` (then
        # to itself): twice per address with ``mmusim translate ADDR...`` (the subcommand's
        # words, then VADDR), half of the parse. Without a type, the string is the value.
        if action.type is None:
            return arg_string
        return super()._get_value(action, arg_string)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        """argparse's exit, a non-UTF-8 argument in ``message`` escaped (``printable``)."""
        super().exit(status, None if message is None else printable(message))


def version() -> str:
    """mmusim's version: the installed package's metadata, else ``mmusim.__version__``."""
    from importlib import metadata  # here: it costs --help and every command a few ms

    try:
        return metadata.version("mmusim")
    except metadata.PackageNotFoundError:
        return str(getattr(mmusim, "__version__", "unknown"))


class VersionAction(argparse.Action):
    """``--version``: print ``mmusim X.Y.Z`` and exit 0 (the version looked up only then)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault("help", "print the version of mmusim and exit")
        super().__init__(option_strings, argparse.SUPPRESS, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        print(f"mmusim {version()}")
        parser.exit(0)


# -- argument types (for argparse ``type=``) --------------------------------------------------


def _whole_number(text: str, parse: Callable[[str], int], malformed: str, negative: str) -> int:
    """``parse(text)``, which must be >= 0. ``malformed`` and ``negative`` are the error messages,
    formatted with ``text`` (and ``value`` for ``negative``)."""
    try:
        value = parse(text)
    except ValueError:
        raise argparse.ArgumentTypeError(malformed.format(text=text)) from None
    if value < 0:
        raise argparse.ArgumentTypeError(negative.format(text=text, value=value))
    return value


def _hex_or_decimal(text: str) -> int:
    return int(text.replace("_", ""), 16) if text.lower().startswith("0x") else int(text, 10)


def parse_int(text: str) -> int:
    """Hex (``0x...``) or decimal, optionally with ``_`` separators: addresses and widths."""
    return _whole_number(
        text,
        _hex_or_decimal,
        "malformed number {text!r} (use hex like 0x1000 or decimal)",
        "{text!r} is negative",
    )


_HEX_PREFIXES = ("0x", "0X")


class ParseInts(argparse.Action):
    """``type=parse_int`` for a positional that may take thousands of values, parsed in one pass.

    argparse calls a ``type=`` once per value through several layers (about 1 us each: 20 ms for
    ``mmusim translate`` with 20,000 addresses); this action gets the strings and converts them
    itself. The values and the error (``argument VADDR: malformed number 'zz' ...``, the first bad
    value in order) are those of ``type=parse_int``, raised at the same point of the parse."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        parsed: object = values  # nargs="?" without a value: its default
        try:
            if isinstance(values, str):  # nargs="?" with a value
                parsed = self.convert([values])[0]
            elif isinstance(values, list):
                parsed = self.convert(values)
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentError(self, str(exc)) from None
        setattr(namespace, self.dest, parsed)

    @staticmethod
    def convert(texts: list[str]) -> list[int]:
        """``parse_int`` of each of ``texts``; raises ``ArgumentTypeError`` for the first bad one."""
        try:  # the common case: every value well formed, in a tight loop
            values = [
                int(t.replace("_", ""), 16) if t[:2] in _HEX_PREFIXES else int(t, 10) for t in texts
            ]
            if not values or min(values) >= 0:
                return values
        except ValueError:
            pass
        return [parse_int(t) for t in texts]  # raises parse_int's error for the first bad one


def parse_seed(text: str) -> int:
    """A schedule seed: an integer >= 0 as Python writes it (``7``, ``0x1f``)."""
    return _whole_number(
        text,
        lambda t: int(t, 0),
        "malformed seed {text!r} (an integer >= 0)",
        "seed {value} is negative (an integer >= 0)",
    )


def parse_step_count(text: str) -> int:
    """A number of engine steps: an integer >= 0 as Python writes it, ``_`` separators allowed."""
    return _whole_number(
        text,
        lambda t: int(t.replace("_", ""), 0),
        "{text!r} is not a number",
        "{text!r} is negative",
    )
