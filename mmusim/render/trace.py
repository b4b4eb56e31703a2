"""The explorer's text report: a pass, or a violation step by step with what changed.

The report shows per step only the fields that changed (lock holders, the cleanup slot, thread
states, mappings, a CPU's stack pointer and pending IPIs, present stack pages, TLB entries), marks
preemptions, and after the violating step lets the offending CPU run alone for a few steps so the
concrete consequence is visible -- a page fault with its error-code bits named, or an access that
only a stale TLB entry still translates. It replays the violation's steps on the model
(``mmusim.explore``) to read those states; the search itself reports only data.
"""

from __future__ import annotations

from mmusim.explore.model import Model
from mmusim.explore.search import Result, Violation
from mmusim.hw import TlbEntry, Trap, error_code_names
from mmusim.kernel import PAGE, Kernel, KernelAssert, thread_state_name

__all__ = ["consequence_cpu", "preempts", "report", "snapshot", "stale_touches"]


def preempts(k: Kernel, last_cpu: int | None, cpu: int) -> bool:
    """A step of ``cpu`` in state ``k`` preempts ``last_cpu``: the CPU of the step before could
    have gone on (a timer tick, CPU -1, preempts nobody)."""
    moved = last_cpu is not None and cpu >= 0 and cpu != last_cpu
    return moved and any(x[0] == last_cpu for x in Model.actions(k))


def stale_touches(k: Kernel, cpu: int) -> list[tuple[int, TlbEntry, str, bool]]:
    """The pages that CPU ``cpu``'s next step reads or writes (its declared footprint,
    ``Model.footprint``) which only a stale TLB entry of that CPU still translates, by page:
    (page, the entry, why it is stale as ``Kernel.stale_tlb_entries`` says, written?). A step
    with no declared footprint touches nothing here."""
    fp = Model.footprint(k, (cpu, "step"))
    if fp is None:
        return []
    stale = k.stale_tlb_entries(k.cpus[cpu])
    pages = {r[1] for r in fp[0] | fp[1] if r[0] == "mem" and isinstance(r[1], int)}
    return [
        (page, e, why, ("mem", page) in fp[1])
        for page in sorted(pages)
        for e, why in stale
        if e.page <= page < e.page + e.page_size
    ]


def consequence_cpu(k: Kernel, kind: str, message: str) -> int | None:
    """The CPU whose consequence a report shows after a violation: the one an invariant's message
    names (``CPU 1 runs b on its stack ...``), if the system still runs."""
    if kind != "invariant" or k.halted is not None:
        return None
    return next((c.id for c in k.cpus if f"CPU {c.id} " in message), None)


def snapshot(k: Kernel) -> dict[str, str]:
    """The fields a trace shows, as text, for diffing consecutive states."""
    snap: dict[str, str] = {}
    for lock in (k.sched_lock, k.cleanup_lock, k.mm_lock):
        snap[lock.name] = "-" if lock.holder is None else f"cpu{lock.holder}"
    slot = k.cleanup
    snap["thread_to_cleanup"] = slot.thread.name if slot.thread else "NULL"
    snap["stash"] = f"{slot.stack_addr:#x}" if slot.stack_addr is not None else "NULL"
    for c in k.cpus:
        snap[f"cpu{c.id}._current"] = c.current.name
        snap[f"cpu{c.id}.runs_on_stack_of"] = c.running_on.name if c.running_on else "-"
        snap[f"cpu{c.id}.ipis"] = ",".join(c.pending_ipis) or "-"
        snap[f"cpu{c.id}.tlb"] = str(len(c.hw.tlb))
    for t in k.threads.values():
        if t.is_idle or not t.generation:
            continue
        snap[f"{t.name}.state"] = thread_state_name(k, t)
        addr = t.stack_info.mapped.addr
        snap[f"{t.name}.mapped.addr"] = f"{addr:#x}" if addr is not None else "NULL"
    for r in sorted(k.regions.values(), key=lambda r: r.addr):
        if r.kind == "stack":
            present = sum(k.pt.lookup(r.addr + off) is not None for off in range(0, r.size, PAGE))
            snap[f"stack of {r.owner} @{r.addr:#x}"] = f"{present}/{r.size // PAGE} pages present"
    return snap


def _diff(before: dict[str, str], after: dict[str, str]) -> str:
    out = []
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key, "(none)"), after.get(key, "(none)")
        if a != b:
            out.append(f"{key}: {a} -> {b}")
    return "; ".join(out)


