"""Reading ``[bodies]``: each op table becomes a ``mmusim.kernel.Op``.

::

    [bodies]
    main = [
        { op = "create", thread = "t", stack = "s", body = "front", delay = "forever" },
        { op = "record", fact = "t.mapped_addr", as = "addr" },
        { op = "repeat", times = 2, do = [ { op = "yield" } ] },
    ]

``_OPS`` is the whole op vocabulary: for each op, its keys, each with a value kind and whether
it is required. A value kind says how the value is checked and which ``Op`` field it fills:

=============  =================================================================================
int, int+,     an integer (any, > 0, >= 0) -> ``Op.n`` (``offset``, ``addr``, ``prio`` keep
int0           their own field)
bool           true or false -> the field of the same name
where, ticks,  a place in the running thread's stack, a tick count or "forever", a create's
delay          "no_wait" / "forever" -> ``Op.where`` / ``Op.n``
ops            a nested body (``repeat``'s ``do``) -> ``Op.body``
fact           a fact name the kernel can report -> ``Op.target``; newlabel: the ``as`` name
thread, stack, a name used (checked by ``Names.resolve`` once every body is read) or defined
body, ...      (newthread, newmapping, prefix, newdomain): see ``_NAMED``; a partition ->
               ``Op.parts``, a domain -> ``Op.domain``
prot, mapflags an array of protection names (read, write, exec) / mmap flag names (fixed, growsdown,
               noreserve): a runtime op's ``prot`` / ``flags``
area,          a runtime mapping (an ``mmap``'s ``name``) / a coroutine, used or defined (newarea,
coroutine      newcoroutine): names of their own kinds, checked by ``Names.resolve``
=============  =================================================================================

The runtime's ops (``_RUNTIME_OPS``: mmap, sigaction, coroutines ... of
``mmusim.runtime.ops.OPS``) need a ``[runtime]`` section; their keys go into ``Op.args`` as
given (``do`` into ``Op.body``, ``on_jump`` as a tuple of ``Op``), where the process reads them,
and the facts each records are defined for ``[expect]`` (``_RUNTIME_OP_FACTS``).

Design choice: the table is data, so a new op is one line here plus its meaning in
``mmusim.kernel`` (``Op``'s docstring lists the kinds), and the error messages list the allowed
ops and keys from the same table.
"""

from __future__ import annotations

from typing import Any

import attrs

from mmusim.hw import PROLOGUES
from mmusim.kernel import K_FOREVER, K_NO_WAIT, Op
from mmusim.runtime import FLAVOURS
from mmusim.scenario.document import Document, choices, describe, hint, is_kind
from mmusim.scenario.names import Names
from mmusim.scenario.toml_lines import KeyPath

__all__ = ["OP_KINDS", "RUNTIME_OP_KINDS", "compiled_with", "read_bodies", "read_prologue"]

FLAVOUR_NAMES = tuple(FLAVOURS)

_ACCESS = {  # write and read: a word at an address, in a mapping, or at a recorded fact's value
    "addr": ("int0", False),
    "mapping": ("mapping", False),
    "at": ("label", False),
    "offset": ("int", False),
}

# Op kinds: TOML key -> (value kind, required).
_OPS: dict[str, dict[str, tuple[str, bool]]] = {
    "push": {"bytes": ("int+", True)},
    "pop": {"bytes": ("int+", True)},
    "call": {
        "frame": ("int0", False),
        "past_bottom": ("int", False),
        "prologue": ("prologue", False),
        "probe": ("bool", False),
        "depth": ("int+", False),
        "do": ("ops", False),
    },
    "touch": {"where": ("where", True), "offset": ("int", False)},
    "write": _ACCESS,
    "read": _ACCESS,
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
    "mem_domain_init": {"domain": ("newdomain", True), "partitions": ("partitions", False)},
    "mem_domain_add_partition": {"domain": ("domain", True), "partition": ("partition", True)},
    "mem_domain_remove_partition": {"domain": ("domain", True), "partition": ("partition", True)},
    "mem_domain_add_thread": {"domain": ("domain", True), "thread": ("thread", True)},
}

