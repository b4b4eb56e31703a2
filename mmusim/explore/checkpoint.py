"""Checkpoints of ``explore``: a long search saved to a file, and resumed from it.

``save(path, model, state, bounds)`` writes the ``SearchState`` of a depth-first search -- its
visited states, its stack, its counters -- as JSON, with what it was searching: the scenario (path
and sha256), the extra Kconfig lines, the ignored invariants, the bounds, and a hash of the code
that defines states and steps (``mmusim/{hw,kernel,runtime,scenario,explore}``). ``load(path,
model, bounds)`` reads it back and refuses, in one line that names the file, a checkpoint of
another scenario, configuration, bound or code version: the fingerprints it holds mean nothing
to another model. A resumed search visits exactly the states and takes exactly the transitions the
uninterrupted one would (only its count of executions -- re-runs from the boot -- differs).

JSON, not pickle: a checkpoint is an input like any other, and reading one must not run code.
The file is written to a temporary name and renamed, so a machine that stops while it is being
written leaves the previous checkpoint whole. Like TLC's checkpoints, it is meant to survive an
interrupted machine: ``mmusim explore --checkpoint FILE`` saves one every minute (longer when a
save takes more than 3 s), on Ctrl-C and on SIGTERM. A checkpoint of any size is read back;
a file of more than ``MAX_CHECKPOINT_BYTES`` that does not begin as one is refused unread.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import attrs

from mmusim._text import TooLarge, read_text
from mmusim.explore.model import Model, StepInfo
from mmusim.explore.search import Frame, SearchState, Stats, visited_entry
from mmusim.explore.trace import code_fingerprint
from mmusim.kernel import Footprint

__all__ = ["FORMAT", "CheckpointError", "load", "save", "search_code_fingerprint"]

FORMAT = "mmusim-checkpoint/1"
_CODE_DIRS = ("hw", "kernel", "runtime", "scenario", "explore")
# What ``--resume`` reads of a file that does not begin as ``save`` begins a checkpoint (``HEAD``):
# a huge file of something else is refused unread. A real checkpoint is read whole, whatever its
# size: about 100 bytes a visited state (96 for race_self_abort_3x3), so a search of more than
# ten million states writes more than this.
MAX_CHECKPOINT_BYTES = 1 << 30
HEAD = ('{"format":' + json.dumps(FORMAT)).encode()


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or belongs to another search; the message is one line
    and names the file."""


def search_code_fingerprint() -> str:
    """A hash of the code that defines the explored states and steps."""
    return code_fingerprint(_CODE_DIRS)


def _identity(model: Model, bounds: dict[str, int | None]) -> dict[str, Any]:
    scn = Path(model.scenario.path).resolve()
    return {
        "scenario": str(scn),
        "scenario_sha256": hashlib.sha256(scn.read_bytes()).hexdigest(),
        "config": list(model.extra_config),
        "ignore": list(model.ignore),
        "bounds": dict(bounds),
        "code": search_code_fingerprint(),
    }


# -- encoding ------------------------------------------------------------------------------------


def _fp_out(f: Footprint | None) -> Any:
    return (
        None
        if f is None
        else [sorted(map(list, f[0]), key=repr), sorted(map(list, f[1]), key=repr)]
    )


def _fp_in(v: Any) -> Footprint | None:
    if v is None:
        return None
    reads, writes = v
    return (frozenset(tuple(x) for x in reads), frozenset(tuple(x) for x in writes))


def _info_out(s: StepInfo) -> list[Any]:
    return [s.cpu, s.kind, s.thread, s.routine, s.label]


def _info_in(v: Any) -> StepInfo:
    cpu, kind, thread, routine, label = v
    return StepInfo(int(cpu), str(kind), str(thread), str(routine), str(label))


def _frame_out(fr: Frame, step: tuple[Any, StepInfo] | None) -> dict[str, Any]:
    """One frame; its path is the one of the frame below it plus ``step`` (None for the root)."""
    return {
        "step": None if step is None else [list(step[0]), _info_out(step[1])],
        "sleep": [[list(key), _fp_out(f)] for key, f in fr.sleep.items()],
        "pre": fr.pre,
        "last": fr.last,
        "acts": [list(a) for a in fr.acts],
        "options": [[list(a), _info_out(i), _fp_out(f)] for a, i, f in fr.options],
        "next": fr.next,
        "pending": None if fr.pending is None else [list(fr.pending[0]), _fp_out(fr.pending[1])],
    }


def _stack_out(stack: list[Frame]) -> list[dict[str, Any]]:
    """A stack, each frame by its step from the one below; the bottom one, which need not be the
    root (work a worker was given), by its whole path."""
    out = []
    for i, fr in enumerate(stack):
        if i == 0:
            v = _frame_out(fr, None)
            if fr.path:
                v["path"] = [list(a) for a in fr.path]
                v["infos"] = [_info_out(x) for x in fr.infos]
        else:
            v = _frame_out(fr, (fr.path[-1], fr.infos[-1]))
        out.append(v)
    return out


def _stack_in(vs: list[dict[str, Any]]) -> list[Frame]:
    stack: list[Frame] = []
    below: Frame | None = None
    for v in vs:
        below = _frame_in(v, below)
        stack.append(below)
    return stack


