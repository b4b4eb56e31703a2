"""``mmusim map SCENARIO [--step N] [--svg FILE] [--json]``: the kernel address space of a scenario.

Prints ``memory_map`` as a ``/proc/self/maps``-like table (or JSON rows with ``--json``), after the
whole run or after ``--step N`` engine steps, and with ``--svg FILE`` also draws it.

How a scenario file becomes a kernel is not the command's business: ``add_map_command`` takes a
``load_kernel(path, step)`` callable. ``mmusim.scenario.scenario_kernel`` is the one for scenario
files; ``scenario_loader(build)`` makes one from any function that boots a kernel. Both run with
``Kernel.run``'s schedule (round robin, or the scenario's seed), so ``--step N`` stops exactly
where the full run passes after N steps.

``map`` shows, it does not judge: the kernel runs without the invariant checks (``mmusim run``
applies them), so a scenario that reproduces a bug -- a leaked stack mapping, say -- can be mapped
after the bug happened. The checks do not change the run, only stop it.

Errors are one line and exit code 2, as everywhere in the ``mmusim`` command:
``mmusim map: error: argument --step: 'x' is not a number``. A kernel assertion while the scenario
runs is its outcome, not an error: one line on stdout, ``ASSERT  FILE: the scenario makes Zephyr
assert: ... (in step N; --step N-1 maps the state just before it)``, and exit code 1.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mmusim.cli.common import COMMAND_HELP, fail, one_line, parse_step_count
from mmusim.kernel import KernelAssert
from mmusim.kernel.invariants import InvariantViolation
from mmusim.render.memmap import memory_map, render_svg, render_text, rows_json
from mmusim.scenario import LoadKernel, ScenarioError, scenario_kernel
from mmusim.scenario.document import display_path
from mmusim.scenario.kernel import RunAssert

__all__ = ["MapInputError", "add_map_command", "add_scenario_map_command", "cmd_map"]


class MapInputError(Exception):
    """Bad input found by a ``load_kernel``; its message is complete (names file and line)."""


def add_scenario_map_command(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``map`` as ``mmusim`` has it: mapping scenario files (``scenario_kernel``)."""
    add_map_command(subparsers, scenario_kernel)


def add_map_command(
    subparsers: argparse._SubParsersAction[Any],
    load_kernel: LoadKernel,
    *,
    errors: tuple[type[Exception], ...] = (),
) -> None:
    """Add the ``map`` subcommand, mapping the kernels ``load_kernel`` makes.

    For bad input ``load_kernel`` raises ``MapInputError``, ``ScenarioError`` or one of the
    ``errors`` listed here (printed as they are: their messages name file and line), or
    ``OSError``, ``ValueError``, ``KernelAssert`` (printed after the scenario's path); the
    command reports each in one line. A ``RunAssert`` (the kernel asserted while the scenario ran)
    is the scenario's outcome: one line on stdout, exit code 1."""
    p = subparsers.add_parser(
        "map",
        help=COMMAND_HELP["map"],
        description="Run the scenario (all of it, or --step N engine steps with the default "
        "round-robin schedule) and list the kernel virtual address space like /proc/self/maps: "
        "range, size, rights from the page tables (r/w/x, u = user-accessible, --- = not "
        "present), and whose it is -- kernel image, stack objects, thread stacks split into "
        "front guard, privilege stack or reserved area, buffer and rear guard, k_mem_map "
        "regions, free space.",
    )
    p.add_argument("scenario", metavar="SCENARIO", help="scenario file")
    p.add_argument(
        "--step",
        type=parse_step_count,
        metavar="N",
        help="stop after N engine steps instead of running to the end",
    )
    p.add_argument("--svg", type=Path, metavar="FILE", help="also draw the map as SVG to FILE")
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead")

    def func(args: argparse.Namespace) -> int:
        return cmd_map(args, load_kernel, errors)

    p.set_defaults(func=func)


def cmd_map(
    args: argparse.Namespace, load_kernel: LoadKernel, errors: tuple[type[Exception], ...] = ()
) -> int:
    """Load and run the scenario, print its map, write the SVG if asked. Exit 0, or 2 with one
    line on bad input."""
    as_is: tuple[type[Exception], ...] = (MapInputError, ScenarioError, *errors)
    try:
        k = load_kernel(args.scenario, args.step)
    except as_is as exc:
        return fail("map", one_line(exc))
    except OSError as exc:
        return fail("map", f"{display_path(args.scenario)}: {exc.strerror or exc}")
    except RunAssert as exc:  # an outcome of the scenario, not bad input: a verdict
        print(f"ASSERT  {display_path(args.scenario)}: the scenario makes Zephyr assert: "
              f"{one_line(exc)}")  # fmt: skip
        return 1
    except InvariantViolation as exc:
        return fail(
            "map", f"{display_path(args.scenario)}: kernel invariant violated: {one_line(exc)}"
        )
    except (ValueError, KernelAssert) as exc:
        return fail("map", f"{display_path(args.scenario)}: {one_line(exc)}")
    rows = memory_map(k)
    if args.svg is not None:
        when = "after the run" if args.step is None else f"after step {k.steps}"
        title = f"{display_path(Path(args.scenario).name)}: kernel address space {when}"
        try:
            args.svg.write_text(render_svg(rows, title))
        except OSError as exc:
            return fail("map", f"--svg: cannot write {display_path(args.svg)!r}: {exc.strerror}")
    if args.json:
        print(json.dumps({"steps": k.steps, "rows": rows_json(rows)}, indent=2))
    else:
        print(render_text(rows), end="")
    return 0
