"""What ``mmusim view`` shows: a run recorded state by state, as data for the HTML stepper.

``record_scenario(path)`` runs a scenario with ``mmusim run``'s schedule (round robin, or the
scenario's seed); ``record_trace(path)`` replays an explorer trace (``mmusim explore --trace``)
step by step, checking each step's label as ``mmusim replay`` does, then -- for an invariant
violation that names a CPU -- lets that CPU run on alone for a few steps, as the text report does,
so the consequence is on screen. Both return a ``Recording``: one entry per step with

* what the step was (CPU, thread, routine and label, a preemption, the phase of the run);
* the state after it: each CPU (``_current``, whose code and whose stack it runs, the point it
  resumes from, SP, CPL, IPIs, locks held) and its TLB, every thread's state and stack, the three
  spinlocks and the deferred-cleanup slot, the invariants that do not hold, the memory map as
  ``mmusim map --svg`` draws it, and the console;
* its events: an access that only a stale TLB entry still translates (the PTE is gone) and a page
  fault -- each with the page walk of that address on the page tables as they were just before the
  step, as ``mmusim walk`` prints it --, a kernel assertion, the first invariant violation.

The recording reads the kernel only; the walks run on a copy of the page-table frames, so no A/D
bit, TLB entry or counter of the run changes. The same input gives the same recording, byte for
byte (no clock, no addresses of Python objects). ``mmusim.render.view_html`` turns it into the page.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs

from mmusim.explore.model import Action, Model, StepInfo
from mmusim.explore.search import assert_message
from mmusim.explore.trace import load_trace, replay_steps
from mmusim.hw import FRAME_SIZE, Access, ControlState, PfErrorCode, PhysMem, translate
from mmusim.kernel import REASONS, Kernel, KernelAssert, check_all, thread_state_name
from mmusim.render.memmap import memory_map, render_svg
from mmusim.render.trace import consequence_cpu, preempts, stale_touches
from mmusim.render.walk import render_walk
from mmusim.scenario import load_scenario, run_scenario
from mmusim.scenario.document import display_path

__all__ = ["DEFAULT_MAX_STEPS", "Recording", "record_scenario", "record_trace"]

DEFAULT_MAX_STEPS = 2_000
"""``record_scenario`` records at most this many steps (``mmusim view --max-steps``): every step
keeps a state, and a page of more steps is slow to open."""

CONSEQUENCE_STEPS = 6  # as mmusim.render.trace.report


@attrs.define
class Recording:
    """A recorded run: ``meta`` (title, source, board, CPUs, verdict ...), ``steps`` (step 0 is
    the state before the first step) and ``pool`` (the distinct panel values the steps refer to
    by index: a TLB or a memory map that does not change is stored once)."""

    meta: dict[str, Any]
    steps: list[dict[str, Any]] = attrs.field(factory=list)
    pool: list[Any] = attrs.field(factory=list)
    _index: dict[str, int] = attrs.field(factory=dict, repr=False)

    def intern(self, value: Any) -> int:
        key = json.dumps(value, sort_keys=True)
        at = self._index.get(key)
        if at is None:
            at = self._index[key] = len(self.pool)
            self.pool.append(value)
        return at

    def to_json(self) -> dict[str, Any]:
        return {"meta": self.meta, "steps": self.steps, "pool": self.pool}


# -- the state of a kernel, as panels ------------------------------------------------------------


def _hex(v: int | None) -> str:
    return "NULL" if v is None else f"{v:#x}"


def cpu_rows(k: Kernel) -> list[dict[str, str]]:
    """Each CPU: who is ``_current``, whose code and whose stack it runs, where it resumes."""
    rows = []
    for c in k.cpus:
        if c.irq is not None:
            runs, point = "ISR", c.irq_pending
        else:
            runs, point = c.ctx.name, c.ctx.pending
        nxt = f"{point.routine}: {point.label}" if hasattr(point, "routine") else "-"
        rows.append({
            "cpu": str(c.id),
            "_current": c.current.name,
            "executes": runs,
            "on the stack of": c.running_on.name if c.running_on else "its interrupt stack",
            "resumes at": nxt,
            "SP": _hex(c.hw.sp),
            "CPL": str(c.hw.cpl),
            "IPIs": ", ".join(c.pending_ipis) or "-",
            "locks held": ", ".join(lock.name for lock in c.held) or "-",
        })  # fmt: skip
    return rows


def tlb_rows(k: Kernel) -> list[list[dict[str, str]]]:
    """Each CPU's TLB entries by linear address, each stale one with why (``stale_tlb_entries``)."""
    out = []
    for c in k.cpus:
        stale = {e.page: why for e, why in k.stale_tlb_entries(c)}
        rows = []
        for e in c.hw.tlb.entries():
            rows.append({
                "page": _hex(e.page), "frame": _hex(e.frame), "size": f"{e.page_size // 1024}K",
                "flags": e.flags, "stale": stale.get(e.page, ""),
            })  # fmt: skip
        out.append(rows)
    return out