# The runtime's ops (mmusim.runtime.ops.OPS): they need a [runtime] section, and their keys
# go into ``Op.args`` as they are (``do`` into ``Op.body``), where the process reads them.
_AT = {  # where a runtime op acts: a mapping (+ offset) or an address
    "mapping": ("area", False),
    "offset": ("int0", False),
    "addr": ("int0", False),
}
_RUNTIME_OPS: dict[str, dict[str, tuple[str, bool]]] = {
    "mmap": {
        "name": ("newarea", False),
        "bytes": ("int+", True),
        "prot": ("prot", False),
        "flags": ("mapflags", False),
        **_AT,
        "guard": ("int0", False),
    },
    "munmap": {**_AT, "bytes": ("int+", True)},
    "mprotect": {**_AT, "bytes": ("int+", True), "prot": ("prot", True)},
    "madvise_guard": {**_AT, "bytes": ("int+", True), "remove": ("bool", False)},
    "sigaction": {"handler": ("body", True), "onstack": ("bool", False)},
    "sigaltstack": {"mapping": ("area", True), "bytes": ("int+", False)},
    "sigsetjmp": {"do": ("ops", True), "on_jump": ("ops", False)},
    "siglongjmp": {},
    "move_sp": {"by": ("int", True)},
    "on_stack": {"mapping": ("area", True), "offset": ("int0", False), "do": ("ops", True)},
    "coro_create": {
        "name": ("newcoroutine", True),
        "mapping": ("area", True),
        "guard": ("int0", False),
        "body": ("body", True),
    },
    "coro_switch": {"name": ("coroutine", True)},
    "coro_yield": {},
    "classify_fault": {},
    "go": {"name": ("newgoroutine", True), "bytes": ("int+", False), "do": ("ops", True)},
    "go_pointer": {"name": ("pointer", True)},
    "go_deref": {"name": ("pointer", True)},
}
_OPS.update(_RUNTIME_OPS)
OP_KINDS = tuple(sorted(_OPS))
RUNTIME_OP_KINDS = tuple(sorted(_RUNTIME_OPS))
_PROTS = ("read", "write", "exec")
_MAP_FLAGS = ("fixed", "growsdown", "noreserve")
# The facts each runtime op records (besides an mmap's name): mmusim.runtime.process.
_RUNTIME_OP_FACTS = {
    "mmap": ("errno", "mmap.errno", "areas"),
    "munmap": ("errno", "munmap.errno", "areas"),
    "mprotect": ("errno", "mprotect.errno", "areas"),
    "madvise_guard": ("errno", "madvise_guard.errno", "areas"),
    "sigaltstack": ("errno",),
    "classify_fault": ("report", "report.coroutine"),
    "go": (
        "go.splits",
        "go.copies",
        "go.bytes_copied",
        "go.growth",
        "go.fatal",
        "go.fatal.goroutine",
    ),
    "go_deref": ("go.pointer", "go.stale"),
}

_WHERE = ("start", "end", "sp", "mapped", "front_guard", "rear_guard", "bottom", "top")

# Value kinds that are names: (what a message calls it, the Op field it fills, the kind of name
# it uses (checked by Names.resolve) or None, the kind of name it defines (Names.define) or None).
_NAMED: dict[str, tuple[str, str, str | None, str | None]] = {
    "thread": ("thread", "target", "thread", None),
    "newthread": ("thread", "target", None, "thread"),
    "stack": ("stack", "stack", "stack", None),
    "body": ("body", "label", "body", None),
    "mapping": ("mapping", "target", "mapping", None),
    "newmapping": ("mapping", "target", None, "mapping"),
    "prefix": ("mapping prefix", "target", None, "prefix"),
    "name": ("mapping prefix", "target", None, None),
    "label": ("fact", "label", "label", None),
    "domain": ("memory domain", "domain", "domain", None),
    "newdomain": ("memory domain", "domain", None, "domain"),
    "partition": ("partition", "parts", "partition", None),
    "area": ("mapping", "args", "area", None),
    "newarea": ("mapping", "args", None, "area"),
    "coroutine": ("coroutine", "args", "coroutine", None),
    "newcoroutine": ("coroutine", "args", None, "coroutine"),
    "newgoroutine": ("goroutine", "args", None, None),
    "pointer": ("pointer", "args", None, None),
}