def _frame_in(v: dict[str, Any], below: Frame | None) -> Frame:
    path: tuple[Any, ...] = () if below is None else below.path
    infos: tuple[StepInfo, ...] = () if below is None else below.infos
    if below is None and "path" in v:  # the bottom of a stack that does not start at the root
        path = tuple((int(a[0]), str(a[1])) for a in v["path"])
        infos = tuple(_info_in(x) for x in v["infos"])
        if len(path) != len(infos):
            raise ValueError("a frame's path and infos differ in length")
    if v["step"] is not None:
        a, info = v["step"]
        path += ((int(a[0]), str(a[1])),)
        infos += (_info_in(info),)
    pending = v["pending"]
    return Frame(
        path=path,
        infos=infos,
        sleep={tuple(key): _fp_in(f) for key, f in v["sleep"]},
        pre=int(v["pre"]),
        last=None if v["last"] is None else int(v["last"]),
        acts=[(int(a[0]), str(a[1])) for a in v["acts"]],
        options=[((int(a[0]), str(a[1])), _info_in(i), _fp_in(f)) for a, i, f in v["options"]],
        next=int(v["next"]),
        pending=None if pending is None else (tuple(pending[0]), _fp_in(pending[1])),
    )


def _limit(path: str | Path) -> int:
    """How many bytes ``load`` reads of ``path``: ``MAX_CHECKPOINT_BYTES``, or the whole file when
    it is a regular file larger than that which begins as a checkpoint (``HEAD``). Only a regular
    file is looked at first: a pipe read twice would lose what the first read took."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size <= MAX_CHECKPOINT_BYTES:
            return MAX_CHECKPOINT_BYTES
        with open(path, "rb") as f:
            head = f.read(len(HEAD))
    except OSError:
        return MAX_CHECKPOINT_BYTES  # read_text reports it
    return st.st_size + (1 << 20) if head == HEAD else MAX_CHECKPOINT_BYTES


def save(path: str | Path, model: Model, state: SearchState, bounds: dict[str, int | None]) -> None:
    """Write ``state`` (consistent: between two iterations of ``explore``) to ``path``. An
    ``OSError`` (a full disk) leaves the file as it was."""
    if state.found:
        raise ValueError("checkpoint.save: the search has ended in a violation")
    data = {
        "format": FORMAT,
        **_identity(model, bounds),
        "stats": attrs.asdict(state.stats),
        "complete": state.complete,
        "started": state.started,
        "visited": [
            [fp.hex(), [list(k) for k in sorted(s)], pre] for fp, (s, pre) in state.visited.items()
        ],  # fmt: skip
        "stack": _stack_out(state.stack),
        "more": [_stack_out(stack) for stack in state.more],  # a shared search's other work
    }
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(data, separators=(",", ":")) + "\n")
        os.replace(tmp, path)
    except OSError:  # a full disk, say: the previous checkpoint stays whole, no half file beside it
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def load(path: str | Path, model: Model, bounds: dict[str, int | None]) -> SearchState:
    """Read a checkpoint of this very search (``model`` with ``bounds``); ``CheckpointError``
    names what does not fit."""
    try:
        text = read_text(path, _limit(path))
    except TooLarge as e:
        raise CheckpointError(f"{path}: cannot read: {e}") from None
    except MemoryError:
        raise CheckpointError(f"{path}: cannot read: too large for this machine's memory") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise CheckpointError(f"{path}: not a checkpoint: not UTF-8 text") from None
    except ValueError as e:  # a NUL byte: not text
        raise CheckpointError(f"{path}: not a checkpoint: {e}") from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise CheckpointError(f"{path}: not a checkpoint: not JSON") from None
    except MemoryError:
        raise CheckpointError(f"{path}: cannot read: too large for this machine's memory") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a checkpoint of mmusim explore ({FORMAT!r} expected)")
    want = _identity(model, bounds)
    names = {
        "scenario": "another scenario file",
        "scenario_sha256": "another version of the scenario file",
        "config": "other --config or --mutant lines",
        "ignore": "other --ignore invariants",
        "bounds": "other bounds (--max-preemptions, --max-states)",
        "code": "another version of mmusim's kernel or explorer code",
    }
    if data.get("scenario_sha256") == want["scenario_sha256"]:
        del names["scenario"]  # the same file moved (another checkout, another machine): fine
    for key, what in names.items():
        if data.get(key) != want[key]:
            raise CheckpointError(
                f"{path}: a checkpoint of {what} ({key}: {data.get(key)!r}, this search: "
                f"{want[key]!r}); start a new search without --resume"
            )
    try:
        state = SearchState(
            visited={
                bytes.fromhex(fp): visited_entry(frozenset(tuple(k) for k in keys), int(pre))
                for fp, keys, pre in data["visited"]
            },  # fmt: skip
            stats=Stats(**data["stats"]),
            complete=bool(data["complete"]),
            started=bool(data["started"]),
        )
        state.stack = _stack_in(data["stack"])
        state.more = [_stack_in(vs) for vs in data.get("more", [])]
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        raise CheckpointError(f"{path}: a damaged checkpoint: {type(e).__name__}: {e}") from None
    return state
