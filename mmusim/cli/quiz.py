"""``mmusim quiz KIND [--seed N] [--mode M] [--level L] [--answers] [--json] [--image-out FILE]``:
a seeded problem with its worked answer (docs/quiz.md)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mmusim.cli.common import COMMAND_HELP, fail, parse_seed
from mmusim.hw import MODES
from mmusim.quiz import LEVELS, QUIZ_KINDS, guard_problem, tlb_problem, translate_problem
from mmusim.scenario.document import display_path

__all__ = ["add_quiz_command", "cmd_quiz"]


def add_quiz_command(subparsers: argparse._SubParsersAction[Any]) -> None:
    p = subparsers.add_parser(
        "quiz",
        help=COMMAND_HELP["quiz"],
        description="Print a problem made from --seed (the same seed prints the same problem on "
        "every machine), and with --answers its worked answer, computed by the model itself. "
        "translate: page tables in a memory image, control bits and a list of accesses; for "
        "each, the physical address or the fault (vector, error code, CR2), the walks shown as "
        "`mmusim walk` prints them. tlb: a page-table entry changed while two CPUs may cache it "
        "(no invalidation, invlpg on one CPU, a shootdown); which CPU uses a stale "
        "translation. guard: threads on mapped stacks, one writes at an address; whose guard, "
        "which reason code, what Zephyr prints. --level applies to translate only, --mode to "
        "translate and tlb.",
    )
    p.add_argument("kind", metavar="KIND", choices=QUIZ_KINDS,
                   help=f"the kind of problem: {', '.join(QUIZ_KINDS)}")  # fmt: skip
    p.add_argument("--seed", type=parse_seed, default=0, help="which problem (default 0)")
    p.add_argument("--mode", choices=sorted(MODES), default="ia32e", help="paging mode")
    p.add_argument("--level", type=int, choices=LEVELS, default=1,
                   help="difficulty: 1 present, R/W, U/S; 2 also XD, WP, SMEP; 3 also SMAP, "
                   "AC, large pages")  # fmt: skip
    p.add_argument("--answers", action="store_true", help="also print the worked answers")
    p.add_argument("--json", action="store_true", help="print the problem and answers as JSON")
    p.add_argument("--image-out", type=Path, metavar="FILE",
                   help="write the memory image of the problem (before any access)")  # fmt: skip
    p.set_defaults(func=cmd_quiz)


def cmd_quiz(args: argparse.Namespace) -> int:
    if args.kind in ("tlb", "guard"):
        if args.image_out is not None:
            return fail("quiz", "--image-out: only translate problems have a memory image")
        other = (
            tlb_problem(args.seed, args.mode) if args.kind == "tlb" else guard_problem(args.seed)
        )
        if args.json:
            print(json.dumps(other.to_json(), indent=2))
        else:
            print(other.text() + (other.answers_text() if args.answers else ""), end="")
        return 0
    problem = translate_problem(args.seed, args.mode, args.level)
    if args.image_out is not None:
        try:
            args.image_out.write_bytes(problem.image)
        except OSError as exc:
            return fail("quiz", f"--image-out: cannot write {display_path(args.image_out)!r}: "
                        f"{exc.strerror}")  # fmt: skip
    if args.json:
        print(json.dumps(problem.to_json(), indent=2))
        return 0
    text = problem.text()
    if args.image_out is not None:
        flags = " ".join(f"--{name}" for name, on in problem.control.items() if on)
        text += (f"\nCheck an answer: mmusim translate --image {display_path(args.image_out)} "
                 f"--mode {problem.mode} --cr3 {problem.ctl.cr3:#x} {flags} --access A "
                 "--cpl C VADDR (in order, with --image-out on the same file)\n")  # fmt: skip
    print(text + (problem.answers_text() if args.answers else ""), end="")
    return 0
