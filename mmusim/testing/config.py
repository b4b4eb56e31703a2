"""Hypothesis strategies for Kconfig configurations: valid ``prj.conf`` lines for a board.

::

    from hypothesis import given
    from mmusim.testing.config import BoardConfig, configs

    @given(configs("qemu_x86_64", mutants=True))
    def test_boots(bc: BoardConfig) -> None:
        cfg = bc.load()                      # a mmusim.kconfig.Config (loads are cached)
        ...

A drawn ``BoardConfig`` prints as the call that rebuilds it, so a falsifying example can be
pasted back::

    BoardConfig(board='qemu_x86_64', lines=('CONFIG_HW_STACK_PROTECTION=y',
        'CONFIG_THREAD_STACK_MEM_MAPPED=n', 'CONFIG_USERSPACE=y', ...))

Only valid combinations are generated: the strategy knows the Kconfig rules that bite here
(a knob under an unmet dependency, ``=n`` on a selected symbol, the CPU count without SMP, mapped
stacks on a board whose RAM is not identity-mapped), derived from the board's own resolved
configuration rather than from a table of board names. Every drawn configuration is loaded once
while it is drawn; a ``ConfigError`` there is a bug of this module (raised), unless ``extra``
lines were given, whose interplay with the drawn ones cannot be foreseen (then the example is
rejected).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping

import attrs
from hypothesis import assume
from hypothesis import strategies as st

from mmusim.kconfig import Config, ConfigError, Value, boards, load_config

__all__ = [
    "MUTANT_KNOBS",
    "SIM_KNOBS",
    "TOGGLES",
    "BoardConfig",
    "configs",
    "load_board_config",
]

#: The toggles ``configs(toggles=True)`` draws, where the board allows them. (X86_STACK_PROTECTION
#: has no prompt: it follows HW_STACK_PROTECTION, the symbol a prj.conf sets.)
TOGGLES: tuple[str, ...] = (
    "HW_STACK_PROTECTION",
    "THREAD_STACK_MEM_MAPPED",
    "X86_PAE",
    "USERSPACE",
    "THREAD_STACK_INFO",
    "INIT_STACKS",
    "SMP",
    "MP_MAX_NUM_CPUS",
)
#: The simulator knobs ``configs(sim_knobs=True)`` draws (the last two need mapped stacks).
SIM_KNOBS: tuple[str, ...] = (
    "SIM_TLB_SHOOTDOWN",
    "SIM_ABORT_CLEANUP_LEAK",
    "SIM_CLEANUP_WAITS_FOR_SWITCH",
)
#: The mutant knobs ``configs(mutants=True)`` draws, at most one at a time (need mapped stacks).
MUTANT_KNOBS: tuple[str, ...] = (
    "SIM_MUTANT_NO_CLEANUP_LOCK",
    "SIM_MUTANT_DEFER_NO_DRAIN",
    "SIM_MUTANT_SELF_UNMAP",
)

_ORIGIN = "BoardConfig"
_ASSIGNED = re.compile(r"\s*(?:CONFIG_([A-Za-z0-9_]+)\s*=|#\s*CONFIG_([A-Za-z0-9_]+) is not set)")
_CPU_COUNTS = (1, 2, 3, 4)  # MP_MAX_NUM_CPUS: range 1 4


def _lines(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        raise TypeError("BoardConfig: lines must be a sequence of lines, not one string")
    return tuple(value)


@functools.lru_cache(maxsize=1024)
def load_board_config(board: str, lines: tuple[str, ...], origin: str = _ORIGIN) -> Config:
    """``load_config(board, extra_lines=lines)``, cached (a load costs 1-3 ms; a Config is
    immutable, so sharing one is safe). Errors name ``<origin>:<line number>``
    (``BoardConfig:<n>`` by default)."""
    extra = tuple((origin, i, line) for i, line in enumerate(lines, 1))
    return load_config(board, extra_lines=extra)


@attrs.frozen
class BoardConfig:
    """A board and the Kconfig lines applied after its defconfig (``CONFIG_X=y`` ...).

    ``lines`` is what a scenario's or a ``KernelMachine``'s ``config`` takes; ``load()`` resolves
    them (cached) and raises ``ConfigError`` naming ``BoardConfig:<n>`` for a bad line.
    """

    board: str
    lines: tuple[str, ...] = attrs.field(default=(), converter=_lines)

    def load(self) -> Config:
        """The resolved configuration (``mmusim.kconfig.Config``), cached per (board, lines)."""
        return load_board_config(self.board, self.lines)

    @property
    def values(self) -> Mapping[str, Value]:
        """``load().values``: every symbol with a value, by name (no ``CONFIG_`` prefix)."""
        return self.load().values

    def fragment(self) -> str:
        """The lines as the text of a ``prj.conf`` fragment (for ``mmusim config -f``)."""
        return "".join(f"{line}\n" for line in self.lines)


def _assigned(lines: Iterable[str]) -> set[str]:
    """Names of the symbols that ``lines`` assign."""
    names = set()
    for line in lines:
        m = _ASSIGNED.match(line)
        if m:
            names.add(m.group(1) or m.group(2))
    return names


def _line(name: str, value: bool | int) -> str:
    if isinstance(value, bool):
        return f"CONFIG_{name}={'y' if value else 'n'}"
    return f"CONFIG_{name}={value}"


class _Draw:
    """Draws the knobs of one configuration in dependency order, one explicit line each.

    A knob fixed by ``extra`` is not drawn: its resolved value (in ``base``) is used for the
    knobs that depend on it. Each bool is drawn as (the board's value, the other one), so
    Hypothesis shrinks towards the board's defconfig.
    """

    def __init__(self, draw: st.DrawFn, base: Config, fixed: set[str]) -> None:
        self.draw = draw
        self.base = base
        self.fixed = fixed
        self.lines: list[str] = []

    def flag(self, name: str, *, allowed: bool = True) -> bool:
        """Draw ``name`` if it is free and ``allowed``; return its value in the result."""
        current = bool(self.base.get(name))
        if name in self.fixed or not allowed:
            return current
        value = self.draw(st.sampled_from((current, not current)))
        self.lines.append(_line(name, value))
        return value

    def choice(self, name: str, options: tuple[int, ...]) -> int:
        """Draw one of ``options`` for ``name`` (the board's value first); the caller writes it."""
        current = self.base.get(name)
        ordered = tuple(sorted(options, key=lambda v: v != current))
        return self.draw(st.sampled_from(ordered))


@st.composite
def _configs(
    draw: st.DrawFn,
    board: str,
    base: Config,
    extra: tuple[str, ...],
    toggles: bool,
    sim_knobs: bool,
    mutants: bool,
) -> BoardConfig:
    fixed = _assigned(extra)
    d = _Draw(draw, base, fixed)
    v = base.values
    if toggles:
        protection = d.flag("HW_STACK_PROTECTION", allowed=bool(v.get("ARCH_HAS_STACK_PROTECTION")))
        identity = v.get("KERNEL_VM_BASE") == v.get("SRAM_BASE_ADDRESS") and not v.get(
            "KERNEL_VM_OFFSET"
        )
        supported = bool(v.get("MMU")) and bool(v.get("ARCH_SUPPORTS_MEM_MAPPED_STACKS"))
        mapped = d.flag("THREAD_STACK_MEM_MAPPED", allowed=identity and supported)
        d.flag("X86_PAE", allowed=bool(v.get("X86_MMU")) and not v.get("X86_64"))
        user = d.flag(
            "USERSPACE",
            allowed=bool(v.get("ARCH_HAS_USERSPACE")) and bool(v.get("SRAM_REGION_PERMISSIONS")),
        )
        # THREAD_STACK_INFO=n only when nothing selects it (X86_STACK_PROTECTION follows
        # HW_STACK_PROTECTION, given X86_MMU; mapped stacks; user mode).
        selected = (protection and bool(v.get("X86_MMU"))) or mapped or user
        d.flag("THREAD_STACK_INFO", allowed=not selected)
        d.flag("INIT_STACKS")
        smp = d.flag("SMP", allowed=bool(v.get("USE_SWITCH")) and "MP_MAX_NUM_CPUS" not in fixed)
        if "MP_MAX_NUM_CPUS" not in fixed and v.get("USE_SWITCH"):
            # Drawn even without SMP (which needs exactly 1: "range 1 1 if !SMP"), so that both
            # cases make the same draws and shrinking heads for the board's SMP, not for fewer
            # draws.
            cpus = d.choice("MP_MAX_NUM_CPUS", _CPU_COUNTS)
            d.lines.append(_line("MP_MAX_NUM_CPUS", cpus if smp else 1))
    else:
        mapped = bool(v.get("THREAD_STACK_MEM_MAPPED"))
    # THREAD_ABORT_NEED_CLEANUP is selected by THREAD_STACK_MEM_MAPPED and nothing else.
    cleanup = mapped if toggles else bool(v.get("THREAD_ABORT_NEED_CLEANUP"))
    if sim_knobs:
        d.flag("SIM_TLB_SHOOTDOWN")
        d.flag("SIM_ABORT_CLEANUP_LEAK", allowed=cleanup)
        d.flag("SIM_CLEANUP_WAITS_FOR_SWITCH", allowed=cleanup)
    if mutants and cleanup:
        free = tuple(k for k in MUTANT_KNOBS if k not in fixed)
        pick = draw(st.sampled_from((None, *free)))
        if pick is not None:
            d.lines.append(_line(pick, True))
    result = BoardConfig(board, (*extra, *d.lines))
    try:
        result.load()
    except ConfigError as e:
        if not extra:
            raise AssertionError(
                f"configs: generated an invalid configuration {result!r}: {e}"
            ) from e
        assume(False)  # the extra lines clash with a drawn one: try another draw
    return result


def configs(
    board: str = "qemu_x86_64",
    *,
    toggles: bool = True,
    sim_knobs: bool = True,
    mutants: bool = False,
    extra: Iterable[str] = (),
) -> st.SearchStrategy[BoardConfig]:
    """Valid configurations of ``board`` as ``BoardConfig`` (board, Kconfig lines).

    ``toggles``: draw HW_STACK_PROTECTION (hence X86_STACK_PROTECTION, the legacy guard page),
    THREAD_STACK_MEM_MAPPED (where RAM is identity-mapped), X86_PAE (ia32 boards), USERSPACE,
    THREAD_STACK_INFO (=n only when nothing selects it), INIT_STACKS, and SMP with
    MP_MAX_NUM_CPUS 1..4 (boards with USE_SWITCH, i.e. x86_64). ``sim_knobs``: SIM_TLB_SHOOTDOWN,
    and with mapped stacks SIM_ABORT_CLEANUP_LEAK and SIM_CLEANUP_WAITS_FOR_SWITCH.
    ``mutants``: with mapped stacks, none or one of the SIM_MUTANT_* knobs.

    ``extra``: lines put first in every configuration (``"CONFIG_DEMAND_PAGING=y"``); the
    symbols they assign are not drawn, and the drawn ones respect their values. They are checked
    here: a ``ConfigError`` for bad extra lines is raised at once, not at draw time.

    Each drawn knob gets an explicit line (``=y`` / ``=n``), so the printed lines say the whole
    story; shrinking moves every knob towards the board's default. Every drawn configuration has
    been loaded once (cached), so ``.load()`` in the test costs nothing.
    """
    if board not in boards():
        raise ValueError(f"configs: unknown board {board!r} (choose from {', '.join(boards())})")
    extra_t = _lines(extra)
    base = load_board_config(board, extra_t)  # raises ConfigError for bad extra lines
    return _configs(board, base, extra_t, toggles, sim_knobs, mutants)
