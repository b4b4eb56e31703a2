"""The expression language of scenario files: ``expect.facts[].expr`` and a fault's ``cr2``.

::

    { expr = "free_after == free_before" }
    { expr = "addr[0] != null and len(addr) == 32" }
    faults = [ { thread = "t", cr2 = "addr - 2048" } ]

A name is a recorded fact (its last value), ``name[i]`` its i-th value; integers, strings,
``null``/``true``/``false``, ``+ - * // %``, comparisons, ``and or not``, and ``min max len abs``.

Design choices:

* Python's own parser (``ast.parse(mode="eval")``) reads the text, so precedence and chained
  comparisons come for free; ``Expr.parse`` then walks the tree and refuses every node type
  outside a whitelist. ``eval`` is never used: ``Expr.evaluate`` walks the same
  tree over the facts, so ``__import__('os')`` or attribute access cannot run.
* Checking and evaluating are separate: ``parse`` raises ``ValueError`` (a problem with the file,
  reported by the loader at the expression's line), ``evaluate`` raises ``ExprError`` (a problem
  with this run's facts, reported as a failed expectation).
* Arithmetic and ordering take integers only (``_arith``); strings and ``null`` only compare with
  ``==`` and ``!=``. So ``null + 1`` is an error that names the operation, not a Python TypeError.
* Dotted names (``t.mapped_addr``) are one fact name, as the ``record`` op writes them.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

__all__ = ["EXPR_HELP", "Expr", "ExprError"]


class ExprError(Exception):
    """An expression that cannot be evaluated on these facts (index out of range, None + 1 ...)."""


_BINOPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_CMPOPS: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_FUNCS = ("abs", "len", "max", "min")
_WORDS = {"null": None, "true": True, "false": False}
EXPR_HELP = (
    "facts by name (last value) or name[i] (i-th value), integers, strings, null, "
    "+ - * // %, == != < <= > >=, and or not, min max len abs"
)


def _dotted(node: ast.expr) -> str | None:
    """``a.b.c`` as a fact name, or None if the node is not a (dotted) name."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return None if head is None else f"{head}.{node.attr}"
    return None