def report(
    model: Model,
    result: Result,
    *,
    consequence_steps: int = 6,
    show_search: bool = True,
    show_time: bool = True,
    minimal: bool = True,
) -> str:
    """The human report of a result (a pass or a violation). ``minimal``: the violation is the
    minimal one (of ``explore.minimal``), not one random run's (PCT, the random walk)."""
    st = result.stats
    scn = model.scenario
    lines = []
    v = result.violation
    search = (
        f"{st.states:,} states, {st.transitions:,} transitions, {st.executions:,} executions, "
        f"max depth {st.max_depth}"
    )
    if show_time:
        search += (
            f", {st.seconds:.2f} s ({st.states_per_second:,.0f} states/s, "
            f"{st.transitions_per_second:,.0f} transitions/s)"
        )
    cfg = f"board {scn.board}, {model.ncpus} CPU{'' if model.ncpus == 1 else 's'}" + (
        f", {' '.join(model.extra_config)}" if model.extra_config else ""
    )
    if v is None:
        n = result.bound
        bound = "" if n is None else f" within {n} preemption{'' if n == 1 else 's'}"
        lines.append(f"PASS  {scn.name}: no invariant violated, no deadlock{bound}")
        lines.append(f"config   {cfg}")
        lines.append(f"search   {search}")
        lines.append("verdict  " + ("complete" if result.complete else "bounded (not complete)"))
        return "\n".join(lines) + "\n"
    lines.append(f"VIOLATION  {v.kind}: {v.messages[0]}")
    lines.extend(f"           {m}" for m in v.messages[1:])
    lines.append(f"scenario {scn.path}  ({scn.name})")
    at_root = model.root_assert is None
    if at_root:
        lines.append(f"config   {cfg}; the trace starts at the exploration root "
                     f"({len(model.prefix)} deterministic steps after boot)")  # fmt: skip
    else:
        what = "asserts" if v.kind == "kernel assert" else "reaches the step bound"
        lines.append(f"config   {cfg}; the default schedule {what} before the exploration root: "
                     "the trace is its run from boot (not minimized)")  # fmt: skip
    if show_search:
        lines.append(f"search   {search}")
    lines.append(f"{'minimal' if at_root and minimal else 'trace':<7}  {v.preemptions} "
                 f"preemption{'s' if v.preemptions != 1 else ''}, {len(v.steps)} steps")  # fmt: skip
    lines.append("")
    lines.append(f"{'#':>4}  cpu  {'thread':<10} step")
    k = model.reset()
    log_start = len(k.log)
    before = snapshot(k)
    last_cpu: int | None = None
    for i, s in enumerate(v.steps, 1):
        a = (s.cpu, s.kind)
        if preempts(k, last_cpu, s.cpu):
            lines.append(f"{'':>4}  -- preemption: CPU {last_cpu} -> CPU {s.cpu} --")
        try:
            model.step(k, a)
        except KernelAssert as e:
            lines.append(f"{i:>4}  {s.cpu:>3}  {s.thread:<10} {s.routine}: {s.label}")
            lines.append(f"{'':>4}       kernel assert: {e}")
            break
        after = snapshot(k)
        lines.append(f"{i:>4}  {s.cpu:>3}  {s.thread:<10} {s.routine}: {s.label}")
        changed = _diff(before, after)
        if changed:
            lines.append(f"{'':>4}       {'':<10} {changed}")
        before = after
        if s.cpu >= 0:
            last_cpu = s.cpu
    lines.append(f"{'':>4}  == {v.kind} here ==")
    lines += _consequence(model, k, v, consequence_steps)
    if k.log[log_start:]:
        lines.append(f"{'':>4}  the console during the trace (Zephyr's log):")
        lines += [f"{'':>4}    {line}" for line in k.log[log_start:]]
    return "\n".join(lines) + "\n"


def _consequence(model: Model, k: Kernel, v: Violation, n: int) -> list[str]:
    """Let the CPU named in the violation run alone for a few steps, to show what follows."""
    cpu = consequence_cpu(k, v.kind, v.messages[0])
    if cpu is None:
        return []
    out = [f"{'':>4}  consequence: CPU {cpu} runs on alone"]
    for _ in range(n):
        if (cpu, "step") not in model.actions(k):
            break
        s = model.info(k, (cpu, "step"))
        stale = any(write and why == "not mapped" for _, _, why, write in stale_touches(k, cpu))
        try:
            model.step(k, (cpu, "step"))
        except KernelAssert as e:
            cause = e.__cause__
            out.append(f"{'':>4}  {cpu:>3}  {s.thread:<10} {s.routine}: {s.label}")
            if isinstance(cause, Trap) and cause.fault is not None and cause.cr2 is not None:
                code = cause.error_code
                out.append(f"{'':>4}       -> #PF cr2={cause.cr2:#x} error code {code:#x} "
                           f"({error_code_names(code)}): {e}")  # fmt: skip
            else:
                out.append(f"{'':>4}       -> {e}")
            break
        note = " (through a stale TLB entry: the PTE is gone)" if stale else ""
        out.append(f"{'':>4}  {cpu:>3}  {s.thread:<10} {s.routine}: {s.label}{note}")
    return out