def read_bodies(
    doc: Document, names: Names, raw: Any, *, runtime: bool = False
) -> dict[str, tuple[Op, ...]]:
    """The ``[bodies]`` table: each body's ops, with the names they define and use in ``names``.
    ``runtime``: the file has a ``[runtime]`` section (the runtime's ops need one)."""
    tbl = doc.table(raw, ("bodies",))
    if "main" not in tbl:
        raise doc.err(("bodies",), "missing key 'main' (the main thread's body)")
    reader = _OpReader(doc, names, runtime)
    out = {}
    for name, ops in tbl.items():
        p: KeyPath = ("bodies", name)
        doc.name(name, p, "body")
        out[name] = reader.ops(ops, p)
    return out


def read_prologue(doc: Document, value: Any, path: KeyPath) -> str:
    """A prologue kind (``mmusim.hw.PROLOGUES``): a call's ``prologue``, ``[build]``'s."""
    if value not in PROLOGUES:
        shown = value if isinstance(value, str) else ""
        raise doc.err(
            path,
            f"unknown prologue {value!r} ({hint(shown, PROLOGUES)}allowed: {choices(PROLOGUES)})",
        )
    return str(value)


def compiled_with(ops: tuple[Op, ...], prologue: str) -> tuple[Op, ...]:
    """``ops`` as built with ``prologue`` (``[build]``): every ``call`` that names no prologue
    of its own gets it, in nested bodies too (``repeat``, ``call``'s and runtime ops' ``do``,
    ``on_jump``)."""
    out = []
    for op in ops:
        changes: dict[str, Any] = {}
        if op.body:
            changes["body"] = compiled_with(op.body, prologue)
        if op.kind == "call" and not op.prologue and not op.probe:
            changes["prologue"] = prologue
        jump = op.arg("on_jump")
        if jump:
            changes["args"] = {**dict(op.args), "on_jump": compiled_with(tuple(jump), prologue)}
        out.append(attrs.evolve(op, **changes) if changes else op)
    return tuple(out)