@attrs.frozen
class Expr:
    """A safe expression over recorded facts: ``free_after == free_before``, ``addr[0] != null``.

    A name is a fact (its last recorded value); ``name[i]`` its i-th value (negative from the end);
    ``len(name)`` how many values it has; ``min(name)`` / ``max(name)`` over all its values, or
    over several arguments. ``null`` is a missing value (NULL). Parsed once; ``names`` are the
    facts it reads.
    """

    text: str
    tree: ast.Expression = attrs.field(eq=False, repr=False)
    names: frozenset[str]

    @classmethod
    def parse(cls, text: str) -> Expr:
        """Parse and check ``text``; raises ValueError naming the first thing not allowed."""
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as e:
            raise ValueError(f"not an expression: {e.msg}") from None
        names: set[str] = set()
        cls._check(tree.body, names)
        return cls(text, tree, frozenset(names))

    @classmethod
    def _check(cls, node: ast.expr, names: set[str]) -> None:
        """Raise ValueError unless ``node`` is whitelisted; add the facts it reads to ``names``."""
        name = _dotted(node)
        if name is not None:
            if name not in _WORDS:
                names.add(name)
            return
        if isinstance(node, ast.Constant):
            if type(node.value) not in (int, str, bool):
                raise ValueError(f"constant {node.value!r} is not allowed")
        elif isinstance(node, ast.BoolOp):
            for v in node.values:
                cls._check(v, names)
        elif isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, ast.Not | ast.USub | ast.UAdd):
                raise ValueError(f"operator {type(node.op).__name__} is not allowed")
            cls._check(node.operand, names)
        elif isinstance(node, ast.BinOp):
            if type(node.op) not in _BINOPS:
                raise ValueError(f"operator {type(node.op).__name__} is not allowed")
            cls._check(node.left, names)
            cls._check(node.right, names)
        elif isinstance(node, ast.Compare):
            for op in node.ops:
                if type(op) not in _CMPOPS:
                    raise ValueError(f"comparison {type(op).__name__} is not allowed")
            cls._check(node.left, names)
            for c in node.comparators:
                cls._check(c, names)
        elif isinstance(node, ast.Subscript):
            base = _dotted(node.value)
            if base is None or base in _WORDS or _int_const(node.slice) is None:
                raise ValueError("indexing is only fact[integer]")
            names.add(base)
        elif isinstance(node, ast.Call):
            fn = node.func.id if isinstance(node.func, ast.Name) else None
            if fn not in _FUNCS or node.keywords or not node.args:
                raise ValueError(f"calls are only {', '.join(_FUNCS)} with arguments")
            if fn == "len" and (len(node.args) != 1 or _dotted(node.args[0]) is None):
                raise ValueError("len takes one fact name")
            for a in node.args:
                cls._check(a, names)
        else:
            raise ValueError(f"{type(node).__name__} is not allowed")

    def evaluate(self, facts: Mapping[str, Sequence[Any]]) -> Any:
        """The value on ``facts`` (each fact's recorded values, in order); raises ExprError."""
        return self._eval(self.tree.body, facts)

    def _values(self, name: str, facts: Mapping[str, Sequence[Any]]) -> Sequence[Any]:
        """The recorded values of fact ``name``: at least one."""
        values = facts.get(name)
        if not values:
            raise ExprError(f"fact {name!r} was never recorded")
        return values

    def _eval(self, node: ast.expr, facts: Mapping[str, Sequence[Any]]) -> Any:
        """The value of ``node``, one of the node types ``_check`` lets through."""
        name = _dotted(node)
        if name is not None:
            return _WORDS[name] if name in _WORDS else self._values(name, facts)[-1]
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.BoolOp):
            result: Any = None
            for v in node.values:
                result = self._eval(v, facts)
                if isinstance(node.op, ast.And) != bool(result):
                    return result
            return result
        if isinstance(node, ast.UnaryOp):
            x = self._eval(node.operand, facts)
            if isinstance(node.op, ast.Not):
                return not x
            return _arith(operator.neg if isinstance(node.op, ast.USub) else operator.pos, x)
        if isinstance(node, ast.BinOp):
            return _arith(
                _BINOPS[type(node.op)], self._eval(node.left, facts), self._eval(node.right, facts)
            )
        if isinstance(node, ast.Compare):
            left = self._eval(node.left, facts)
            for op, comp in zip(node.ops, node.comparators, strict=True):
                right = self._eval(comp, facts)
                if isinstance(op, ast.Eq | ast.NotEq):
                    ok = _CMPOPS[type(op)](left, right)
                else:
                    ok = _arith(_CMPOPS[type(op)], left, right)
                if not ok:
                    return False
                left = right
            return True
        if isinstance(node, ast.Subscript):
            base = _dotted(node.value)
            index = _int_const(node.slice)
            assert base is not None and index is not None  # checked by parse
            values = self._values(base, facts)
            if not -len(values) <= index < len(values):
                raise ExprError(f"{base}[{index}]: {base!r} has {len(values)} value(s)")
            return values[index]
        if isinstance(node, ast.Call):
            assert isinstance(node.func, ast.Name)
            fn = node.func.id
            if fn == "len":
                base = _dotted(node.args[0])
                assert base is not None
                return len(facts.get(base, ()))
            if fn in ("min", "max") and len(node.args) == 1:
                base = _dotted(node.args[0])
                args = (
                    list(self._values(base, facts)) if base else [self._eval(node.args[0], facts)]
                )
            else:
                args = [self._eval(a, facts) for a in node.args]
            if fn == "abs":
                if len(args) != 1:
                    raise ExprError("abs takes one argument")
                return _arith(abs, args[0])
            return _arith(min if fn == "min" else max, *args)
        raise ExprError(f"{type(node).__name__} is not allowed")  # pragma: no cover


def _int_const(node: ast.expr) -> int | None:
    """``node`` as an integer if it is a literal one (``2``, ``-1``), else None."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, ast.USub)
        and isinstance(node.operand, ast.Constant)
        and type(node.operand.value) is int
    ):
        return -node.operand.value
    return None


def _arith(fn: Callable[..., Any], *args: Any) -> Any:
    """Arithmetic and ordering: integers only (strings and null only compare with == and !=)."""
    name = getattr(fn, "__name__", "operation")
    if any(a is None for a in args):
        raise ExprError(f"{name} of null")
    if not all(isinstance(a, int) for a in args):
        shown = ", ".join(repr(a) for a in args)
        raise ExprError(f"{name} needs integers, got {shown}")
    try:
        return fn(*args)
    except ZeroDivisionError:
        raise ExprError("division by zero") from None
    except (TypeError, ValueError) as e:
        raise ExprError(str(e)) from None
