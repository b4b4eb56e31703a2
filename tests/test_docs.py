"""The docs are executable and self-contained.

Every ```python block runs; every `$ mmusim ...` transcript matches what the command prints (run
``docs/update_transcripts.py`` to refresh them); the tables and claims that mirror the code are
compared with it; every relative link leads to a file of the project, and nothing points to notes
a user's copy of the project does not have.

A code block's info string says what the test does with it:

* ```python -- runs, in a scratch directory that sees the checkout's ``scenarios/`` and ``docs/``;
* ```python file=PATH -- an excerpt of PATH (a file the suite runs elsewhere): its code lines,
  comments and blank lines aside, must appear in PATH in that order, one after another;
* ```python norun -- shown only (say why next to it);
* ```console -- a transcript, checked line for line.

A block without an info string (or ```text) that starts like Python is an error: tag it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
import shlex
from pathlib import Path

import kconfiglib  # type: ignore[import-untyped]
import pytest

from mmusim.cli import main
from mmusim.kconfig import KCONFIG_DIR
from mmusim.scenario import bundled_scenarios

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").rglob("*.md"))
MARKDOWN = [ROOT / "README.md", *DOCS, *sorted((ROOT / "benchmarks").rglob("*.md"))]
_BLOCK = re.compile(r"^```([^\n`]*)\n(.*?)^```", re.S | re.M)


def _load_update_transcripts():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "update_transcripts", ROOT / "docs" / "update_transcripts.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


normalize = _load_update_transcripts().normalize


def _all_blocks(paths: list[Path] = MARKDOWN) -> list[tuple[str, str, str]]:
    """Every fenced block: ``(where, info string, body)``."""
    found = []
    for path in paths:
        for i, m in enumerate(_BLOCK.finditer(path.read_text())):
            found.append((f"{path.relative_to(ROOT)}#{i}", m.group(1).strip(), m.group(2)))
    return found


def _blocks(kind: str) -> list[tuple[str, str]]:
    return [(where, body) for where, info, body in _all_blocks(DOCS) if info == kind]


# -- python blocks -------------------------------------------------------------------------------


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory in which ``scenarios/...`` and ``docs/...`` are the checkout's."""
    for name in ("scenarios", "docs"):
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(("where", "code"), _blocks("python"))
def test_python_blocks_run(where: str, code: str, scratch: Path) -> None:
    exec(compile(code, where, "exec"), {})


def _code_lines(text: str) -> list[str]:
    """``text``'s lines without comments (whole-line or trailing) and blank lines."""
    lines = (re.sub(r"\s+#.*$", "", line).rstrip() for line in text.splitlines())
    return [line for line in lines if line and not line.lstrip().startswith("#")]


def _excerpts() -> list[tuple[str, str, str]]:
    out = []
    for where, info, body in _all_blocks():
        if m := re.fullmatch(r"python\s+file=(\S+)", info):
            out.append((where, m.group(1), body))
    return out


@pytest.mark.parametrize(("where", "source", "code"), _excerpts())
def test_python_excerpts_match_their_file(where: str, source: str, code: str) -> None:
    path = ROOT / source
    assert path.is_file(), f"{where}: file={source} does not exist"
    shown, real = _code_lines(code), _code_lines(path.read_text())
    starts = [i for i in range(len(real)) if real[i : i + len(shown)] == shown]
    assert shown and starts, f"{where}: the block is not an excerpt of {source} any more"


def test_excerpt_check_can_fail() -> None:
    real = _code_lines("import a\n\nx = 1  # one\ny = 2\n")
    assert real == ["import a", "x = 1", "y = 2"]
    assert _code_lines("x = 1\ny = 2  # the rest\n") == real[1:]
    assert _code_lines("x = 2\n") != real[1:2]


_PYTHON_START = re.compile(r"\A\s*(?:from \S+ import |import \w|def \w|class \w|@\w)")


def test_python_looking_blocks_say_what_to_do_with_them() -> None:
    """An untagged block of Python would silently go stale: it must run, be an excerpt, or say
    that it does not run."""
    allowed = re.compile(r"python(?:\s+file=\S+|\s+norun)?")
    bad = [
        where
        for where, info, body in _all_blocks()
        if _PYTHON_START.match(body) and not allowed.fullmatch(info)
    ]
    assert not bad, f"untagged Python (tag it python, python file=PATH or python norun): {bad}"


# -- transcripts ---------------------------------------------------------------------------------


def _transcripts() -> list[tuple[str, str, str]]:
    """Each ``$ mmusim ...`` line of a console block, with the output shown under it."""
    out = []
    for where, block in _blocks("console"):
        for chunk in re.split(r"^(?=\$ )", block, flags=re.M):
            if chunk.startswith("$ mmusim "):
                command, _, shown = chunk.partition("\n")
                out.append((where, command[2:], shown))
    return out


