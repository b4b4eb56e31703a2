"""Scenario files: TOML in, a checked ``Scenario`` out; every problem a ``ScenarioError`` at FILE:LINE.

A scenario is one TOML file (format: docs/scenarios.md)::

    [scenario]   name, description, zephyr_test, board, config = ["CONFIG_X=y", ...], seed, max_steps
    [stacks]     NAME = { size = 8192, user = true }       # K_THREAD_STACK_DEFINE / K_KERNEL_STACK_DEFINE
    [partitions] NAME = { stack = "buf", size = 4096, attr = "P_RW_U_RW" }   # K_MEM_PARTITION_DEFINE
    [runtime]    flavour = "linux", rlimit_stack = 8388608, stack_guard_gap_pages = 256   # a process
    [bodies]     main = [ { op = "create", ... }, ... ]    # the main thread; other bodies by name
    [expect]     faults, facts, threads, log_contains, log_not_contains, error

Every op becomes a ``mmusim.kernel.Op``; every name an op or an expectation uses (thread, stack,
body, mapping, fact) must be defined somewhere in the file; config lines go through the real
Kconfig loader with this file's line numbers. Errors read ``FILE:LINE: key: what is wrong (what
is allowed)``, e.g. ``s.toml:14: bodies.main[2].op: unknown op 'jion' (did you mean 'join'?
allowed: abort, ...)``.

This module reads a file section by section; the rest of the package is split by concern, and
imports only go down this list:

    toml_lines   KeyPath, key_text, Locator: the line of each key path (tomllib gives none)
    expr         Expr, ExprError: the whitelisted expressions of ``expect.facts`` and ``cr2``
    schema       Scenario, StackSpec, Expect, FaultExpect, FactExpect, ThreadExpect: the result
    document     ScenarioError, Document: checks of one TOML value that raise at its line
    names        Names: the threads, mappings, facts ... a file defines, and the uses to check
    ops          read_bodies: ``[bodies]`` into ``Op``s, from one table of op kinds and keys
    load         load_scenario: ``[scenario]``, ``[stacks]``, ``[partitions]``, ``[bodies]``,
                 ``[expect]``

Design choices:

* Sections are read in the order above and the first problem stops the load. Uses of names in
  ``[bodies]`` are checked once all bodies are read (a body may create a thread defined by a
  later op); ``[expect]`` comes last and checks its names at once.
* TOML syntax errors are ``tomllib``'s own message, at its line and column, under key ``toml``.
* Kconfig problems (unknown symbol, unmet dependency ...) come from ``mmusim.kconfig`` with this
  file's name and the line of the ``scenario.config[i]`` string that caused them.
* The names this module had before the split are still importable from it.
"""

from __future__ import annotations

import re
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmusim._text import TooLarge, not_utf8, read_text
from mmusim.kconfig import Config, ConfigError, boards, load_config
from mmusim.kernel import K_MEM_PARTITION_ATTRS, Op
from mmusim.runtime import FLAVOURS
from mmusim.scenario.document import (
    Document,
    ScenarioError,
    choices,
    describe,
    display_path,
    hint,
    is_kind,
)
from mmusim.scenario.expr import EXPR_HELP, Expr, ExprError
from mmusim.scenario.names import Names
from mmusim.scenario.ops import compiled_with, read_bodies, read_prologue
from mmusim.scenario.schema import (
    GO_STACKS,
    Expect,
    FactExpect,
    FaultExpect,
    PartitionSpec,
    RuntimeSpec,
    Scenario,
    StackSpec,
    ThreadExpect,
    config_ncpus,
)
from mmusim.scenario.toml_lines import KeyPath, Locator, key_text

__all__ = [
    "Expect",
    "Expr",
    "ExprError",
    "FactExpect",
    "FaultExpect",
    "Locator",
    "Scenario",
    "ScenarioError",
    "StackSpec",
    "ThreadExpect",
    "load_scenario",
]