def thread_rows(k: Kernel) -> list[dict[str, str]]:
    """Every thread: its state (``k_thread_state_str``), stack buffer and ``mapped.addr``."""
    rows = []
    for t in k.threads.values():
        info = t.stack_info
        rows.append({
            "thread": t.name,
            "state": thread_state_name(k, t) or "-",
            "stack_info": f"{info.start:#x}+{info.size:#x}" if info.size else "-",
            "mapped.addr": _hex(info.mapped.addr),
            "exit": t.exit_reason or "-",
        })  # fmt: skip
    return rows


def kernel_rows(k: Kernel) -> dict[str, str]:
    """The spinlocks' holders and the deferred-cleanup slot (``kernel/thread.c``)."""
    rows = {
        lock.name: "-" if lock.holder is None else f"CPU {lock.holder}"
        for lock in (k.sched_lock, k.cleanup_lock, k.mm_lock)
    }
    slot = k.cleanup
    rows["thread_to_cleanup"] = slot.thread.name if slot.thread else "NULL"
    rows["stash (its mapping)"] = _hex(slot.stack_addr)
    rows["clock"] = str(k.clock)
    rows["halted"] = k.halted or "-"
    return rows


# -- the page walk of an event, on a copy of the page tables ---------------------------------------


def _table_copy(k: Kernel) -> PhysMem:
    """A copy of every page-table frame of ``k`` (nothing else): enough for a walk that changes
    nothing in the run."""
    copy = PhysMem(k.mem.limit)
    for pt in k.all_ptables():
        for pa in pt.table_frames:
            copy.write(pa, k.mem.read(pa, FRAME_SIZE))
    return copy


def _walk_text(mem: PhysMem, ctl: ControlState, va: int, access: Access, cpl: int) -> str:
    res = translate(mem, ctl, va, access, cpl)
    return render_walk(mem, ctl, va, access, cpl, res)


def _access_of(code: int) -> tuple[Access, int]:
    """The access and CPL a #PF error code describes (I/D, W/R and U/S bits)."""
    access = (
        Access.EXEC
        if code & PfErrorCode.ID
        else Access.WRITE
        if code & PfErrorCode.W
        else Access.READ
    )
    return access, 3 if code & PfErrorCode.US else 0


# -- recording -------------------------------------------------------------------------------------


