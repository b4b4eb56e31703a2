"""``mmusim quiz``: seeded problems about paging and stack protection, with worked answers from
the real model (docs/quiz.md).

Public API: ``translate_problem(seed, mode, level)`` -> ``TranslateProblem`` (its ``text()``,
``answers_text()``, ``to_json()``, ``image``); ``tlb_problem(seed, mode)`` -> ``TlbProblem``
(``text()``, ``answers_text()``, ``to_json()``); ``guard_problem(seed)`` -> ``GuardProblem``
(the same three); ``QUIZ_KINDS``.
"""

from mmusim.quiz.guard import GuardProblem, guard_problem
from mmusim.quiz.tlb import TlbProblem, tlb_problem
from mmusim.quiz.translate import LEVELS, Question, TranslateProblem, translate_problem

QUIZ_KINDS = ("translate", "guard", "tlb")

__all__ = [
    "LEVELS",
    "GuardProblem",
    "QUIZ_KINDS",
    "Question",
    "TlbProblem",
    "TranslateProblem",
    "guard_problem",
    "tlb_problem",
    "translate_problem",
]