@pytest.mark.parametrize(("where", "command", "shown"), _transcripts())
def test_console_transcripts_match(
    where: str,
    command: str,
    shown: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(ROOT)  # the commands name files relative to the checkout
    argv = shlex.split(command)[1:]
    with contextlib.suppress(SystemExit):
        main(argv)
    out, err = capsys.readouterr()
    assert normalize(out + err).rstrip("\n") == shown.rstrip("\n"), f"{where}: {command}"


def test_docs_have_transcripts() -> None:
    assert _transcripts(), "docs/cli.md should show real mmusim output"


def test_the_config_transcript_is_checked() -> None:
    """docs/kconfig.md shows real `mmusim config` output, every SIM_ knob's line included."""
    shown = {cmd: out for where, cmd, out in _transcripts() if where.startswith("docs/kconfig.md")}
    config = [out for cmd, out in shown.items() if cmd.startswith("mmusim config ")]
    assert config, "docs/kconfig.md: no `$ mmusim config` transcript in a ```console block"
    for name in _sim_symbols():
        assert f"CONFIG_{name}" in config[0], f"docs/kconfig.md: the transcript misses {name}"


# -- docs/kconfig.md: the Simulator menu ---------------------------------------------------------


def _sim_symbols() -> dict[str, str]:
    """Every SIM_ symbol of the Kconfig tree, with its default (y or n) as Kconfig declares it."""
    kconf = kconfiglib.Kconfig(str(KCONFIG_DIR / "Kconfig"), warn_to_stderr=False)
    out = {}
    for sym in kconf.unique_defined_syms:
        if sym.name.startswith("SIM_"):
            assert sym.orig_type == kconfiglib.BOOL, sym.name
            defaults = [kconfiglib.expr_str(value) for value, _cond in sym.defaults]
            out[sym.name] = defaults[0] if defaults else "n"
    return out


def _simulator_table() -> dict[str, str]:
    text = (ROOT / "docs" / "kconfig.md").read_text()
    section = text.split("## The Simulator menu", 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"^\| `(SIM_\w+)` \| (\w+) \|", section, flags=re.M))


def test_simulator_table_lists_every_sim_knob_with_its_default() -> None:
    table, kconfig = _simulator_table(), _sim_symbols()
    assert len(kconfig) >= 12
    assert sorted(table) == sorted(kconfig), "docs/kconfig.md's Simulator table vs Kconfig.sim"
    assert table == kconfig, "docs/kconfig.md's Simulator table: defaults differ from Kconfig"


# -- `make demo` ---------------------------------------------------------------------------------


def _make_recipe(target: str) -> list[str]:
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return recipe


def test_make_demo_is_what_the_docs_say() -> None:
    """`make demo` runs `mmusim run` on every bundled scenario; the docs that describe it say so,
    and the verdict line they show counts every bundled scenario."""
    assert _make_recipe("demo") == ["$(BIN)/mmusim run"]
    for path in MARKDOWN:
        for paragraph in path.read_text().split("\n\n"):
            if "make demo" in paragraph and "```" not in paragraph:
                assert "mmusim run" in paragraph, (
                    f"{path.name}: says what `make demo` is: {paragraph}"
                )
    shown = [out for _, cmd, out in _transcripts() if cmd == "mmusim run --no-time"]
    assert shown, "docs/validate-a-policy.md shows the output of `mmusim run` (make demo)"
    assert f"\n{len(bundled_scenarios())} passed, 0 failed" in shown[0]


# -- self-contained ------------------------------------------------------------------------------

#: What points outside the project: the team's notes, which a user's copy does not have.
OUTSIDE = re.compile(
    r"shared/|shared folder|\.\./shared|x86-paging\.md|zephyr-mapped-stacks\.md|exploration\.md"
    r"|peers\.md|stack-strategies\.md|\breference(?:'s)?\s+(?:§|section\s+\d)|§\d+ item \d"
)
SELF_CONTAINED = ["README.md", "docs", "mmusim", "scenarios", "benchmarks", "tests"]


def _project_text_files() -> list[Path]:
    out = []
    for name in SELF_CONTAINED:
        path = ROOT / name
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for f in files:
            if f.suffix in {".img", ".pyc", ".svg"} or "__pycache__" in f.parts:
                continue
            if f.resolve() != Path(__file__).resolve():  # this file names the patterns
                out.append(f)
    return out


def test_nothing_points_outside_the_project() -> None:
    hits = []
    for path in _project_text_files():
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if m := OUTSIDE.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{n}: {m.group(0)!r}")
    assert not hits, "points to notes outside the project:\n" + "\n".join(hits)


def test_outside_pattern_can_fail() -> None:
    for text in (
        "see ../shared/seeds/",
        "reference x86-paging.md §4.5",
        "(reference §7 item 12)",
        "(reference section 6.7)",
        "the kernel's §7 item 5",
        "the project's shared folder",
    ):
        assert OUTSIDE.search(text), text
    for text in ("Intel SDM Vol. 3A §4.10.4", "docs/design.md, Key decisions", "shared state"):
        assert not OUTSIDE.search(text), text


_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def _relative_links() -> list[tuple[str, str]]:
    out = []
    for path in MARKDOWN:
        text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)
        for m in _LINK.finditer(text):
            target = m.group(1) or m.group(2)
            if not re.match(r"[a-z][a-z0-9+.-]*:|#", target):
                out.append((str(path.relative_to(ROOT)), target))
    return out


def test_docs_have_relative_links() -> None:
    assert len(_relative_links()) > 10


@pytest.mark.parametrize(("where", "target"), _relative_links())
def test_relative_links_lead_to_project_files(where: str, target: str) -> None:
    path = ((ROOT / where).parent / target.split("#", 1)[0]).resolve()
    assert path.exists(), f"{where}: link to {target}, which does not exist"
    assert path.is_relative_to(ROOT), f"{where}: link to {target}, outside the project"
