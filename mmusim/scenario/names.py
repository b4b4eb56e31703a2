"""The names a scenario file defines and uses: threads, stacks, bodies, mappings, facts.

An op may name a thread that a later op creates, or a body defined further down, so names are
checked in two passes (memory domains too: ``default`` exists from boot, ``mem_domain_init``
defines the others; partitions come from ``[partitions]``). While the ops are read, ``Names`` notes each definition (``define``: a
``create`` op's thread, a ``k_mem_map``'s mapping, an ``exhaust``'s prefix, a ``record``'s fact)
and each use (``refer``). Once the whole of ``[bodies]`` is read, ``resolve`` checks every use
against the definitions and raises at the first unknown name, at the line of its use.
``[expect]`` is read after that and checks its names at once (``check_thread``, ``check_label``).

Facts an op may ``record`` (``check_fact``)::

    free_mem, vm_free_pages, vm_free_start, clock, pending_cleanup    the kernel's
    THREAD.FIELD          mapped_addr, mapped_sz, stack_start, stack_size, state, stack_space,
                          sp, psp
    stack.NAME.FIELD      addr, obj_len, nonzero_bytes of a [stacks] object
    mapping.NAME          a k_mem_map region's address (.nonzero_bytes: its written bytes)

A ``[runtime]`` process's mappings (an ``mmap``'s ``name``) and coroutines (``coro_create``) are
names of their own kinds, ``area`` and ``coroutine``: the process keeps them, not the kernel.

Design choices: names are kept in the order first defined, so the lists in messages follow the
file; ``exhaust``'s mappings ``PREFIX0``, ``PREFIX1`` ... exist by their prefix, so a mapping name
is known if it is defined or is a prefix plus a plain number (``m7``, not ``m07``).
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from mmusim.scenario.document import Document, choices, hint
from mmusim.scenario.toml_lines import KeyPath

__all__ = ["Names"]

_THREAD_FACTS = (
    "mapped_addr",
    "mapped_sz",
    "stack_start",
    "stack_size",
    "state",
    "stack_space",
    "sp",
    "psp",
)
_STACK_FACTS = ("addr", "obj_len", "nonzero_bytes")
_GLOBAL_FACTS = ("free_mem", "vm_free_pages", "vm_free_start", "clock", "pending_cleanup")


@attrs.define
class _Ref:
    kind: str  # thread, stack, body, mapping, fact, label
    name: str
    path: KeyPath


class Names:
    """What one file defines (name -> where first defined) and the uses still to check."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.refs: list[_Ref] = []
        self.threads: dict[str, KeyPath] = {}  # created threads, where first created
        self.mappings: dict[str, KeyPath] = {}
        self.prefixes: dict[str, KeyPath] = {}
        self.labels: dict[str, KeyPath] = {}  # recorded facts, by the name they are recorded as
        self.domains: dict[str, KeyPath] = {"default": ()}  # memory domains (mem_domain_init)
        self.domain_uses: list[KeyPath] = []  # where ops name a domain (they need USERSPACE)
        self.areas: dict[str, KeyPath] = {}  # the process's mappings (a runtime mmap's name)
        self.coroutines: dict[str, KeyPath] = {}  # coro_create's names

    def define(self, kind: str, name: str, path: KeyPath) -> None:
        """The op at ``path`` defines ``name``: a thread, mapping, prefix or label."""
        registry = {
            "thread": self.threads,
            "mapping": self.mappings,
            "prefix": self.prefixes,
            "label": self.labels,
            "domain": self.domains,
            "area": self.areas,
            "coroutine": self.coroutines,
        }[kind]
        registry.setdefault(name, path)

    def refer(self, kind: str, name: str, path: KeyPath) -> None:
        """The value at ``path`` uses ``name``, a thread, stack, body, mapping, fact or label;
        ``resolve`` checks it."""
        self.refs.append(_Ref(kind, name, path))
        if kind == "domain":
            self.domain_uses.append(path)

    def thread_names(self, ncpus: int, idle: bool) -> list[str]:
        """The threads: main, the created ones, and with ``idle`` each CPU's idle thread."""
        names = ["main", *self.threads]
        if idle:
            names += [f"idle {i:02d}" for i in range(ncpus)]
        return names

    def mapping_known(self, name: str) -> bool:
        """Whether ``name`` is a mapping the file maps (by name, or as PREFIX + number)."""
        if name in self.mappings:
            return True
        return any(
            name.startswith(p)
            and name[len(p) :].isdigit()
            and name[len(p) :] == str(int(name[len(p) :]))
            for p in self.prefixes
        )

    def mapping_choices(self) -> str:
        """The mappings, as a message lists them."""
        shown = [*self.mappings, *(f"{p}0, {p}1, ..." for p in self.prefixes)]
        return choices(shown) if shown else "none: map one with k_mem_map"

    # -- checks ---------------------------------------------------------------------------------

    def resolve(
        self, stacks: set[str], bodies: set[str], ncpus: int, partitions: Sequence[str] = ()
    ) -> None:
        """Check every use noted by ``refer``, in the order they were noted."""
        err = self.doc.err
        sections = {  # kind -> (the names a file defines, where it defines them)
            "partition": (list(partitions), "[partitions]"),
            "stack": (sorted(stacks), "[stacks]"),
            "body": (sorted(bodies), "[bodies]"),
        }
        for ref in self.refs:
            if ref.kind == "domain" and ref.name not in self.domains:
                raise err(
                    ref.path,
                    f"unknown memory domain {ref.name!r} ({hint(ref.name, list(self.domains))}"
                    f"domains: {choices(self.domains)}; a mem_domain_init op defines one)",
                )
            if ref.kind in sections and ref.name not in sections[ref.kind][0]:
                names, where = sections[ref.kind]
                raise err(
                    ref.path,
                    f"unknown {ref.kind} {ref.name!r} ({hint(ref.name, names)}defined in "
                    f"{where}: {choices(names) or 'none'})",
                )
            if ref.kind == "thread":
                self.check_thread(ref.name, ref.path, ncpus, idle=False)
            if ref.kind == "mapping" and not self.mapping_known(ref.name):
                raise err(
                    ref.path,
                    f"unknown mapping {ref.name!r} (mapped in this file: {self.mapping_choices()})",
                )
            if ref.kind == "area" and ref.name not in self.areas:
                raise err(
                    ref.path,
                    f"unknown mapping {ref.name!r} ({hint(ref.name, list(self.areas))}mmap'd in "
                    f"this file: {choices(self.areas) or 'none'}; an mmap op with name = ... "
                    "defines one)",
                )
            if ref.kind == "coroutine" and ref.name not in self.coroutines:
                raise err(
                    ref.path,
                    f"unknown coroutine {ref.name!r} ({hint(ref.name, list(self.coroutines))}"
                    f"created in this file: {choices(self.coroutines) or 'none'}; a coro_create "
                    "op defines one)",
                )
            if ref.kind == "label":
                self.check_label(ref.name, ref.path)
            if ref.kind == "fact":
                self.check_fact(ref.name, ref.path, ncpus, stacks)

    def check_thread(self, name: str, path: KeyPath, ncpus: int, idle: bool) -> None:
        """``name`` is a thread (an idle thread too, with ``idle``)."""
        names = self.thread_names(ncpus, idle)
        if name not in names:
            raise self.doc.err(
                path,
                f"unknown thread {name!r} ({hint(name, names)}threads: {choices(names)}; "
                "a thread exists once a create op names it)",
            )

    def check_label(self, name: str, path: KeyPath) -> None:
        """``name`` is a fact some op records."""
        if name not in self.labels:
            raise self.doc.err(
                path,
                f"unknown fact {name!r} ({hint(name, list(self.labels))}recorded facts: "
                f"{choices(self.labels) or 'none: add a record op'})",
            )

    def check_fact(self, fact: str, path: KeyPath, ncpus: int, stacks: set[str]) -> None:
        """``fact`` is a fact the kernel can report (see the table above)."""
        if fact in _GLOBAL_FACTS:
            return
        if fact.startswith("mapping."):
            self._check_mapping_fact(fact, path)
        elif fact.startswith("stack."):
            self._check_stack_fact(fact, path, stacks)
        else:
            self._check_thread_fact(fact, path, ncpus)

    def _check_mapping_fact(self, fact: str, path: KeyPath) -> None:
        rest = fact.split(".", 1)[1]
        name = rest.removesuffix(".nonzero_bytes")
        if not self.mapping_known(name):
            raise self.doc.err(
                path,
                f"bad fact {fact!r}: unknown mapping {name!r} (mapped in this file: "
                f"{self.mapping_choices()})",
            )

    def _check_stack_fact(self, fact: str, path: KeyPath, stacks: set[str]) -> None:
        name, _, field = fact.split(".", 1)[1].rpartition(".")
        if name not in stacks:
            raise self.doc.err(
                path,
                f"bad fact {fact!r}: unknown stack {name!r} (defined in [stacks]: "
                f"{choices(stacks) or 'none'})",
            )
        if field not in _STACK_FACTS:
            raise self.doc.err(
                path,
                f"bad fact {fact!r}: unknown field {field!r} (allowed: stack.NAME."
                f"{{{','.join(_STACK_FACTS)}}})",
            )

    def _check_thread_fact(self, fact: str, path: KeyPath, ncpus: int) -> None:
        thread, dot, field = fact.rpartition(".")
        if not dot or not thread:
            allowed = [*_GLOBAL_FACTS, "THREAD.FIELD", "mapping.NAME", "stack.NAME.FIELD"]
            raise self.doc.err(
                path,
                f"bad fact {fact!r} ({hint(fact, _GLOBAL_FACTS)}allowed: {choices(allowed)})",
            )
        names = self.thread_names(ncpus, idle=True)
        if thread not in names:
            raise self.doc.err(
                path,
                f"bad fact {fact!r}: unknown thread {thread!r} (threads: {choices(names)})",
            )
        if field not in _THREAD_FACTS:
            raise self.doc.err(
                path,
                f"bad fact {fact!r}: unknown field {field!r} ({hint(field, _THREAD_FACTS)}"
                f"allowed: {choices(_THREAD_FACTS)})",
            )
