"""Scenario files: TOML in, a checked ``Scenario`` out; every problem a ``ScenarioError`` at FILE:LINE.

A scenario is one TOML file (format: docs/scenarios.md)::

    [scenario]   name, description, zephyr_test, board, config = ["CONFIG_X=y", ...], seed, max_steps
    [stacks]     NAME = { size = 8192, user = true }       # K_THREAD_STACK_DEFINE / K_KERNEL_STACK_DEFINE
    [bodies]     main = [ { op = "create", ... }, ... ]    # the main thread; other bodies by name
    [expect]     faults, facts, threads, log_contains, log_not_contains, error

Every op becomes a ``mmusim.kernel.Op``; every name an op or an expectation uses (thread, stack,
body, mapping, fact) must be defined somewhere in the file; config lines go through the real
Kconfig loader with this file's line numbers. Errors read ``FILE:LINE: key: what is wrong (what
is allowed)``, e.g. ``s.toml:14: bodies.main[2].op: unknown op 'jion' (did you mean 'join'?
allowed: abort, ...)``.

``tomllib`` reports no line numbers for values, so ``Locator`` (``toml_lines``) re-reads the raw
text and maps each key path to its line. Expressions (``expect.facts[].expr``, a fault's ``cr2``)
are ``expr.Expr``; the classes a loaded scenario is made of are in ``schema``.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from mmusim.kconfig import Config, ConfigError, boards, load_config
from mmusim.kernel import K_FOREVER, K_NO_WAIT, Op
from mmusim.scenario.expr import EXPR_HELP, Expr, ExprError
from mmusim.scenario.schema import (
    Expect,
    FactExpect,
    FaultExpect,
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


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DEFAULT_MAX_STEPS = 2_000_000


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


# -- reading --------------------------------------------------------------------------------------

_THREAD_FACTS = ("mapped_addr", "mapped_sz", "stack_start", "stack_size", "state", "stack_space")
_STACK_FACTS = ("addr", "obj_len", "nonzero_bytes")
_GLOBAL_FACTS = ("free_mem", "vm_free_pages", "vm_free_start", "clock", "pending_cleanup")
_WHERE = ("start", "end", "sp", "mapped", "front_guard", "rear_guard")
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


def _describe(value: Any) -> str:
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


def _is(kind: str, value: Any) -> bool:
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


def _choices(allowed: Iterable[str]) -> str:
    return ", ".join(allowed)


def _hint(word: str, allowed: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(allowed), n=1)
    return f"did you mean {close[0]!r}? " if close else ""


# Op kinds: TOML key -> (value kind, required). Value kinds: int, int+ (> 0), int0 (>= 0), bool,
# name (an identifier), thread, newthread, stack, body, mapping, newmapping, prefix, fact, label,
# where, ticks, delay, ops.
_OPS: dict[str, dict[str, tuple[str, bool]]] = {
    "push": {"bytes": ("int+", True)},
    "pop": {"bytes": ("int+", True)},
    "call": {"frame": ("int+", True), "probe": ("bool", False)},
    "touch": {"where": ("where", True), "offset": ("int", False)},
    "write": {
        "addr": ("int0", False),
        "mapping": ("mapping", False),
        "at": ("label", False),
        "offset": ("int", False),
    },
    "read": {
        "addr": ("int0", False),
        "mapping": ("mapping", False),
        "at": ("label", False),
        "offset": ("int", False),
    },
    "sleep": {"ticks": ("ticks", True)},
    "yield": {},
    "abort_self": {},
    "return": {},
    "abort": {"thread": ("thread", True)},
    "start": {"thread": ("thread", True)},
    "join": {"thread": ("thread", True)},
    "suspend": {"thread": ("thread", True)},
    "resume": {"thread": ("thread", True)},
    "create": {
        "thread": ("newthread", True),
        "stack": ("stack", True),
        "body": ("body", True),
        "user": ("bool", False),
        "prio": ("int", False),
        "delay": ("delay", False),
    },
    "k_mem_map": {"mapping": ("newmapping", True), "size": ("int+", True), "user": ("bool", False)},
    "k_mem_unmap": {"mapping": ("mapping", True)},
    "k_mem_map_phys_bare": {
        "mapping": ("newmapping", True),
        "stack": ("stack", True),
        "size": ("int+", True),
    },
    "k_mem_unmap_phys_bare": {"mapping": ("mapping", True)},
    "exhaust": {"prefix": ("prefix", True), "size": ("int+", True), "as": ("newlabel", False)},
    "unmap_all": {"prefix": ("name", True)},
    "record": {"fact": ("fact", True), "as": ("newlabel", False)},
    "repeat": {"times": ("int0", True), "do": ("ops", True)},
}
OP_KINDS = tuple(sorted(_OPS))


@attrs.define
class _Ref:
    kind: str  # thread, stack, body, mapping, fact, label
    name: str
    path: KeyPath


class _Reader:
    """Reads one file: the checks, with the locator to say where."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.file = str(path)
        self.loc = Locator(text)
        self.refs: list[_Ref] = []
        self.threads: dict[str, KeyPath] = {}  # created threads, where first created
        self.mappings: dict[str, KeyPath] = {}
        self.prefixes: dict[str, KeyPath] = {}
        self.labels: dict[str, KeyPath] = {}

    def err(self, path: KeyPath, message: str) -> ScenarioError:
        return ScenarioError(self.file, self.loc.line(path), key_text(path), message)

    def table(self, value: Any, path: KeyPath) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.err(path, f"expected a table, got {_describe(value)}")
        return value

    def keys(
        self, tbl: Mapping[str, Any], path: KeyPath, allowed: Sequence[str], required: Sequence[str]
    ) -> None:
        for key in tbl:
            if key not in allowed:
                raise self.err(
                    (*path, key),
                    f"unknown key ({_hint(key, allowed)}allowed: {_choices(allowed)})",
                )
        for key in required:
            if key not in tbl:
                raise self.err(path, f"missing key {key!r} (required: {_choices(required)})")

    def typed(self, tbl: Mapping[str, Any], path: KeyPath, key: str, kind: str) -> Any:
        value = tbl[key]
        if not _is(kind, value):
            raise self.err((*path, key), f"expected {_KIND_TEXT[kind]}, got {_describe(value)}")
        return value

    def opt(self, tbl: Mapping[str, Any], path: KeyPath, key: str, kind: str, default: Any) -> Any:
        return self.typed(tbl, path, key, kind) if key in tbl else default

    def name(self, value: Any, path: KeyPath, what: str) -> str:
        if not isinstance(value, str):
            raise self.err(path, f"expected a {what} name (a string), got {_describe(value)}")
        if not _NAME.fullmatch(value):
            raise self.err(path, f"{what} name {value!r} is not an identifier (letters, digits, _)")
        return value

    # -- sections -----------------------------------------------------------------------------

    def read(self, doc: dict[str, Any]) -> Scenario:
        self.keys(doc, (), ("scenario", "stacks", "bodies", "expect"), ("scenario", "bodies"))
        head = self.table(doc["scenario"], ("scenario",))
        p: KeyPath = ("scenario",)
        self.keys(
            head,
            p,
            ("name", "description", "zephyr_test", "board", "config", "seed", "max_steps"),
            ("board",),
        )
        name = self.opt(head, p, "name", "str", self.path.stem)
        description = self.opt(head, p, "description", "str", "")
        zephyr_test = self.opt(head, p, "zephyr_test", "str", "")
        board = self.typed(head, p, "board", "str")
        if board not in boards():
            raise self.err(
                (*p, "board"),
                f"unknown board {board!r} ({_hint(board, boards())}allowed: {_choices(boards())})",
            )
        lines = self.opt(head, p, "config", "list", [])
        for i, line in enumerate(lines):
            if not isinstance(line, str):
                raise self.err(
                    (*p, "config", i),
                    f'expected a string like "CONFIG_X=y", got {_describe(line)}',
                )
        seed = self.opt(head, p, "seed", "int", None)
        if seed is not None and seed < 0:
            raise self.err((*p, "seed"), f"seed {seed} is negative (allowed: an integer >= 0)")
        max_steps = self.opt(head, p, "max_steps", "int", _DEFAULT_MAX_STEPS)
        if max_steps <= 0:
            raise self.err((*p, "max_steps"), f"{max_steps} is not positive")
        config = self.config(board, lines)

        stacks = self.stacks(doc.get("stacks", {}))
        bodies = self.bodies(doc["bodies"])
        ncpus = config_ncpus(config)
        self.resolve({s.name for s in stacks}, set(bodies), ncpus)
        expect = self.expect(doc.get("expect", {}), ncpus)
        return Scenario(
            path=self.path,
            name=name,
            description=description,
            zephyr_test=zephyr_test,
            board=board,
            config_lines=tuple(lines),
            config=config,
            seed=seed,
            max_steps=max_steps,
            stacks=stacks,
            bodies=bodies,
            expect=expect,
        )

    def config(self, board: str, lines: list[str]) -> Config:
        extra = [
            (self.file, self.loc.line(("scenario", "config", i)), text)
            for i, text in enumerate(lines)
        ]
        try:
            return load_config(board, extra_lines=extra)
        except ConfigError as e:
            if e.path == self.file and e.line is not None:
                on_line = [i for i, x in enumerate(extra) if x[1] == e.line]
                key: KeyPath = ("scenario", "config")
                if len(on_line) == 1:  # else several entries share the line: name the array
                    key = (*key, on_line[0])
                raise self.err(key, e.reason) from None
            raise self.err(("scenario", "board"), f"configuration: {e}") from None

    def stacks(self, raw: Any) -> tuple[StackSpec, ...]:
        tbl = self.table(raw, ("stacks",))
        out = []
        for name, spec in tbl.items():
            p: KeyPath = ("stacks", name)
            self.name(name, p, "stack")
            spec = self.table(spec, p)
            self.keys(spec, p, ("size", "user"), ("size",))
            size = self.typed(spec, p, "size", "int")
            if size <= 0:
                raise self.err((*p, "size"), f"stack size {size} is not positive")
            user = self.opt(spec, p, "user", "bool", False)
            out.append(StackSpec(name, size, user))
        return tuple(out)

    def bodies(self, raw: Any) -> dict[str, tuple[Op, ...]]:
        tbl = self.table(raw, ("bodies",))
        if "main" not in tbl:
            raise self.err(("bodies",), "missing key 'main' (the main thread's body)")
        out = {}
        for name, ops in tbl.items():
            p: KeyPath = ("bodies", name)
            self.name(name, p, "body")
            out[name] = self.ops(ops, p)
        return out

    def ops(self, raw: Any, path: KeyPath) -> tuple[Op, ...]:
        if not isinstance(raw, list):
            raise self.err(path, f"expected an array of ops, got {_describe(raw)}")
        return tuple(self.op(item, (*path, i)) for i, item in enumerate(raw))

    def op(self, raw: Any, path: KeyPath) -> Op:
        if not isinstance(raw, dict):
            raise self.err(
                path, f'expected an op table {{ op = "...", ... }}, got {_describe(raw)}'
            )
        if "op" not in raw:
            raise self.err(path, f"missing key 'op' (allowed ops: {_choices(OP_KINDS)})")
        kind = raw["op"]
        if not isinstance(kind, str) or kind not in _OPS:
            text = kind if isinstance(kind, str) else ""
            raise self.err(
                (*path, "op"),
                f"unknown op {kind!r} ({_hint(text, OP_KINDS)}allowed: {_choices(OP_KINDS)})",
            )
        spec = _OPS[kind]
        self.keys(
            raw,
            path,
            ("op", *spec),
            tuple(k for k, (_, req) in spec.items() if req),
        )
        line = self.loc.line(path)
        fields: dict[str, Any] = {"kind": kind, "line": line}
        for key, value in raw.items():
            if key == "op":
                continue
            self.field(kind, key, spec[key][0], value, (*path, key), fields)
        if kind in ("write", "read"):
            given = [k for k in ("addr", "mapping", "at") if k in raw]
            if len(given) != 1:
                raise self.err(
                    path,
                    f"{kind} needs exactly one of addr, mapping, at (got "
                    f"{', '.join(given) or 'none'})",
                )
        if kind == "create" and "delay" not in raw:
            fields["n"] = K_NO_WAIT
        if kind in ("record", "exhaust"):  # the name the value is recorded under
            fields.setdefault("label", fields["target"])
            self.labels.setdefault(fields["label"], path)
        return Op(**fields)

    def field(
        self, kind: str, key: str, vkind: str, value: Any, path: KeyPath, out: dict[str, Any]
    ) -> None:
        if vkind in ("int", "int+", "int0"):
            if not _is("int", value):
                raise self.err(path, f"expected an integer, got {_describe(value)}")
            if vkind == "int+" and value <= 0:
                raise self.err(path, f"{value} is not positive (allowed: an integer > 0)")
            if vkind == "int0" and value < 0:
                raise self.err(path, f"{value} is negative (allowed: an integer >= 0)")
            target = {"offset": "offset", "addr": "addr", "prio": "prio"}.get(key, "n")
            out[target] = value
        elif vkind == "bool":
            if not _is("bool", value):
                raise self.err(path, f"expected true or false, got {_describe(value)}")
            out[key] = value
        elif vkind == "where":
            if value not in _WHERE:
                shown = value if isinstance(value, str) else ""
                raise self.err(
                    path,
                    f"unknown place {value!r} ({_hint(shown, _WHERE)}allowed: {_choices(_WHERE)})",
                )
            out["where"] = value
        elif vkind == "ticks":
            if value == "forever":
                out["n"] = K_FOREVER
            elif _is("int", value) and value >= 0:
                out["n"] = value
            else:
                raise self.err(
                    path, f'bad tick count {value!r} (allowed: an integer >= 0 or "forever")'
                )
        elif vkind == "delay":
            if value not in ("forever", "no_wait"):
                raise self.err(
                    path,
                    f'bad delay {value!r} (allowed: "no_wait" starts the thread, "forever" '
                    "leaves it for a start op)",
                )
            out["n"] = K_FOREVER if value == "forever" else K_NO_WAIT
        elif vkind == "ops":
            out["body"] = self.ops(value, path)
        elif vkind == "fact":
            if not isinstance(value, str):
                raise self.err(path, f"expected a fact name (a string), got {_describe(value)}")
            self.refs.append(_Ref("fact", value, path))
            out["target"] = value
        elif vkind == "newlabel":
            if not isinstance(value, str) or not value:
                raise self.err(path, f"expected a fact name (a string), got {_describe(value)}")
            out["label"] = value
        else:
            what = {
                "thread": "thread",
                "newthread": "thread",
                "stack": "stack",
                "body": "body",
                "mapping": "mapping",
                "newmapping": "mapping",
                "prefix": "mapping prefix",
                "name": "mapping prefix",
                "label": "fact",
            }[vkind]
            name = self.name(value, path, what)
            if vkind == "newthread":
                if name == "main":
                    raise self.err(path, "'main' is the main thread; it cannot be created")
                self.threads.setdefault(name, path)
                out["target"] = name
            elif vkind == "newmapping":
                self.mappings.setdefault(name, path)
                out["target"] = name
            elif vkind == "prefix":
                self.prefixes.setdefault(name, path)
                out["target"] = name
            elif vkind == "name":
                out["target"] = name
            elif vkind == "label":
                self.refs.append(_Ref("label", name, path))
                out["label"] = name
            elif vkind == "stack":
                self.refs.append(_Ref("stack", name, path))
                out["stack"] = name
            elif vkind == "body":
                self.refs.append(_Ref("body", name, path))
                out["label"] = name
            else:  # thread, mapping
                self.refs.append(_Ref(vkind, name, path))
                out["target"] = name

    # -- references ---------------------------------------------------------------------------

    def thread_names(self, ncpus: int, idle: bool) -> list[str]:
        names = ["main", *self.threads]
        if idle:
            names += [f"idle {i:02d}" for i in range(ncpus)]
        return names

    def mapping_known(self, name: str) -> bool:
        if name in self.mappings:
            return True
        return any(
            name.startswith(p)
            and name[len(p) :].isdigit()
            and name[len(p) :] == str(int(name[len(p) :]))
            for p in self.prefixes
        )

    def mapping_choices(self) -> str:
        shown = [*self.mappings, *(f"{p}0, {p}1, ..." for p in self.prefixes)]
        return _choices(shown) if shown else "none: map one with k_mem_map"

    def resolve(self, stacks: set[str], bodies: set[str], ncpus: int) -> None:
        for ref in self.refs:
            if ref.kind == "stack" and ref.name not in stacks:
                raise self.err(
                    ref.path,
                    f"unknown stack {ref.name!r} ({_hint(ref.name, sorted(stacks))}defined in "
                    f"[stacks]: {_choices(stacks) or 'none'})",
                )
            if ref.kind == "body" and ref.name not in bodies:
                raise self.err(
                    ref.path,
                    f"unknown body {ref.name!r} ({_hint(ref.name, sorted(bodies))}defined in "
                    f"[bodies]: {_choices(bodies)})",
                )
            if ref.kind == "thread":
                self.check_thread(ref.name, ref.path, ncpus, idle=False)
            if ref.kind == "mapping" and not self.mapping_known(ref.name):
                raise self.err(
                    ref.path,
                    f"unknown mapping {ref.name!r} (mapped in this file: {self.mapping_choices()})",
                )
            if ref.kind == "label":
                self.check_label(ref.name, ref.path)
            if ref.kind == "fact":
                self.check_fact(ref.name, ref.path, ncpus, {s for s in stacks})

    def check_thread(self, name: str, path: KeyPath, ncpus: int, idle: bool) -> None:
        names = self.thread_names(ncpus, idle)
        if name not in names:
            raise self.err(
                path,
                f"unknown thread {name!r} ({_hint(name, names)}threads: {_choices(names)}; "
                "a thread exists once a create op names it)",
            )

    def check_label(self, name: str, path: KeyPath) -> None:
        if name not in self.labels:
            raise self.err(
                path,
                f"unknown fact {name!r} ({_hint(name, list(self.labels))}recorded facts: "
                f"{_choices(self.labels) or 'none: add a record op'})",
            )

    def check_fact(self, fact: str, path: KeyPath, ncpus: int, stacks: set[str]) -> None:
        if fact in _GLOBAL_FACTS:
            return
        if fact.startswith("mapping."):
            rest = fact.split(".", 1)[1]
            name = rest.removesuffix(".nonzero_bytes")
            if not self.mapping_known(name):
                raise self.err(
                    path,
                    f"bad fact {fact!r}: unknown mapping {name!r} (mapped in this file: "
                    f"{self.mapping_choices()})",
                )
            return
        if fact.startswith("stack."):
            name, _, field = fact.split(".", 1)[1].rpartition(".")
            if name not in stacks:
                raise self.err(
                    path,
                    f"bad fact {fact!r}: unknown stack {name!r} (defined in [stacks]: "
                    f"{_choices(stacks) or 'none'})",
                )
            if field not in _STACK_FACTS:
                raise self.err(
                    path,
                    f"bad fact {fact!r}: unknown field {field!r} (allowed: stack.NAME."
                    f"{{{','.join(_STACK_FACTS)}}})",
                )
            return
        thread, dot, field = fact.rpartition(".")
        if not dot or not thread:
            allowed = [*_GLOBAL_FACTS, "THREAD.FIELD", "mapping.NAME", "stack.NAME.FIELD"]
            raise self.err(
                path,
                f"bad fact {fact!r} ({_hint(fact, _GLOBAL_FACTS)}allowed: {_choices(allowed)})",
            )
        names = self.thread_names(ncpus, idle=True)
        if thread not in names:
            raise self.err(
                path,
                f"bad fact {fact!r}: unknown thread {thread!r} (threads: {_choices(names)})",
            )
        if field not in _THREAD_FACTS:
            raise self.err(
                path,
                f"bad fact {fact!r}: unknown field {field!r} ({_hint(field, _THREAD_FACTS)}"
                f"allowed: {_choices(_THREAD_FACTS)})",
            )

    # -- expectations -------------------------------------------------------------------------

    def expect(self, raw: Any, ncpus: int) -> Expect:
        p: KeyPath = ("expect",)
        tbl = self.table(raw, p)
        self.keys(
            tbl, p, ("faults", "facts", "threads", "log_contains", "log_not_contains", "error"), ()
        )
        faults = tuple(
            self.fault_expect(item, (*p, "faults", i), ncpus)
            for i, item in enumerate(self.opt(tbl, p, "faults", "list", []))
        )
        facts = tuple(
            self.fact_expect(item, (*p, "facts", i))
            for i, item in enumerate(self.opt(tbl, p, "facts", "list", []))
        )
        threads = tuple(
            self.thread_expect(item, (*p, "threads", i), ncpus)
            for i, item in enumerate(self.opt(tbl, p, "threads", "list", []))
        )
        logs = {}
        for key in ("log_contains", "log_not_contains"):
            items = self.opt(tbl, p, key, "list", [])
            for i, text in enumerate(items):
                if not isinstance(text, str):
                    raise self.err((*p, key, i), f"expected a string, got {_describe(text)}")
            logs[key] = tuple((self.loc.line((*p, key, i)), t) for i, t in enumerate(items))
        error = self.opt(tbl, p, "error", "str", None)
        if error == "":
            raise self.err((*p, "error"), "empty string (give a substring of the expected error)")
        return Expect(
            faults=faults,
            facts=facts,
            threads=threads,
            log_contains=logs["log_contains"],
            log_not_contains=logs["log_not_contains"],
            error=error,
            error_line=self.loc.line((*p, "error")),
            faults_line=self.loc.line((*p, "faults")),
        )

    def fault_expect(self, raw: Any, path: KeyPath, ncpus: int) -> FaultExpect:
        tbl = self.table(raw, path)
        allowed = ("thread", "reason", "cpu", "vector", "cr2", "error_code", "in")
        self.keys(tbl, path, allowed, ())
        fields: dict[str, Any] = {}
        if "thread" in tbl:
            fields["thread"] = self.typed(tbl, path, "thread", "str")
            self.check_thread(fields["thread"], (*path, "thread"), ncpus, idle=True)
        for key in ("reason", "cpu", "vector", "error_code"):
            if key in tbl:
                fields[key] = self.typed(tbl, path, key, "int")
        if "reason" in fields and not 0 <= fields["reason"] <= 4:
            raise self.err(
                (*path, "reason"),
                f"reason {fields['reason']} is not a K_ERR_* code (allowed: 0 CPU exception, "
                "1 spurious IRQ, 2 stack overflow, 3 kernel oops, 4 kernel panic)",
            )
        if "cpu" in fields and not 0 <= fields["cpu"] < ncpus:
            raise self.err((*path, "cpu"), f"CPU {fields['cpu']} does not exist ({ncpus} CPU(s))")
        if "cr2" in tbl:
            cr2 = tbl["cr2"]
            if _is("int", cr2):
                fields["cr2"] = cr2
            elif isinstance(cr2, str):
                fields["cr2"] = self.expr(cr2, (*path, "cr2"))
            else:
                raise self.err(
                    (*path, "cr2"),
                    f"expected an integer or an expression (a string), got {_describe(cr2)}",
                )
        if "in" in tbl:
            where = self.typed(tbl, path, "in", "str")
            self.check_fault_in(where, (*path, "in"))
            fields["where"] = where
        return FaultExpect(self.loc.line(path), key_text(path), **fields)

    def check_fault_in(self, where: str, path: KeyPath) -> None:
        if where in _FAULT_IN:
            return
        if where.startswith("mapping."):
            rest = where.split(".", 1)[1]
            name = rest.removesuffix(".guard_before").removesuffix(".guard_after")
            if self.mapping_known(name):
                return
        allowed = [
            *_FAULT_IN,
            "mapping.NAME",
            "mapping.NAME.guard_before",
            "mapping.NAME.guard_after",
        ]
        raise self.err(
            path, f"unknown place {where!r} ({_hint(where, _FAULT_IN)}allowed: {_choices(allowed)})"
        )

    def fact_expect(self, raw: Any, path: KeyPath) -> FactExpect:
        tbl = self.table(raw, path)
        self.keys(tbl, path, ("fact", "expr", *_FACT_CHECKS), ())
        line, key = self.loc.line(path), key_text(path)
        if ("fact" in tbl) == ("expr" in tbl):
            raise self.err(path, "give exactly one of 'fact' (with checks) or 'expr'")
        if "expr" in tbl:
            extra = [k for k in tbl if k != "expr"]
            if extra:
                raise self.err(
                    (*path, extra[0]), "an 'expr' entry takes no other keys (put the check in it)"
                )
            text = self.typed(tbl, path, "expr", "str")
            return FactExpect(line, key, expr=self.expr(text, (*path, "expr")))
        fact = self.typed(tbl, path, "fact", "str")
        self.check_label(fact, (*path, "fact"))
        checks: list[tuple[str, Any]] = []
        for name in _FACT_CHECKS:
            if name not in tbl:
                continue
            value = tbl[name]
            cp = (*path, name)
            if name in ("equals", "not_equals"):
                if not (_is("int", value) or _is("bool", value) or _is("str", value)):
                    raise self.err(
                        cp,
                        f'expected an integer, boolean, string or "null", got {_describe(value)}',
                    )
                checks.append((name, None if value == "null" else value))
            elif name == "count":
                if not _is("int", value) or value < 0:
                    raise self.err(cp, f"expected an integer >= 0, got {_describe(value)}")
                checks.append((name, value))
            else:
                if value is not True:
                    raise self.err(
                        cp, f"expected true, got {_describe(value)} (omit the key instead)"
                    )
                checks.append((name, True))
        if not checks:
            raise self.err(
                path, f"no check for fact {fact!r} (allowed: {_choices(_FACT_CHECKS)}; or use expr)"
            )
        return FactExpect(line, key, fact=fact, checks=tuple(checks))

    def thread_expect(self, raw: Any, path: KeyPath, ncpus: int) -> ThreadExpect:
        tbl = self.table(raw, path)
        self.keys(tbl, path, ("thread", "exit_reason", "state", "dead"), ("thread",))
        thread = self.typed(tbl, path, "thread", "str")
        self.check_thread(thread, (*path, "thread"), ncpus, idle=True)
        if len(tbl) == 1:
            raise self.err(path, "no check for the thread (allowed: exit_reason, state, dead)")
        return ThreadExpect(
            self.loc.line(path),
            key_text(path),
            thread,
            self.opt(tbl, path, "exit_reason", "str", None),
            self.opt(tbl, path, "state", "str", None),
            self.opt(tbl, path, "dead", "bool", None),
        )

    def expr(self, text: str, path: KeyPath) -> Expr:
        try:
            e = Expr.parse(text)
        except ValueError as exc:
            raise self.err(path, f"{exc} (allowed: {EXPR_HELP})") from None
        for name in sorted(e.names):
            self.check_label(name, path)
        return e


def load_scenario(path: str | Path) -> Scenario:
    """Read and check a scenario file; raises ScenarioError (FILE:LINE: key: problem)."""
    path = Path(path)
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ScenarioError(file, 1, "(file)", f"cannot read scenario: {reason}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        m = re.search(r"\s*\(at line (\d+), column (\d+)\)$", msg)
        line = int(m.group(1)) if m else max(1, text.count("\n") + 1)
        what = msg[: m.start()] if m else msg.replace(" (at end of document)", "")
        where = f" at column {m.group(2)}" if m else " at end of file"
        raise ScenarioError(file, line, "toml", f"syntax error: {what}{where}") from None
    return _Reader(path, text).read(doc)
