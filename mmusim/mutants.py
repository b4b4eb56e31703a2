"""Mutants: deliberately broken kernels, switchable by name, that the invariants must catch.

Each mutant is one Kconfig line (a ``CONFIG_SIM_*`` knob of ``Kconfig.sim``) added to a scenario's
configuration; the kernel code it switches is marked ``# MUTANT`` in ``mmusim/kernel/abort.py``
(``abort-cleanup-leak`` is the pre-fix code of Zephyr #119098, ``do_thread_cleanup``)::

    from mmusim.mutants import MUTANTS, mutant_config_lines
    mutant_config_lines("self-unmap")   # ("CONFIG_SIM_MUTANT_SELF_UNMAP=y",)
"""

from __future__ import annotations

__all__ = ["MUTANTS", "mutant_config_lines"]

MUTANTS: dict[str, tuple[str, str]] = {
    "no-cleanup-lock": (
        "CONFIG_SIM_MUTANT_NO_CLEANUP_LOCK=y",
        "k_thread_abort_cleanup and the reuse check do not take thread_cleanup_lock",
    ),
    "defer-no-drain": (
        "CONFIG_SIM_MUTANT_DEFER_NO_DRAIN=y",
        "a self-abort overwrites the cleanup slot without unmapping the pending stack (it leaks)",
    ),
    "self-unmap": (
        "CONFIG_SIM_MUTANT_SELF_UNMAP=y",
        "a self-aborting thread unmaps the stack it is still running on instead of deferring",
    ),
    "abort-cleanup-leak": (
        "CONFIG_SIM_ABORT_CLEANUP_LEAK=y",
        "pre-fix #119098: aborting another thread never unmaps its stack (it leaks)",
    ),
}
"""Mutant name -> (the Kconfig line that switches it on, a one-line description)."""


def mutant_config_lines(name: str) -> tuple[str, ...]:
    """The Kconfig lines that turn mutant ``name`` on; ValueError naming the allowed names."""
    try:
        line, _ = MUTANTS[name]
    except KeyError:
        raise ValueError(
            f"unknown mutant {name!r} (allowed: {', '.join(sorted(MUTANTS))})"
        ) from None
    return (line,)
