"""The house keeps its shape: no import cycles, imports only go down the layers, modules stay short.

Imports are read from the source with ``ast`` -- module-level and function-level alike, so a
function-level import cannot hide a cycle; only imports under ``if TYPE_CHECKING:`` (annotations)
are left out. The layers are docs/design.md's: ``hw`` <- ``kernel`` <- ``runtime`` <-
(``explore``, ``testing``, ``scenario``) <- (``render``, ``cli``), where ``runtime`` imports only
``hw``; and inside ``mmusim.kernel`` the list at the top of its ``__init__.py``.
"""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import mmusim.kernel

ROOT = Path(mmusim.kernel.__file__).resolve().parent.parent  # .../mmusim
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node, except what sits under ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for child in node.orelse for n in _runtime_nodes_and_self(child))
            continue
        yield node
        yield from _runtime_nodes(node)


def _runtime_nodes_and_self(node: ast.AST) -> Iterator[ast.AST]:
    yield node
    yield from _runtime_nodes(node)


def imports_of(name: str, path: Path) -> set[str]:
    """The mmusim modules that module ``name`` imports at run time."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in MODULES)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in MODULES:
                    found.add(sub)
                elif base in MODULES:
                    found.add(base)
    found.discard(name)
    return found


GRAPH = {name: imports_of(name, path) for name, path in MODULES.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_no_import_cycles() -> None:
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_cycle_finder_finds_a_cycle() -> None:
    """The check above can fail."""
    graph = {"a": {"b"}, "b": {"c"}, "c": set()}
    assert find_cycle(graph) is None
    graph["c"] = {"a"}
    assert find_cycle(graph) == ["a", "b", "c", "a"]


def test_function_level_imports_count(tmp_path: Path) -> None:
    """An import inside a function is an edge: it cannot hide a cycle."""
    path = tmp_path / "x.py"
    path.write_text("def f():\n    from mmusim.kernel import routines\n")
    assert imports_of("mmusim.kernel.x", path) == {"mmusim.kernel.routines"}


def test_type_checking_imports_are_left_out(tmp_path: Path) -> None:
    path = tmp_path / "x.py"
    path.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from mmusim.kernel import boot\n"
        "else:\n    from mmusim.kernel import sched\n"
    )
    assert imports_of("mmusim.kernel.x", path) == {"mmusim.kernel.sched"}


# -- the layers ------------------------------------------------------------------------------

# Each top-level part may import the parts listed for it (and itself), nothing else.
ALLOWED = {
    "_text": set(),  # reading the text inputs: under everything that reads files
    "_progress": set(),  # the status line of long runs (tqdm): under testing and cli
    "hw": set(),
    "kconfig": {"_text"},
    "mutants": set(),
    "examples": {"hw"},
    "kernel": {"hw"},
    # The user-space runtime sits above the kernel; its address-space modules (areas, defs,
    # pager) import only hw -- the kernel plugs in through a Pager (test below).
    "runtime": {"hw", "kernel"},
    "scenario": {"_text", "hw", "kernel", "runtime", "kconfig"},
    "explore": {"_text", "hw", "kernel", "runtime", "kconfig", "scenario"},
    "testing": {"_progress", "hw", "kernel", "runtime", "kconfig"},
    "render": {"hw", "kernel", "runtime", "kconfig", "scenario", "explore"},
    # `mmusim compare`: runs attacks on every stack strategy and measures their costs; above
    # runtime, kernel and render (like explore), below cli.
    "compare": {"_text", "hw", "kernel", "runtime", "kconfig", "scenario", "explore", "render"},
    # `mmusim quiz`: problems made with the machine, answered by its walker, shown by render.
    "quiz": {"hw", "kernel", "kconfig", "render"},
    "cli": {
        "_text",
        "_progress",
        "hw",
        "kernel",
        "runtime",
        "kconfig",
        "scenario",
        "explore",
        "render",
        "compare",
        "quiz",
        "examples",
        "mutants",
    },  # fmt: skip
}


# Top-level entry points and compatibility shims sit in the CLI's layer.
TOP_LEVEL_OF_CLI = {"__main__", "map_cli"}


def _part(module: str) -> str:
    part = module.split(".")[1] if module.count(".") else ""
    return "cli" if part in TOP_LEVEL_OF_CLI else part


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m.count(".")))
def test_imports_go_down_the_layers(module: str) -> None:
    part = _part(module)
    assert part in ALLOWED, f"{module}: in no layer of ALLOWED"
    bad = sorted(d for d in GRAPH[module] if _part(d) not in ALLOWED[part] | {part, ""})
    assert not bad, f"{module} ({part}) imports {bad}: allowed {sorted(ALLOWED[part])}"


@pytest.mark.parametrize("module", ["area", "areas", "defs", "gostack", "pager", "policies"])
def test_the_address_space_modules_import_only_hw(module: str) -> None:
    deps = {_part(d) for d in GRAPH[f"mmusim.runtime.{module}"]} - {"runtime", ""}
    assert deps <= {"hw"}, f"mmusim.runtime.{module} imports {sorted(deps)}: only hw"


def kernel_layers() -> list[str]:
    """The module list at the top of mmusim/kernel/__init__.py, lowest first."""
    doc = mmusim.kernel.__doc__ or ""
    block = doc.split("::", 1)[1]
    return re.findall(r"^    (\w+)  ", block, flags=re.M)


def test_kernel_layer_list_names_every_module() -> None:
    listed = kernel_layers()
    actual = sorted(m.rpartition(".")[2] for m in MODULES if m.startswith("mmusim.kernel."))
    assert sorted(listed) == actual


@pytest.mark.parametrize("module", kernel_layers())
def test_kernel_modules_import_only_lower_ones(module: str) -> None:
    order = kernel_layers()
    below = set(order[: order.index(module)])
    deps = {d.rpartition(".")[2] for d in GRAPH[f"mmusim.kernel.{module}"] if _part(d) == "kernel"}
    assert deps <= below, f"kernel.{module} imports {sorted(deps - below)}, listed above it"


# -- size ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_is_not_too_long(module: str) -> None:
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{module}: {lines} lines (at most about {MAX_LINES})"


# -- documented imports ------------------------------------------------------------------------

# Every import the docs of earlier versions showed users; code moved since, these keep working.
DOCUMENTED = {
    "mmusim.kernel": "K_FOREVER Kernel KernelAssert Op StackObject run",
    "mmusim.kernel.geometry": "PAGE",
    "mmusim.kernel.mm": "K_MEM_MAP_UNINIT K_MEM_PERM_RW map_phys_guarded unmap_phys_guarded",
    "mmusim.kernel.policy": "StackPolicy MappedStacks LegacyGuard NoProtection",
    "mmusim.kernel.thread": "MappedInfo",
    "mmusim.kernel.invariants": "InvariantViolation assert_invariants CHECKS",
    "mmusim.map_cli": "run_steps scenario_kernel",
    "mmusim.cli": "main",
    "mmusim.explore": "Model explore",
    "mmusim.explore.model": "Action",
    "mmusim.explore.trace": "replay_labels",
    "mmusim.render.memmap": "memory_map render_svg render_text rows_json",
    "mmusim.scenario": "BUNDLED_DIR load_scenario run_scenario",
    "mmusim.testing": "KernelMachine",
    "mmusim.mutants": "MUTANTS mutant_config_lines",
    "mmusim.kconfig": "ConfigError boards load_config",
    "mmusim.hw": "Access ControlState Cpu PageTables PhysMem PteFlags MODES Trap translate",
    "mmusim.runtime": "AddressSpace Area HwPager Pager MmError MmFlavour Prot LINUX NANOS HAIKU",
}


@pytest.mark.parametrize("module", sorted(DOCUMENTED))
def test_documented_imports_keep_working(module: str) -> None:
    mod = importlib.import_module(module)
    missing = [name for name in DOCUMENTED[module].split() if not hasattr(mod, name)]
    assert not missing, f"from {module} import {', '.join(missing)} no longer works"


def test_policy_authors_import_from_one_place() -> None:
    """What docs/property-tests.md's policy needs is all in mmusim.kernel."""
    names = "PAGE K_MEM_MAP_UNINIT K_MEM_PERM_RW MappedInfo StackPolicy map_phys_guarded"
    assert all(hasattr(mmusim.kernel, n) for n in names.split())
