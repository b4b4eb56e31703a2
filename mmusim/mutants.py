"""Mutants: deliberately broken kernels, switchable by name, that the invariants must catch.

Each mutant is one Kconfig line (a ``CONFIG_SIM_*`` knob of ``Kconfig.sim``) added to a scenario's
configuration; the kernel code it switches is marked ``# MUTANT`` (``# MUTANT (SIM_MUTANT_...)``)
in ``mmusim/kernel/abort.py`` (the cleanup paths; ``abort-cleanup-leak`` is the pre-fix code of
Zephyr #119098, ``do_thread_cleanup``), ``mm.py`` (``guard-off-by-one``, ``guard-rw``,
``no-invlpg``), ``policy.py`` (``stack-size-unrounded``), ``threads.py`` (``user-priv-stack``)
and ``vmregion.py`` (``va-double-alloc``). ``user-priv-stack`` needs ``CONFIG_USERSPACE=y`` and a
``K_USER`` thread to show::

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
    "guard-off-by-one": (
        "CONFIG_SIM_MUTANT_GUARD_OFF_BY_ONE=y",
        "a stack mapping starts one page too low, over its front guard; that guard falls outside "
        "the allocation",
    ),
    "guard-rw": (
        "CONFIG_SIM_MUTANT_GUARD_RW=y",
        "a stack's front guard page is mapped read-write (to the page below the stack object)",
    ),
    "stack-size-unrounded": (
        "CONFIG_SIM_MUTANT_STACK_SIZE_UNROUNDED=y",
        "a stack mapping is sized rounded down to whole pages: the thread gets less than it asked",
    ),
    "user-priv-stack": (
        "CONFIG_SIM_MUTANT_USER_PRIV_STACK=y",
        "a K_USER thread gets U/S over its whole stack object, its privilege stack included",
    ),
    "no-invlpg": (
        "CONFIG_SIM_MUTANT_NO_INVLPG=y",
        "arch_mem_unmap clears PTEs without invlpg on the unmapping CPU (others are shot down)",
    ),
    "va-double-alloc": (
        "CONFIG_SIM_MUTANT_VA_DOUBLE_ALLOC=y",
        "virt_region_alloc leaves every second region free, so it is handed out twice",
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