class _Recorder:
    """Turns ``before(k, action, info)`` / ``after(k)`` calls into a ``Recording``."""

    def __init__(self, rec: Recording, k: Kernel, phase: str, *, preemptions: bool) -> None:
        self.rec = rec
        self.phase = phase
        self.preemptions = preemptions  # mark them (a trace's); round robin switches every step
        self.seen_violation = False
        self.last_cpu: int | None = None
        self._pending: dict[str, Any] | None = None
        self._faults = len(k.faults)
        self._tables: PhysMem | None = None
        self._ctls: list[ControlState] = []
        self._rows: list[Any] | None = None
        self._map_at = 0
        self.add_state(k, {"i": 0, "cpu": None, "kind": "start", "thread": "-",
                           "routine": "", "label": "", "phase": "start", "events": []})  # fmt: skip

    def add_state(self, k: Kernel, step: dict[str, Any]) -> None:
        rec = self.rec
        bad = check_all(k)
        if bad and not self.seen_violation:
            self.seen_violation = True
            step["events"].append({"kind": "violation", "text": "invariant violated: " + bad[0]})
        step["s"] = {
            "cpus": rec.intern(cpu_rows(k)),
            "tlbs": rec.intern(tlb_rows(k)),
            "threads": rec.intern(thread_rows(k)),
            "kernel": rec.intern(kernel_rows(k)),
            "invariants": rec.intern(bad),
            "map": self._map(k),
        }
        log = rec.meta["log"]
        log.extend(k.log[len(log) :])
        step["log"] = len(log)
        rec.steps.append(step)

    def _map(self, k: Kernel) -> int:
        """The memory map's SVG (its pool index), drawn only when the rows changed."""
        rows = memory_map(k)
        if rows != self._rows:
            self._rows = rows
            self._map_at = self.rec.intern(render_svg(rows, "kernel address space"))
        return self._map_at

    def before(self, k: Kernel, a: Action, info: StepInfo) -> None:
        """Called just before action ``a``: note the step, and what it is about to touch."""
        moved = self.preemptions and preempts(k, self.last_cpu, a[0])
        if a[0] >= 0:
            self.last_cpu = a[0]
        step: dict[str, Any] = {
            "i": len(self.rec.steps), "cpu": info.cpu, "kind": info.kind, "thread": info.thread,
            "routine": info.routine, "label": info.label, "phase": self.phase,
            "preemption": moved, "events": [],
        }  # fmt: skip
        self._tables = _table_copy(k)
        self._ctls = [c.hw.ctl for c in k.cpus]
        if a[1] == "step":
            step["events"] += self._stale_accesses(k, a[0])
        self._pending = step

    def _stale_accesses(self, k: Kernel, cpu: int) -> list[dict[str, Any]]:
        """The pages the step will read or write that only a stale TLB entry of its CPU still
        translates (``stale_touches``, which the text report marks too), with their walks."""
        c = k.cpus[cpu]
        out = []
        for page, e, why, write in stale_touches(k, cpu):
            access = Access.WRITE if write else Access.READ
            assert self._tables is not None
            out.append({
                "kind": "stale",
                "cpu": cpu,
                "address": _hex(page),
                "text": f"CPU {cpu} {'writes' if write else 'reads'} page {page:#x} through a "
                f"stale TLB entry ({why}): {e.describe()}. The page walk below is what the page "
                "tables say now, but the CPU does not walk: its TLB still holds the entry, so "
                f"the access goes to frame {e.frame:#x}.",
                "walk": _walk_text(self._tables, c.hw.ctl, page, access, c.hw.cpl),
            })  # fmt: skip
        return out

    def after(self, k: Kernel, error: KernelAssert | None = None) -> None:
        """Called after the action (``error``: the kernel asserted in it)."""
        step = self._pending
        if step is None:  # Kernel.run itself asserted (no quiescence, a deadlock): the last step's
            if error is not None:
                self.rec.steps[-1]["events"].append(
                    {"kind": "assert", "text": assert_message(error)}
                )
            return
        self._pending = None
        for f in k.faults[self._faults :]:
            step["events"].append(self._fault_event(f))
        self._faults = len(k.faults)
        if error is not None:
            step["events"].append({"kind": "assert", "text": assert_message(error)})
        self.add_state(k, step)

    def _fault_event(self, f: dict[str, Any]) -> dict[str, Any]:
        cr2, code, cpu = f["cr2"], f["error_code"], f["cpu"]
        text = (f"CPU {cpu}: fatal exception, vector {f['vector']}, in thread {f['faulting']}: "
                f"reason {f['reason']} ({REASONS[f['reason']]})")  # fmt: skip
        event: dict[str, Any] = {"kind": "fault", "cpu": cpu, "text": text, "walk": ""}
        if cr2 is not None and self._tables is not None and cpu < len(self._ctls):
            access, cpl = _access_of(code)
            event["address"] = _hex(cr2)
            event["text"] += f"; page fault at {cr2:#x}, error code {code:#x}"
            event["walk"] = _walk_text(self._tables, self._ctls[cpu], cr2, access, cpl)
        return event

    def tick(self, k: Kernel, before: int) -> None:
        """A timer tick the run took (the clock jumped from ``before`` to wake a sleeper)."""
        step = {"i": len(self.rec.steps), "cpu": -1, "kind": "tick", "thread": "-",
                "routine": "timer", "label": f"clock {before} -> {k.clock}",
                "phase": self.phase, "preemption": False, "events": []}  # fmt: skip
        self.add_state(k, step)