class _OpReader:
    def __init__(self, doc: Document, names: Names, runtime: bool = False) -> None:
        self.doc = doc
        self.names = names
        self.runtime = runtime

    def ops(self, raw: Any, path: KeyPath) -> tuple[Op, ...]:
        """An array of op tables."""
        if not isinstance(raw, list):
            raise self.doc.err(path, f"expected an array of ops, got {describe(raw)}")
        return tuple(self.op(item, (*path, i)) for i, item in enumerate(raw))

    def op(self, raw: Any, path: KeyPath) -> Op:
        """One op table: its kind, then its keys as ``_OPS`` lists them."""
        err = self.doc.err
        if not isinstance(raw, dict):
            raise err(path, f'expected an op table {{ op = "...", ... }}, got {describe(raw)}')
        if "op" not in raw:
            raise err(path, f"missing key 'op' (allowed ops: {choices(OP_KINDS)})")
        kind = raw["op"]
        if not isinstance(kind, str) or kind not in _OPS:
            text = kind if isinstance(kind, str) else ""
            raise err(
                (*path, "op"),
                f"unknown op {kind!r} ({hint(text, OP_KINDS)}allowed: {choices(OP_KINDS)})",
            )
        spec = _OPS[kind]
        if kind in _RUNTIME_OPS:
            return self.runtime_op(kind, raw, path)
        self.doc.keys(raw, path, ("op", *spec), tuple(k for k, (_, req) in spec.items() if req))
        fields: dict[str, Any] = {"kind": kind, "line": self.doc.line(path)}
        for key, value in raw.items():
            if key != "op":
                self.field(key, spec[key][0], value, (*path, key), fields)
        if kind in ("write", "read"):
            given = [k for k in ("addr", "mapping", "at") if k in raw]
            if len(given) != 1:
                raise err(
                    path,
                    f"{kind} needs exactly one of addr, mapping, at (got "
                    f"{', '.join(given) or 'none'})",
                )
        if kind == "call":
            given = [k for k in ("frame", "past_bottom") if k in raw]
            if len(given) != 1:
                raise err(
                    path,
                    "call needs exactly one of frame (bytes), past_bottom (bytes past the "
                    f"bottom of the stack) (got {', '.join(given) or 'none'})",
                )
            if raw.get("probe") and raw.get("prologue", "probed") != "probed":
                raise err((*path, "probe"), 'probe = true is prologue = "probed"; give one')
            if "past_bottom" in raw and raw.get("depth", 1) != 1:
                raise err((*path, "depth"), "a past_bottom frame is one call deep (depth = 1)")
        if kind == "create" and "delay" not in raw:
            fields["n"] = K_NO_WAIT
        if kind in ("record", "exhaust"):  # the name the value is recorded under
            fields.setdefault("label", fields["target"])
            self.names.define("label", fields["label"], path)
        return Op(**fields)

    def runtime_op(self, kind: str, raw: dict[str, Any], path: KeyPath) -> Op:
        """A runtime op: its keys into ``Op.args`` (``do`` into ``Op.body``), checked."""
        err = self.doc.err
        if not self.runtime:
            raise err(
                (*path, "op"),
                f"op {kind!r} needs a process: add a [runtime] section (flavour = "
                f"{choices(FLAVOUR_NAMES)})",
            )
        spec = _RUNTIME_OPS[kind]
        self.doc.keys(raw, path, ("op", *spec), tuple(k for k, (_, req) in spec.items() if req))
        args: dict[str, Any] = {}
        body: tuple[Op, ...] = ()
        for key, value in raw.items():
            if key == "op":
                continue
            vkind, p = spec[key][0], (*path, key)
            if key == "do":
                body = self.ops(value, p)
            elif vkind == "ops":
                args[key] = self.ops(value, p)
            elif vkind in ("int", "int+", "int0"):
                args[key] = self.integer(vkind, value, p)
            elif vkind == "bool":
                if not is_kind("bool", value):
                    raise err(p, f"expected true or false, got {describe(value)}")
                args[key] = value
            elif vkind in ("prot", "mapflags"):
                args[key] = self.words(vkind, value, p)
            else:
                one: dict[str, Any] = {}
                self.named(vkind, value, p, one)
                (args[key],) = one.values()
        if kind in ("munmap", "mprotect", "madvise_guard") or (kind == "mmap" and "offset" in raw):
            given = [k for k in ("addr", "mapping") if k in raw]
            if len(given) != 1:
                raise err(
                    path,
                    f"{kind} needs exactly one of addr, mapping (got {', '.join(given) or 'none'})",
                )
        if kind == "mmap" and "addr" in raw and "mapping" in raw:
            raise err(path, "mmap takes at most one of addr, mapping (where to place it)")
        if "offset" in raw and "mapping" not in raw:
            raise err((*path, "offset"), "an offset needs a mapping (offset into it)")
        if kind == "mmap":
            self.names.define("label", str(args.get("name", "mmap")), path)
        for fact in _RUNTIME_OP_FACTS.get(kind, ()):
            self.names.define("label", fact, path)
        return Op(kind, body=body, args=args, line=self.doc.line(path))

    def words(self, vkind: str, value: Any, path: KeyPath) -> tuple[str, ...]:
        """An array of protection (``prot``) or mmap flag (``mapflags``) names."""
        allowed, what = (_PROTS, "protection") if vkind == "prot" else (_MAP_FLAGS, "mmap flag")
        if not isinstance(value, list):
            raise self.doc.err(
                path,
                f"expected an array of {what} names ({choices(allowed)}; [] for none), got "
                f"{describe(value)}",
            )
        for i, item in enumerate(value):
            if item not in allowed:
                shown = item if isinstance(item, str) else ""
                raise self.doc.err(
                    (*path, i),
                    f"unknown {what} {item!r} ({hint(shown, allowed)}allowed: {choices(allowed)})",
                )
        return tuple(value)

    def field(self, key: str, vkind: str, value: Any, path: KeyPath, out: dict[str, Any]) -> None:
        """Check one key's value by its value kind and put it in ``out`` (``Op``'s arguments)."""
        err = self.doc.err
        if vkind in ("int", "int+", "int0"):
            if key == "past_bottom":  # a call's frame, relative to the stack's bottom
                out["where"], out["offset"] = "bottom", self.integer(vkind, value, path)
                return
            out[key if key in ("offset", "addr", "prio", "depth") else "n"] = self.integer(
                vkind, value, path
            )
        elif vkind == "bool":
            if not is_kind("bool", value):
                raise err(path, f"expected true or false, got {describe(value)}")
            out[key] = value
        elif vkind == "where":
            if value not in _WHERE:
                shown = value if isinstance(value, str) else ""
                raise err(
                    path,
                    f"unknown place {value!r} ({hint(shown, _WHERE)}allowed: {choices(_WHERE)})",
                )
            out["where"] = value
        elif vkind == "prologue":
            out["prologue"] = read_prologue(self.doc, value, path)
        elif vkind == "ticks":
            if value == "forever":
                out["n"] = K_FOREVER
            elif is_kind("int", value) and value >= 0:
                out["n"] = value
            else:
                raise err(path, f'bad tick count {value!r} (allowed: an integer >= 0 or "forever")')
        elif vkind == "delay":
            if value not in ("forever", "no_wait"):
                raise err(
                    path,
                    f'bad delay {value!r} (allowed: "no_wait" starts the thread, "forever" '
                    "leaves it for a start op)",
                )
            out["n"] = K_FOREVER if value == "forever" else K_NO_WAIT
        elif vkind == "ops":
            out["body"] = self.ops(value, path)
        elif vkind == "fact":
            if not isinstance(value, str):
                raise err(path, f"expected a fact name (a string), got {describe(value)}")
            self.names.refer("fact", value, path)
            out["target"] = value
        elif vkind == "partitions":
            if not isinstance(value, list):
                raise err(path, f"expected an array of partition names, got {describe(value)}")
            names: list[str] = []
            for i, item in enumerate(value):
                one: dict[str, Any] = {}
                self.named("partition", item, (*path, i), one)
                names += one["parts"]
            out["parts"] = tuple(names)
        elif vkind == "newlabel":
            if not isinstance(value, str) or not value:
                raise err(path, f"expected a fact name (a string), got {describe(value)}")
            out["label"] = value
        else:
            self.named(vkind, value, path, out)

    def integer(self, vkind: str, value: Any, path: KeyPath) -> int:
        """An integer; ``int+``: > 0, ``int0``: >= 0."""
        if not is_kind("int", value):
            raise self.doc.err(path, f"expected an integer, got {describe(value)}")
        if vkind == "int+" and value <= 0:
            raise self.doc.err(path, f"{value} is not positive (allowed: an integer > 0)")
        if vkind == "int0" and value < 0:
            raise self.doc.err(path, f"{value} is negative (allowed: an integer >= 0)")
        return int(value)

    def named(self, vkind: str, value: Any, path: KeyPath, out: dict[str, Any]) -> None:
        """A name (see ``_NAMED``): check it is an identifier, note its use or definition."""
        what, field, used, defined = _NAMED[vkind]
        name = self.doc.name(value, path, what)
        if vkind == "newthread" and name == "main":
            raise self.doc.err(path, "'main' is the main thread; it cannot be created")
        if vkind == "newdomain" and name == "default":
            raise self.doc.err(
                path, "'default' is k_mem_domain_default, initialised at boot; name another domain"
            )
        if used is not None:
            self.names.refer(used, name, path)
        if defined is not None:
            self.names.define(defined, name, path)
        if vkind == "newdomain":
            self.names.domain_uses.append(path)
        out[field] = (name,) if field == "parts" else name
