"""``mmusim quiz``: seeded problems about paging and stack protection, with worked answers from
the real model (docs/quiz.md).

Public API: ``translate_problem(seed, mode, level)`` -> ``TranslateProblem`` (its ``text()``,
``answers_text()``, ``to_json()``, ``image``); ``tlb_problem(seed, mode)`` -> ``TlbProblem``
(``text()``, ``answers_text()``, ``to_json()``); ``QUIZ_KINDS``.
"""

from mmusim.quiz.tlb import TlbProblem, tlb_problem
from mmusim.quiz.translate import LEVELS, Question, TranslateProblem, translate_problem

QUIZ_KINDS = ("translate", "tlb")

__all__ = [
    "LEVELS",
    "QUIZ_KINDS",
    "Question",
    "TlbProblem",
    "TranslateProblem",
    "tlb_problem",
    "translate_problem",
]