def _meta(title: str, source: str, path: str, board: str, ncpus: int) -> dict[str, Any]:
    return {"title": title, "source": source, "path": path, "board": board, "ncpus": ncpus,
            "verdict": "", "notes": [], "log": []}  # fmt: skip


def record_scenario(path: str | Path, *, max_steps: int = DEFAULT_MAX_STEPS) -> Recording:
    """Run scenario ``path`` as ``mmusim run`` does (its schedule and step limit) and record up
    to ``max_steps`` steps. The verdict is ``mmusim run``'s. Raises ``ScenarioError`` for a bad
    file, ``KernelAssert`` if the kernel does not boot."""
    scn = load_scenario(path)
    verdict = run_scenario(scn)
    rec = Recording(_meta(scn.name, "scenario", display_path(scn.path), scn.board, scn.ncpus))
    line = f"{verdict.verdict.upper()}  {verdict.name}"
    if verdict.failures:
        line += ": " + "; ".join(verdict.failures)
    rec.meta["verdict"] = line
    k = scn.boot()
    r = _Recorder(rec, k, "run", preemptions=False)  # step 0: the booted kernel
    k.check = r.after  # then after every step, as boot(check) would
    clock = [k.clock]

    def before(a: Action) -> None:
        if k.clock != clock[0]:  # Kernel.run woke sleepers by a clock jump
            r.tick(k, clock[0])
        clock[0] = k.clock
        r.before(k, a, Model.info(k, a))

    try:
        k.run(seed=scn.seed, max_steps=scn.max_steps, steps=max_steps, before=before)
    except KernelAssert as e:
        r.after(k, e)
    if k.actions() or k.sleepers:
        rec.meta["notes"].append(
            f"the view stops after {max_steps:,} steps (--max-steps); the run goes on"
        )
    return rec


def record_trace(
    path: str | Path,
    scenario: str | Path | None = None,
    *,
    loaded: tuple[dict[str, Any], list[StepInfo]] | None = None,
) -> Recording:
    """Replay trace ``path`` on ``scenario`` (default: the file the trace names) with ``mmusim
    replay``'s check -- each step's label must be the kernel's -- and record every step, then the
    consequence steps. ``loaded``: the trace as ``load_trace`` read it already. Raises
    ``TraceError`` for a bad trace, ``ReplayMismatch`` for a step that no longer fits."""
    data, steps = load_trace(path) if loaded is None else loaded
    if scenario is None:
        scenario = data["scenario"]
    model = Model(scenario, data.get("config", []), origin=f"{path}: config",
                  ignore=data.get("ignore", []))  # fmt: skip
    scn = model.scenario
    v = data.get("violation") or {}
    rec = Recording(_meta(scn.name, "trace", display_path(Path(path)), scn.board, model.ncpus))
    k = model.reset()
    what = "the exploration root" if model.root_assert is None else "the boot"
    rec.meta["notes"].append(f"step 0 is {what} ({len(model.prefix)} deterministic steps after "
                             "boot)")  # fmt: skip
    if model.extra_config:
        rec.meta["notes"].append("config: " + " ".join(model.extra_config))
    r = _Recorder(rec, k, "trace", preemptions=True)
    error: KernelAssert | None = None
    try:
        replay_steps(model, steps, k=k, before=r.before, after=r.after)
    except KernelAssert as e:
        error = e
        r.after(k, e)
    messages = model.violations(k) if error is None else [assert_message(error)]
    kind = v.get("kind", "")
    rec.meta["verdict"] = (f"VIOLATION  {kind}: {messages[0]}" if kind and messages else
                           "the replayed trace ends in no violation")  # fmt: skip
    if rec.steps[-1]["i"]:
        rec.steps[-1]["events"].append({"kind": "end", "text": f"== {kind or 'end'} here =="})
    cpu = consequence_cpu(k, kind, messages[0] if messages else "")
    if cpu is not None and error is None:
        _run_alone(model, k, r, cpu)
    return rec


def _run_alone(model: Model, k: Kernel, r: _Recorder, cpu: int) -> None:
    """The consequence: CPU ``cpu`` runs on alone for a few steps."""
    r.phase = "consequence"
    for _ in range(CONSEQUENCE_STEPS):
        a = (cpu, "step")
        if a not in model.actions(k):
            break
        r.before(k, a, model.info(k, a))
        try:
            model.step(k, a)
        except KernelAssert as e:
            r.after(k, e)
            break
        r.after(k)