_DEFAULT_MAX_STEPS = 2_000_000
# The facts a process records when a fault becomes a SIGSEGV (mmusim.runtime.process): known to
# [expect] in every file with [runtime]; the runtime ops add their own (ops.py).
RUNTIME_FACTS = (
    "killed",
    "sigsegv.si_addr",
    "sigsegv.si_code",
    "sigsegv.reason",
    "sigsegv.stack",
    "sigsegv.handler",
)
_FAULT_IN = ("front_guard", "rear_guard", "stack", "stack_reserved", "legacy_guard", "other")
_FACT_CHECKS = (
    "equals",
    "not_equals",
    "all_equal",
    "all_distinct",
    "none_null",
    "count",
    "increasing",
    "decreasing",
)


MAX_SCENARIO_BYTES = 16 << 20
"""A scenario file larger than this (16 MiB; the bundled ones have a few KiB) is refused unread."""


def load_scenario(path: str | Path) -> Scenario:
    """Read and check a scenario file; raises ScenarioError (FILE:LINE: key: problem)."""
    path = Path(path)
    file = display_path(path)
    try:
        text = read_text(path, MAX_SCENARIO_BYTES)
    except TooLarge as e:
        raise ScenarioError(file, 1, "(file)", f"cannot read scenario: {e}") from None
    except OSError as e:
        reason = e.strerror or str(e)
        raise ScenarioError(file, 1, "(file)", f"cannot read scenario: {reason}") from None
    except UnicodeDecodeError as e:
        line, reason = not_utf8(e)
        raise ScenarioError(file, line, "(file)", f"{reason}; a scenario is UTF-8") from None
    try:
        raw = tomllib.loads(text)
    except RecursionError:
        raise _too_deep(file, text) from None
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        m = re.search(r"\s*\(at line (\d+), column (\d+)\)$", msg)
        line = int(m.group(1)) if m else max(1, text.count("\n") + 1)
        what = msg[: m.start()] if m else msg.replace(" (at end of document)", "")
        where = f" at column {m.group(2)}" if m else " at end of file"
        raise ScenarioError(file, line, "toml", f"syntax error: {what}{where}") from None
    except ValueError:  # tomllib: an integer longer than int() reads (not a TOMLDecodeError)
        raise _too_long(file, text) from None
    try:
        return _Reader(path, text).read(raw)
    except RecursionError:
        raise _too_deep(file, text) from None


def _too_long(file: str, text: str) -> ScenarioError:
    """The error for a number with more digits than Python's int() reads, at its line."""
    limit = sys.get_int_max_str_digits()
    m = re.search(rf"[0-9](?:_?[0-9]){{{limit},}}", text)
    line = text.count("\n", 0, m.start()) + 1 if m else 1
    return ScenarioError(
        file, line, "toml", f"a number of more than {limit} digits is out of range"
    )


_MAX_NESTING = 100


def _too_deep(file: str, text: str) -> ScenarioError:
    """The error for a file nested too deeply to read, at the line where brackets and braces
    (counted naively) first nest more than ``_MAX_NESTING`` deep."""
    depth, line = 0, 1
    for ch in text:
        if ch == "\n":
            line += 1
        elif ch in "[{":
            depth += 1
            if depth > _MAX_NESTING:
                break
        elif ch in "]}":
            depth -= 1
    else:
        line = 1
    return ScenarioError(
        file,
        line,
        "toml",
        "nested too deeply for the TOML reader (arrays and inline tables hundreds of levels"
        " inside each other; a scenario needs a few)",
    )


