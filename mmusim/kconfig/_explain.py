"""Why a symbol has the value it has: the sentences in mmusim's configuration errors.

kconfiglib resolves values but does not say why an assignment was overruled. These helpers read
its expression trees (tuples ``(AND, a, b)``, ``(OR, a, b)``, ``(NOT, a)``, comparisons, or a
Symbol/Choice) and name the culprits a user can change. ``blame(expr)`` descends through hidden
(promptless) symbols, which only derive their value, and stops at symbols with a prompt: for
``MMU && ARCH_SUPPORTS_MEM_MAPPED_STACKS`` with demand paging on it answers ``DEMAND_PAGING=y``,
through ``select ARCH_SUPPORTS_MEM_MAPPED_STACKS if X86_MMU && !DEMAND_PAGING``.

kconfiglib has no type hints; its objects are ``Any`` here.
"""

from __future__ import annotations

from typing import Any

import kconfiglib  # type: ignore[import-untyped]

Sym = Any  # kconfiglib.Symbol
Expr = Any  # kconfiglib expression: Symbol, Choice or tuple


def has_prompt(sym: Sym) -> bool:
    """True if the user can set ``sym`` (some definition of it has a prompt)."""
    return any(node.prompt for node in sym.nodes)


def kind(sym: Sym) -> str:
    """kconfiglib's type name of ``sym``: bool, tristate, int, hex or string."""
    return str(kconfiglib.TYPE_TO_STR[sym.orig_type])


def value_text(sym: Sym) -> str:
    """``sym``'s resolved value as a .config would write it (``y``/``n``, ``0x1000``, ``""``)."""
    return str(sym.str_value)


def expr_text(expr: Expr) -> str:
    """``expr`` in Kconfig syntax, without choice terms (``<choice X>`` means nothing to users)."""
    terms = [t for t in kconfiglib.split_expr(expr, kconfiglib.AND) if not _is_choice(t)]
    if not terms:
        return "y"
    return " && ".join(_paren(t) for t in terms) if len(terms) > 1 else _plain(terms[0])


def _paren(expr: Expr) -> str:
    text = _plain(expr)
    return f"({text})" if isinstance(expr, tuple) and expr[0] is kconfiglib.OR else text


def _plain(expr: Expr) -> str:
    return str(kconfiglib.expr_str(expr))


def _is_choice(expr: Expr) -> bool:
    return isinstance(expr, kconfiglib.Choice)


def _value(expr: Expr) -> int:
    return int(kconfiglib.expr_value(expr))


def blame(expr: Expr, seen: frozenset[str] = frozenset()) -> list[str]:
    """Settings that make ``expr`` (which evaluates to n) false, as ``NAME=value`` strings."""
    if isinstance(expr, tuple):
        op = expr[0]
        if op is kconfiglib.AND:
            return _merge(blame(e, seen) for e in expr[1:] if _value(e) == 0)
        if op is kconfiglib.OR:
            return _merge(blame(e, seen) for e in expr[1:])
        if op is kconfiglib.NOT:
            return credit(expr[1], seen)
        return [f"{_plain(expr)} is false ({_comparison_values(expr)})"]
    if _is_choice(expr):
        return blame(expr.direct_dep, seen)
    sym = expr
    if sym.is_constant or has_prompt(sym) or sym.name in seen:
        return [f"{sym.name}={value_text(sym)}"]
    seen = seen | {sym.name}
    # A hidden bool is n because nothing selects it, no default applies, or its deps are unmet.
    causes = []
    if _value(sym.direct_dep) == 0:
        causes.append(blame(sym.direct_dep, seen))
    else:
        if sym.rev_dep is not sym.kconfig.n:
            causes.append(blame(sym.rev_dep, seen))
        for default, cond in sym.defaults:
            if _value(cond) == 0 and _value(default) != 0:
                causes.append(blame(cond, seen))
    return _merge(causes) or [f"{sym.name}={value_text(sym)}"]


def credit(expr: Expr, seen: frozenset[str] = frozenset()) -> list[str]:
    """Settings that make ``expr`` (which evaluates to y) true, as ``NAME=value`` strings."""
    if isinstance(expr, tuple):
        op = expr[0]
        if op is kconfiglib.AND:
            return _merge(credit(e, seen) for e in expr[1:])
        if op is kconfiglib.OR:
            return _merge(credit(e, seen) for e in expr[1:] if _value(e) != 0)
        if op is kconfiglib.NOT:
            return blame(expr[1], seen)
        return [f"{_plain(expr)} ({_comparison_values(expr)})"]
    if _is_choice(expr):
        return [f"choice {expr.name}"]
    return [f"{expr.name}={value_text(expr)}"]


def _comparison_values(expr: Expr) -> str:
    syms = [s for s in expr[1:] if not s.is_constant]
    return ", ".join(f"{s.name}={value_text(s)}" for s in syms) or "constants"


def _merge(lists: Any) -> list[str]:
    out: list[str] = []
    for items in lists:
        out.extend(i for i in items if i not in out)
    return out


def selectors(sym: Sym, *, active_only: bool) -> list[str]:
    """Names of the symbols that ``select`` ``sym`` (only those selecting it now, if asked)."""
    return _reverse(sym.rev_dep, sym, active_only)


def impliers(sym: Sym, *, active_only: bool) -> list[str]:
    """Names of the symbols that ``imply`` ``sym``."""
    return _reverse(sym.weak_rev_dep, sym, active_only)


def _reverse(expr: Expr, sym: Sym, active_only: bool) -> list[str]:
    if expr is sym.kconfig.n:
        return []
    names = []
    for term in kconfiglib.split_expr(expr, kconfiglib.OR):
        if active_only and _value(term) == 0:
            continue
        head = kconfiglib.split_expr(term, kconfiglib.AND)[0]
        names.append(head.name)
    return names


def unmet_dependency(sym: Sym) -> str:
    """Why ``sym`` (or its choice) is invisible: 'depends on E, which is n (CULPRITS)'."""
    owner = sym.choice if sym.choice is not None and sym.choice.visibility == 0 else sym
    dep = owner.direct_dep
    if _value(dep) == 0:
        text = expr_text(dep)
        culprits = blame(dep)
        tail = "" if culprits == [f"{text}=n"] else f" ({', '.join(culprits)})"
        return f"depends on {text}, which is n{tail}"
    return "it is not visible in this configuration (its prompt's condition is n)"


def derivation(sym: Sym) -> str:
    """How a promptless symbol gets its value: its selectors, impliers and defaults."""
    parts = []
    sel = selectors(sym, active_only=False)
    if sel:
        parts.append("selected by " + ", ".join(sel))
    imp = impliers(sym, active_only=False)
    if imp:
        parts.append("implied by " + ", ".join(imp))
    for node in sym.nodes:
        for default, cond in node.orig_defaults:
            when = "" if cond is sym.kconfig.y else f" if {_plain(cond)}"
            parts.append(f"default {_plain(default)}{when}")
    return "; ".join(parts) if parts else "nothing selects it and it has no default"
