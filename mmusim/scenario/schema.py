"""What a loaded scenario is made of: frozen attrs values, checked and ready to run.

``load_scenario`` (``mmusim.scenario.load``) builds a ``Scenario`` from a file;
``run_scenario`` (``mmusim.scenario.run``) runs it. In between nothing changes it: every class
here is ``attrs.frozen``, every name in it was checked against the file, and every expectation
carries the ``line`` and ``key`` it was written at, so a failed run can say where
(``expect.faults[0] (line 22): reason is 2, expected 0``).

::

    Scenario        [scenario] + the Kconfig it resolves to, stacks, bodies, expect
      StackSpec     [stacks] NAME = { size, user }
      PartitionSpec [partitions] NAME = { addr | stack + offset, size, attr }
      RuntimeSpec   [runtime] flavour, rlimit_stack, stack_guard_gap_pages: a process on the kernel
      bodies        [bodies] NAME = [ ops ]  ->  tuple of mmusim.kernel.Op (the kernel's own type)
      Expect        [expect]
        FaultExpect   faults = [ { thread, reason, cpu, vector, cr2, error_code, in } ]
        FactExpect    facts = [ { fact, CHECK = value ... } | { expr } ]
        ThreadExpect  threads = [ { thread, exit_reason, state, dead } ]

Design choice: an expectation field left out of the file is None (not checked), never a default
value that would be checked by accident.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from mmusim.kconfig import Config, load_config
from mmusim.kernel import K_MEM_PARTITION_ATTRS, Kernel, KMemPartition, Op, StackObject
from mmusim.runtime import FLAVOURS, PAGE, GoCopying, GoSegmented, MmFlavour, Process
from mmusim.scenario.expr import Expr

__all__ = [
    "Expect",
    "FactExpect",
    "FaultExpect",
    "Scenario",
    "PartitionSpec",
    "RuntimeSpec",
    "StackSpec",
    "ThreadExpect",
    "config_ncpus",
]


def config_ncpus(config: Config) -> int:
    """How many CPUs a configuration boots: CONFIG_MP_MAX_NUM_CPUS with CONFIG_SMP, else 1."""
    cfg = config.values
    return int(cfg.get("MP_MAX_NUM_CPUS", 1) or 1) if cfg.get("SMP") else 1


@attrs.frozen
class StackSpec:
    """A stack object the scenario defines: ``K_THREAD_STACK_DEFINE`` (user) or ``K_KERNEL_...``."""

    name: str
    size: int
    user: bool


@attrs.frozen
class PartitionSpec:
    """A memory partition the scenario defines (``K_MEM_PARTITION_DEFINE``): at ``addr``, or at
    ``offset`` into stack object ``stack``; ``attr`` is a ``K_MEM_PARTITION_*`` name."""

    name: str
    size: int
    attr: str
    addr: int = 0
    stack: str = ""
    offset: int = 0


GO_STACKS = {"segmented": GoSegmented, "copying": GoCopying}  # [runtime] go_stacks


@attrs.frozen
class RuntimeSpec:
    """``[runtime]``: the kernel gets one process (``mmusim.runtime.Process``) of ``flavour``
    (a key of ``mmusim.runtime.FLAVOURS``), with RLIMIT_STACK ``rlimit_stack`` (None: the
    flavour's) and a guard gap of ``stack_guard_gap_pages`` below growsdown areas (None: the
    flavour's)."""

    flavour: str
    rlimit_stack: int | None = None
    stack_guard_gap_pages: int | None = None
    go_stacks: str | None = None  # "segmented" or "copying": how goroutines' stacks grow

    def mm_flavour(self) -> MmFlavour:
        """The address-space rules this section asks for."""
        flavour = FLAVOURS[self.flavour]
        if self.stack_guard_gap_pages is not None:
            flavour = attrs.evolve(flavour, stack_guard_gap=self.stack_guard_gap_pages * PAGE)
        return flavour

    def attach(self, k: Kernel) -> Process:
        """Give the booted kernel ``k`` its process (``Scenario.boot`` calls this, so ``mmusim
        run``, ``map`` and ``explore`` all run the same process)."""
        go = GO_STACKS[self.go_stacks]() if self.go_stacks else None
        return Process.attach(
            k, flavour=self.mm_flavour(), rlimit_stack=self.rlimit_stack, go_policy=go
        )


@attrs.frozen
class FaultExpect:
    """One expected fault; None fields are not checked. ``cr2`` may be an expression."""

    line: int
    key: str
    thread: str | None = None
    reason: int | None = None
    cpu: int | None = None
    vector: int | None = None
    cr2: int | Expr | None = None
    error_code: int | None = None
    where: str | None = None  # the "in" key: front_guard, rear_guard, mapping.NAME.guard_before ...


@attrs.frozen
class FactExpect:
    """Checks on one recorded fact (``checks``: (predicate, value) pairs) or one expression."""

    line: int
    key: str
    fact: str | None = None
    expr: Expr | None = None
    checks: tuple[tuple[str, Any], ...] = ()


@attrs.frozen
class ThreadExpect:
    """Checks on one thread at the end of the run; None fields are not checked."""

    line: int
    key: str
    thread: str
    exit_reason: str | None = None
    state: str | None = None
    dead: bool | None = None


@attrs.frozen
class Expect:
    """The ``[expect]`` section; ``error_line`` and ``faults_line`` locate those two keys."""

    faults: tuple[FaultExpect, ...] = ()
    facts: tuple[FactExpect, ...] = ()
    threads: tuple[ThreadExpect, ...] = ()
    log_contains: tuple[tuple[int, str], ...] = ()  # (line, text)
    log_not_contains: tuple[tuple[int, str], ...] = ()
    error: str | None = None
    error_line: int = 0
    faults_line: int = 0


@attrs.frozen
class Scenario:
    """A loaded, checked scenario, ready to run (``mmusim.scenario.run``)."""

    path: Path
    name: str
    description: str
    zephyr_test: str
    board: str
    config_lines: tuple[str, ...]
    config: Config = attrs.field(repr=False)
    seed: int | None
    max_steps: int
    stacks: tuple[StackSpec, ...]
    bodies: Mapping[str, tuple[Op, ...]] = attrs.field(repr=False)
    expect: Expect
    partitions: tuple[PartitionSpec, ...] = ()
    runtime: RuntimeSpec | None = None

    @property
    def main(self) -> tuple[Op, ...]:
        return self.bodies["main"]

    def stack_objects(self) -> tuple[StackObject, ...]:
        """Fresh stack objects for one boot (boot writes their addresses into them)."""
        return tuple(StackObject(s.name, s.size, s.user) for s in self.stacks)

    def partition_objects(self) -> tuple[KMemPartition, ...]:
        """Fresh partitions for one boot (boot places the stack-relative ones)."""
        return tuple(
            KMemPartition(p.name, p.size, K_MEM_PARTITION_ATTRS[p.attr], p.addr, p.stack, p.offset)
            for p in self.partitions
        )

    @property
    def ncpus(self) -> int:
        return config_ncpus(self.config)

    def with_config(self, extra: Sequence[str], origin: str) -> Scenario:
        """This scenario with Kconfig lines ``extra`` applied after its own (a mutant, a what-if
        fix); errors in them name ``origin`` and the line's position among them."""
        if not extra:
            return self
        lines = [(str(self.path), 0, text) for text in self.config_lines]
        lines += [(origin, i + 1, text) for i, text in enumerate(extra)]
        config = load_config(self.board, extra_lines=lines)
        return attrs.evolve(self, config=config, config_lines=self.config_lines + tuple(extra))

    def boot(self, check: Callable[[Kernel], None] | None = None) -> Kernel:
        """A fresh kernel of this scenario, booted and not yet run; ``check(kernel)`` runs after
        every step (e.g. ``assert_invariants``). With ``[runtime]``, the kernel has its process
        (``Process.of(k)``)."""
        k = Kernel(
            self.config.values,
            stacks=self.stack_objects(),
            main_body=self.main,
            bodies=self.bodies,
            check=check,
            partitions=self.partition_objects(),
        )
        if self.runtime is not None:
            self.runtime.attach(k)
        return k