class _Reader:
    """Reads one file's sections; ``doc`` says where a value is, ``names`` checks what it names."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.doc = Document(path, text)
        self.names = Names(self.doc)

    def read(self, raw: dict[str, Any]) -> Scenario:
        """The whole file, section by section."""
        self.doc.keys(
            raw,
            (),
            ("scenario", "build", "stacks", "partitions", "runtime", "bodies", "expect"),
            ("scenario", "bodies"),
        )
        head = self.head(raw["scenario"])
        config = self.config(head["board"], head["config_lines"])
        stacks = self.stacks(raw.get("stacks", {}))
        parts = self.partitions(raw.get("partitions", {}), {s.name for s in stacks}, config)
        runtime = self.runtime(raw["runtime"]) if "runtime" in raw else None
        bodies = read_bodies(self.doc, self.names, raw["bodies"], runtime=runtime is not None)
        if "build" in raw:
            bodies = self.build(raw["build"], bodies)
        ncpus = config_ncpus(config)
        self.names.resolve({s.name for s in stacks}, set(bodies), ncpus, [p.name for p in parts])
        self.check_domain_ops(config)
        expect = self.expect(raw.get("expect", {}), ncpus)
        return Scenario(
            path=self.path, **head, config=config, stacks=stacks, bodies=bodies, expect=expect,
            partitions=parts, runtime=runtime,
        )  # fmt: skip

    def head(self, raw: Any) -> dict[str, Any]:
        """``[scenario]``, as ``Scenario`` fields (all but ``config``, which ``config`` loads)."""
        doc, p = self.doc, ("scenario",)
        head = doc.table(raw, p)
        doc.keys(
            head,
            p,
            ("name", "description", "zephyr_test", "board", "config", "seed", "max_steps"),
            ("board",),
        )
        name = doc.opt(head, p, "name", "str", display_path(self.path.stem))
        description = doc.opt(head, p, "description", "str", "")
        zephyr_test = doc.opt(head, p, "zephyr_test", "str", "")
        board = doc.typed(head, p, "board", "str")
        if board not in boards():
            raise doc.err(
                (*p, "board"),
                f"unknown board {board!r} ({hint(board, boards())}allowed: {choices(boards())})",
            )
        lines = doc.opt(head, p, "config", "list", [])
        for i, line in enumerate(lines):
            if not isinstance(line, str):
                raise doc.err(
                    (*p, "config", i),
                    f'expected a string like "CONFIG_X=y", got {describe(line)}',
                )
        seed = doc.opt(head, p, "seed", "int", None)
        if seed is not None and seed < 0:
            raise doc.err((*p, "seed"), f"seed {seed} is negative (allowed: an integer >= 0)")
        max_steps = doc.opt(head, p, "max_steps", "int", _DEFAULT_MAX_STEPS)
        if max_steps <= 0:
            raise doc.err((*p, "max_steps"), f"{max_steps} is not positive")
        return {
            "name": name,
            "description": description,
            "zephyr_test": zephyr_test,
            "board": board,
            "config_lines": tuple(lines),
            "seed": seed,
            "max_steps": max_steps,
        }

    def config(self, board: str, lines: Sequence[str]) -> Config:
        """The board's Kconfig with ``scenario.config``; errors name the line they come from."""
        extra = [
            (self.doc.file, self.doc.line(("scenario", "config", i)), text)
            for i, text in enumerate(lines)
        ]
        try:
            return load_config(board, extra_lines=extra)
        except ConfigError as e:
            if e.path == self.doc.file and e.line is not None:
                on_line = [i for i, x in enumerate(extra) if x[1] == e.line]
                key: KeyPath = ("scenario", "config")
                if len(on_line) == 1:  # else several entries share the line: name the array
                    key = (*key, on_line[0])
                raise self.doc.err(key, e.reason) from None
            raise self.doc.err(("scenario", "board"), f"configuration: {e}") from None

    def stacks(self, raw: Any) -> tuple[StackSpec, ...]:
        """``[stacks]``: NAME = { size, user }."""
        doc = self.doc
        tbl = doc.table(raw, ("stacks",))
        out = []
        for name, spec in tbl.items():
            p: KeyPath = ("stacks", name)
            doc.name(name, p, "stack")
            spec = doc.table(spec, p)
            doc.keys(spec, p, ("size", "user"), ("size",))
            size = doc.typed(spec, p, "size", "int")
            if size <= 0:
                raise doc.err((*p, "size"), f"stack size {size} is not positive")
            user = doc.opt(spec, p, "user", "bool", False)
            out.append(StackSpec(name, size, user))
        return tuple(out)

    def partitions(self, raw: Any, stacks: set[str], config: Config) -> tuple[PartitionSpec, ...]:
        """``[partitions]``: NAME = { addr | stack (+ offset), size, attr } (memory domains)."""
        doc = self.doc
        tbl = doc.table(raw, ("partitions",))
        if tbl and not config.values.get("USERSPACE"):
            raise doc.err(("partitions",), "memory partitions need CONFIG_USERSPACE=y")
        out = []
        for name, spec in tbl.items():
            p: KeyPath = ("partitions", name)
            doc.name(name, p, "partition")
            spec = doc.table(spec, p)
            doc.keys(spec, p, ("addr", "stack", "offset", "size", "attr"), ("size",))
            if ("addr" in spec) == ("stack" in spec):
                raise doc.err(p, "give exactly one of 'addr' or 'stack' (where the partition is)")
            size = doc.typed(spec, p, "size", "int")
            if size <= 0 or size % 4096:
                raise doc.err((*p, "size"), f"size {size} is not a positive multiple of 4096")
            attr = doc.opt(spec, p, "attr", "str", "P_RW_U_RW")
            if attr not in K_MEM_PARTITION_ATTRS:
                allowed = list(K_MEM_PARTITION_ATTRS)
                raise doc.err(
                    (*p, "attr"),
                    f"unknown attribute {attr!r} ({hint(attr, allowed)}allowed: {choices(allowed)})",
                )
            addr = doc.opt(spec, p, "addr", "int", 0)
            stack = doc.opt(spec, p, "stack", "str", "")
            offset = doc.opt(spec, p, "offset", "int", 0)
            if "stack" in spec and stack not in stacks:
                raise doc.err(
                    (*p, "stack"),
                    f"unknown stack {stack!r} ({hint(stack, sorted(stacks))}defined in [stacks]: "
                    f"{choices(stacks) or 'none'})",
                )
            if addr < 0 or addr % 4096 or offset < 0 or offset % 4096:
                key = "addr" if "addr" in spec else "offset"
                raise doc.err((*p, key), "not a page-aligned address (a multiple of 4096, >= 0)")
            out.append(PartitionSpec(name, size, attr, addr, stack, offset))
        return tuple(out)

    def build(self, raw: Any, bodies: dict[str, tuple[Op, ...]]) -> dict[str, tuple[Op, ...]]:
        """``[build]``: how the bodies were compiled. ``prologue`` is every body's function
        prologue (``mmusim.hw.PROLOGUES``, a compiler flag such as -fstack-clash-protection),
        ``prologue_of`` a body's own (``{ NAME = "checked" }``); a call's own ``prologue`` or
        ``probe`` wins."""
        doc, p = self.doc, ("build",)
        tbl = doc.table(raw, p)
        doc.keys(tbl, p, ("prologue", "prologue_of"), ())

        default = (
            read_prologue(doc, tbl["prologue"], (*p, "prologue")) if "prologue" in tbl else None
        )
        own = doc.table(tbl.get("prologue_of", {}), (*p, "prologue_of"))
        for name in own:
            if name not in bodies:
                raise doc.err(
                    (*p, "prologue_of", name),
                    f"no body named {name!r} ({hint(name, list(bodies))}allowed: "
                    f"{choices(bodies)})",
                )
        out = {}
        for name, ops in bodies.items():
            kind = (
                read_prologue(doc, own[name], (*p, "prologue_of", name)) if name in own else default
            )
            out[name] = compiled_with(ops, kind) if kind else ops
        return out

    def runtime(self, raw: Any) -> RuntimeSpec:
        """``[runtime]``: flavour, rlimit_stack, stack_guard_gap_pages (a process on the kernel).
        The facts the process records on any fault (``killed``, ``sigsegv.*``) exist from here."""
        doc, p = self.doc, ("runtime",)
        tbl = doc.table(raw, p)
        doc.keys(
            tbl, p, ("flavour", "rlimit_stack", "stack_guard_gap_pages", "go_stacks"), ("flavour",)
        )
        flavour = doc.typed(tbl, p, "flavour", "str")
        if flavour not in FLAVOURS:
            raise doc.err(
                (*p, "flavour"),
                f"unknown flavour {flavour!r} ({hint(flavour, list(FLAVOURS))}allowed: "
                f"{choices(FLAVOURS)})",
            )
        rlimit = doc.opt(tbl, p, "rlimit_stack", "int", None)
        if rlimit is not None and (rlimit <= 0 or rlimit % 4096):
            raise doc.err(
                (*p, "rlimit_stack"),
                f"{rlimit} is not a positive multiple of 4096 (RLIMIT_STACK in bytes)",
            )
        gap = doc.opt(tbl, p, "stack_guard_gap_pages", "int", None)
        if gap is not None and gap < 0:
            raise doc.err(
                (*p, "stack_guard_gap_pages"), f"{gap} is negative (allowed: an integer >= 0)"
            )
        go = doc.opt(tbl, p, "go_stacks", "str", None)
        if go is not None and go not in GO_STACKS:
            raise doc.err(
                (*p, "go_stacks"),
                f"unknown Go stacks {go!r} ({hint(go, list(GO_STACKS))}allowed: "
                f"{choices(GO_STACKS)})",
            )
        for fact in RUNTIME_FACTS:
            self.names.define("label", fact, p)
        return RuntimeSpec(flavour, rlimit, gap, go)

    def check_domain_ops(self, config: Config) -> None:
        """Memory-domain ops need CONFIG_USERSPACE (mem_domain.c is built only with it)."""
        if config.values.get("USERSPACE") or not self.names.domain_uses:
            return
        raise self.doc.err(self.names.domain_uses[0], "memory domains need CONFIG_USERSPACE=y")

    # -- expectations -------------------------------------------------------------------------

    def expect(self, raw: Any, ncpus: int) -> Expect:
        """``[expect]``: faults, facts, threads, log lines and an expected error."""
        doc, p = self.doc, ("expect",)
        tbl = doc.table(raw, p)
        doc.keys(
            tbl, p, ("faults", "facts", "threads", "log_contains", "log_not_contains", "error"), ()
        )
        faults = tuple(
            self.fault_expect(item, (*p, "faults", i), ncpus)
            for i, item in enumerate(doc.opt(tbl, p, "faults", "list", []))
        )
        facts = tuple(
            self.fact_expect(item, (*p, "facts", i))
            for i, item in enumerate(doc.opt(tbl, p, "facts", "list", []))
        )
        threads = tuple(
            self.thread_expect(item, (*p, "threads", i), ncpus)
            for i, item in enumerate(doc.opt(tbl, p, "threads", "list", []))
        )
        logs = {}
        for key in ("log_contains", "log_not_contains"):
            items = doc.opt(tbl, p, key, "list", [])
            for i, text in enumerate(items):
                if not isinstance(text, str):
                    raise doc.err((*p, key, i), f"expected a string, got {describe(text)}")
            logs[key] = tuple((doc.line((*p, key, i)), t) for i, t in enumerate(items))
        error = doc.opt(tbl, p, "error", "str", None)
        if error == "":
            raise doc.err((*p, "error"), "empty string (give a substring of the expected error)")
        return Expect(
            faults=faults,
            facts=facts,
            threads=threads,
            log_contains=logs["log_contains"],
            log_not_contains=logs["log_not_contains"],
            error=error,
            error_line=doc.line((*p, "error")),
            faults_line=doc.line((*p, "faults")),
        )

    def fault_expect(self, raw: Any, path: KeyPath, ncpus: int) -> FaultExpect:
        """One of ``expect.faults``: the fields to check, each optional."""
        doc = self.doc
        tbl = doc.table(raw, path)
        doc.keys(tbl, path, ("thread", "reason", "cpu", "vector", "cr2", "error_code", "in"), ())
        fields: dict[str, Any] = {}
        if "thread" in tbl:
            fields["thread"] = doc.typed(tbl, path, "thread", "str")
            self.names.check_thread(fields["thread"], (*path, "thread"), ncpus, idle=True)
        for key in ("reason", "cpu", "vector", "error_code"):
            if key in tbl:
                fields[key] = doc.typed(tbl, path, key, "int")
        if "reason" in fields and not 0 <= fields["reason"] <= 4:
            raise doc.err(
                (*path, "reason"),
                f"reason {fields['reason']} is not a K_ERR_* code (allowed: 0 CPU exception, "
                "1 spurious IRQ, 2 stack overflow, 3 kernel oops, 4 kernel panic)",
            )
        if "cpu" in fields and not 0 <= fields["cpu"] < ncpus:
            raise doc.err((*path, "cpu"), f"CPU {fields['cpu']} does not exist ({ncpus} CPU(s))")
        if "cr2" in tbl:
            cr2 = tbl["cr2"]
            if is_kind("int", cr2):
                fields["cr2"] = cr2
            elif isinstance(cr2, str):
                fields["cr2"] = self.expr(cr2, (*path, "cr2"))
            else:
                raise doc.err(
                    (*path, "cr2"),
                    f"expected an integer or an expression (a string), got {describe(cr2)}",
                )
        if "in" in tbl:
            where = doc.typed(tbl, path, "in", "str")
            self.check_fault_in(where, (*path, "in"))
            fields["where"] = where
        return FaultExpect(doc.line(path), key_text(path), **fields)

    def check_fault_in(self, where: str, path: KeyPath) -> None:
        """``where`` is a place a fault can be in: ``_FAULT_IN`` or a known mapping's."""
        if where in _FAULT_IN:
            return
        if where.startswith("mapping."):
            rest = where.split(".", 1)[1]
            name = rest.removesuffix(".guard_before").removesuffix(".guard_after")
            if self.names.mapping_known(name):
                return
        allowed = [
            *_FAULT_IN,
            "mapping.NAME",
            "mapping.NAME.guard_before",
            "mapping.NAME.guard_after",
        ]
        raise self.doc.err(
            path, f"unknown place {where!r} ({hint(where, _FAULT_IN)}allowed: {choices(allowed)})"
        )

    def fact_expect(self, raw: Any, path: KeyPath) -> FactExpect:
        """One of ``expect.facts``: a recorded fact with checks, or one expression."""
        doc = self.doc
        tbl = doc.table(raw, path)
        doc.keys(tbl, path, ("fact", "expr", *_FACT_CHECKS), ())
        line, key = doc.line(path), key_text(path)
        if ("fact" in tbl) == ("expr" in tbl):
            raise doc.err(path, "give exactly one of 'fact' (with checks) or 'expr'")
        if "expr" in tbl:
            extra = [k for k in tbl if k != "expr"]
            if extra:
                raise doc.err(
                    (*path, extra[0]), "an 'expr' entry takes no other keys (put the check in it)"
                )
            text = doc.typed(tbl, path, "expr", "str")
            return FactExpect(line, key, expr=self.expr(text, (*path, "expr")))
        fact = doc.typed(tbl, path, "fact", "str")
        self.names.check_label(fact, (*path, "fact"))
        checks = tuple(
            (name, self.fact_check(name, tbl[name], (*path, name)))
            for name in _FACT_CHECKS
            if name in tbl
        )
        if not checks:
            raise doc.err(
                path, f"no check for fact {fact!r} (allowed: {choices(_FACT_CHECKS)}; or use expr)"
            )
        return FactExpect(line, key, fact=fact, checks=checks)

    def fact_check(self, name: str, value: Any, path: KeyPath) -> Any:
        """The value to hold a fact against for check ``name`` (``"null"`` is None)."""
        if name in ("equals", "not_equals"):
            if not (is_kind("int", value) or is_kind("bool", value) or is_kind("str", value)):
                raise self.doc.err(
                    path, f'expected an integer, boolean, string or "null", got {describe(value)}'
                )
            return None if value == "null" else value
        if name == "count":
            if not is_kind("int", value) or value < 0:
                raise self.doc.err(path, f"expected an integer >= 0, got {describe(value)}")
            return value
        if value is not True:
            raise self.doc.err(path, f"expected true, got {describe(value)} (omit the key instead)")
        return True

    def thread_expect(self, raw: Any, path: KeyPath, ncpus: int) -> ThreadExpect:
        """One of ``expect.threads``: a thread and at least one check on it."""
        doc = self.doc
        tbl = doc.table(raw, path)
        doc.keys(tbl, path, ("thread", "exit_reason", "state", "dead"), ("thread",))
        thread = doc.typed(tbl, path, "thread", "str")
        self.names.check_thread(thread, (*path, "thread"), ncpus, idle=True)
        if len(tbl) == 1:
            raise doc.err(path, "no check for the thread (allowed: exit_reason, state, dead)")
        return ThreadExpect(
            doc.line(path),
            key_text(path),
            thread,
            doc.opt(tbl, path, "exit_reason", "str", None),
            doc.opt(tbl, path, "state", "str", None),
            doc.opt(tbl, path, "dead", "bool", None),
        )

    def expr(self, text: str, path: KeyPath) -> Expr:
        """An expression that reads only recorded facts."""
        try:
            e = Expr.parse(text)
        except ValueError as exc:
            raise self.doc.err(path, f"{exc} (allowed: {EXPR_HELP})") from None
        for name in sorted(e.names):
            self.names.check_label(name, path)
        return e
