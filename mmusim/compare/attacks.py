"""One battery of attacks on every stack strategy, each on the same simulated machine under the
same checks: the data behind ``mmusim compare`` (docs/compare.md).

An attack is a few ops of a thread body (``mmusim.kernel.Op``) run by thread ``t`` on a stack of
``STACK_SIZE`` bytes made by the strategy, with memory of other owners on both sides of it
(``NEIGHBOURS``). The prologue of its calls is the strategy's compiler's: ``unprobed`` for C
(neither Zephyr nor glibc builds with ``-fstack-clash-protection`` by default), ``probed`` only in
``big-frame-probed``, and always ``checked`` for Go (the Go compiler emits the check in every
function that is not ``NOSPLIT``).

A cell's verdict:

* ``caught`` -- the strategy stopped the attack (a fault, a signal, a failed check) before any byte
  outside the stack was written. A write that lands in a neighbour first is not caught, even if a
  fault follows;
* ``attributed_to`` -- whom the system blames: Zephyr's fatal error names ``_current``; Linux,
  nanos and Haiku deliver SIGSEGV to the faulting thread; RethinkDB's handler names the coroutine
  whose guard page holds ``si_addr``, else reports a plain segfault (no one); Go's fatal error
  names the goroutine. ``attribution_right``: blamed the attacker (``t``, its coroutine or
  goroutine);
* ``recovered`` -- the program went on: the stack grew (nanos, Go) or the handler ``siglongjmp``-ed
  back; ``outcome`` says how, or how it died.

Every cell is one fresh kernel (and process) run: cells cannot influence each other.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import attrs

from mmusim.compare.costs import KERNEL_POLICIES, kernel_config
from mmusim.kconfig import ConfigError, load_config
from mmusim.kernel import K_FOREVER, Kernel, KThread, Op, StackObject
from mmusim.kernel.fatal import REASONS
from mmusim.kernel.policy import policy_for_config
from mmusim.runtime import PAGE, Process, Prot
from mmusim.runtime.defs import MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE
from mmusim.runtime.policies import RUNTIME_POLICIES, RtStack, RuntimeStackPolicy
from mmusim.runtime.sigstate import MINSIGSTKSZ

__all__ = [
    "ATTACKS",
    "POLICY_NAMES",
    "STACK_SIZE",
    "Attack",
    "PolicyInfo",
    "attack_ops",
    "policy_unavailable",
    "run_cell",
]

STACK_SIZE = 16 * 1024  # every strategy's stack (Go's starts at its own 2 KiB and grows)
NEIGHBOUR_SIZE = 16 * 1024
RW = Prot.READ | Prot.WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
BIG_FRAME_PAGES = 4  # a frame reaching 4 pages past the bottom: jumps a one-page guard
RECURSION_FRAME = 2048 - 8  # with the return address: 2 KiB a level
RECURSION_DEPTH = 48  # 96 KiB: six times the stack
HOT_SPLIT_CALLS = 100


@attrs.frozen
class Attack:
    name: str
    what: str


ATTACKS: tuple[Attack, ...] = (
    Attack("overflow-byte", "a frame reaching one byte past the bottom of the stack"),
    Attack("overflow-page", "a frame reaching one page past the bottom"),
    Attack("big-frame-unprobed", f"a frame reaching {BIG_FRAME_PAGES} pages past the bottom, "
           "claimed in one step (no probes)"),
    Attack("big-frame-probed", "the same frame, probed every page (-fstack-clash-protection)"),
    Attack("underflow", "a write of a word at the top of the stack (one past its highest byte)"),
    Attack("deep-recursion", f"a function calling itself {RECURSION_DEPTH} deep with 2 KiB "
           f"frames ({RECURSION_DEPTH * 2} KiB)"),
    Attack("hot-split", f"a loop making {HOT_SPLIT_CALLS} calls of a 2 KiB frame with 1 KiB left "
           "on the stack: every call crosses its end"),
)  # fmt: skip


@attrs.frozen
class PolicyInfo:
    name: str
    system: str
    what: str
    family: str  # "kernel", "runtime", "go"

    @property
    def config(self) -> tuple[str, ...]:
        """The Kconfig lines that select a kernel policy (``costs.KERNEL_POLICIES``)."""
        return KERNEL_POLICIES.get(self.name, ())


POLICIES: tuple[PolicyInfo, ...] = (
    PolicyInfo("zephyr-mapped", "Zephyr", "CONFIG_THREAD_STACK_MEM_MAPPED: the stack remapped "
               "between two non-present guard pages", "kernel"),
    PolicyInfo("zephyr-legacy", "Zephyr", "X86_STACK_PROTECTION: the stack in place, its "
               "object's first page read-only", "kernel"),
    PolicyInfo("none", "Zephyr", "no protection: stacks in place, side by side", "kernel"),
    PolicyInfo("haiku-areas", "Haiku", "a PROT_NONE reservation, the stack mapped over it: "
               "three areas", "runtime"),
    PolicyInfo("posix-reserve", "Haiku", "one reservation, the stack mprotect-ed RW: guards are "
               "pages of the same area", "runtime"),
    PolicyInfo("linux-guard-regions", "Linux", "one mapping, MADV_GUARD_INSTALL at each end "
               "(Linux 6.13)", "runtime"),
    PolicyInfo("nanos-growsdown", "nanos", "MAP_GROWSDOWN, grows to RLIMIT_STACK, 256-page gap "
               "below", "runtime"),
    PolicyInfo("rethinkdb-coroutines", "RethinkDB", "coroutine stacks, lowest page PROT_NONE, "
               "handler on an alternate stack", "runtime"),
    PolicyInfo("go-segmented", "Go 1.2", "checked prologues; morestack links a new segment",
               "go"),
    PolicyInfo("go-copying", "Go 1.4+", "checked prologues; morestack copies the stack into "
               "one twice as big", "go"),
)  # fmt: skip
POLICY_NAMES = tuple(p.name for p in POLICIES)
_BY_NAME = {p.name: p for p in POLICIES}
KERNEL_REASONS = {0: "K_ERR_CPU_EXCEPTION", 2: "K_ERR_STACK_CHK_FAIL", 4: "K_ERR_KERNEL_PANIC"}


def attack_ops(attack: str, prologue: str | None = None) -> tuple[Op, ...]:
    """The ops of ``attack``; ``prologue`` forces every call's (Go: "checked")."""

    def call(**kw: Any) -> Op:
        own = kw.pop("prologue", "unprobed")
        return Op("call", prologue=prologue or own, **kw)

    if attack == "overflow-byte":
        return (call(where="bottom", offset=1),)
    if attack == "overflow-page":
        return (call(where="bottom", offset=PAGE),)
    if attack == "big-frame-unprobed":
        return (call(where="bottom", offset=BIG_FRAME_PAGES * PAGE),)
    if attack == "big-frame-probed":
        return (call(where="bottom", offset=BIG_FRAME_PAGES * PAGE, prologue="probed"),)
    if attack == "underflow":
        return (Op("touch", where="top"),)
    if attack == "deep-recursion":
        return (call(n=RECURSION_FRAME, depth=RECURSION_DEPTH),)
    if attack == "hot-split":
        inner = call(n=2048)
        return (call(where="bottom", offset=-1024,
                     body=(Op("repeat", n=HOT_SPLIT_CALLS, body=(inner,)),)),)  # fmt: skip
    raise ValueError(f"unknown attack {attack!r}")


# -- neighbours: memory of other owners around the stack -------------------------------------


@attrs.define
class Watch:
    """Memory outside the attacker's stack, read when the attack starts (``mark``) and after."""

    ranges: list[tuple[str, int, int]] = attrs.Factory(list)  # owner, lo, hi
    before: dict[str, list[bytes | None]] = attrs.Factory(dict)
    read: Callable[[int, int], bytes | None] | None = None
    find: Callable[[], list[tuple[str, int, int]]] | None = None  # the ranges, found at mark
    reserved: bool = False  # the attacker's stack object reserves memory below its buffer

    def snapshot(self) -> dict[str, list[bytes | None]]:
        """Each range's bytes, a page (or the part of one in the range) at a time."""
        assert self.read is not None
        out = {}
        for name, lo, hi in self.ranges:
            cuts = [lo, *range((lo | (PAGE - 1)) + 1, hi, PAGE), hi]
            out[name] = [self.read(a, b - a) for a, b in zip(cuts, cuts[1:], strict=False)]
        return out

    def changed(self) -> list[str]:
        after = self.snapshot()
        return [name for name, _, _ in self.ranges if after[name] != self.before.get(name)]


def _reader(k: Kernel) -> Callable[[int, int], bytes | None]:
    """Read bytes of one page through the kernel's page tables (a software walk: no TLB fill,
    no A/D update, so the harness leaves no trace in the machine), None if not mapped."""

    def read(va: int, n: int) -> bytes | None:
        hit = k.pt.lookup(va)
        if hit is None:
            return None
        _, _, entry, size = hit
        frame = entry & ~(size - 1) & ((1 << 52) - 1)  # the frame bits: no flags, no XD
        return k.mem.read(frame + (va & (size - 1)), n)

    return read


def _mark_op(watch: Watch) -> Callable[[Kernel, KThread, Op], Generator[Any, None, None]]:
    def mark(k: Kernel, t: KThread, op: Op) -> Generator[Any, None, None]:
        if watch.find is not None:
            watch.ranges = watch.find()
        watch.before = watch.snapshot()
        k.record("attack.started", True)
        return
        yield  # pragma: no cover

    return mark


MARK = Op("compare_mark")
WENT_ON = Op("record", target="t.state", label="went_on")


# -- one cell ------------------------------------------------------------------------------------


def run_cell(policy: str, attack: str, board: str = "qemu_x86_64") -> dict[str, Any]:
    """Run ``attack`` on ``policy`` (names of ``POLICY_NAMES``, ``ATTACKS``) on ``board``: the
    cell of the matrix (module docstring), with ``splits``/``copies``/``bytes_copied`` for Go."""
    info = _BY_NAME[policy]
    if info.family == "kernel":
        return _kernel_cell(info, attack, board)
    if info.family == "runtime":
        return _runtime_cell(info, attack, board)
    return _go_cell(info, attack, board)


def _cell(caught: bool, who: str | None, right: bool | None, reason: str | None,
          recovered: bool, outcome: str, **extra: Any) -> dict[str, Any]:  # fmt: skip
    return {"caught": caught, "attributed_to": who, "attribution_right": right,
            "reason": reason, "recovered": recovered, "outcome": outcome, **extra}  # fmt: skip


def _missed(went_on: bool, outcome: str, **extra: Any) -> dict[str, Any]:
    """A cell the strategy did not catch: no one blamed, no reason."""
    return _cell(False, None, None, None, went_on, f"not caught: {outcome}", **extra)


def _config(info: PolicyInfo, board: str) -> Any:
    return kernel_config(info.name, board) if info.family == "kernel" else load_config(board)


def _kernel_cell(info: PolicyInfo, attack: str, board: str) -> dict[str, Any]:
    """Zephyr: thread ``t`` on stack ``s``, threads ``neighbour1``/``neighbour2`` asleep on the
    stacks defined (and created) before and after it (where their stacks lie is the policy's
    placement: in place in definition order, or in the virtual region as mapped)."""
    cfg = _config(info, board)
    watch = Watch()
    sleep = (Op("sleep", n=K_FOREVER),)
    main = (
        Op("create", target="neighbour1", stack="n1", label="sleeper", prio=-2),
        Op("create", target="t", stack="s", label="attack", prio=-1, n=K_FOREVER),
        Op("create", target="neighbour2", stack="n2", label="sleeper", prio=-2),
        Op("start", target="t"),
        Op("join", target="t"),
    )
    k = Kernel(
        cfg.values,
        stacks=(StackObject("n1", NEIGHBOUR_SIZE, True), StackObject("s", STACK_SIZE, True),
                StackObject("n2", NEIGHBOUR_SIZE, True)),
        main_body=main,
        bodies={"sleeper": sleep, "attack": (MARK, *attack_ops(attack), WENT_ON)},
    )  # fmt: skip
    k.extension_ops["compare_mark"] = _mark_op(watch)
    watch.read = _reader(k)

    def find() -> list[tuple[str, int, int]]:
        t = k.thread("t")
        watch.reserved = attack != "underflow" and k.policy.extent(k, t)[0] < t.stack_info.start
        return [
            (f"{n}'s stack", *k.policy.extent(k, k.thread(n))) for n in ("neighbour1", "neighbour2")
        ]

    watch.find = find
    k.run()
    hit = watch.changed()
    fault = next((f for f in k.faults if f["faulting"] == "t"), None)
    went_on = "went_on" in k.facts
    if fault is None:
        own = "into t's own stack object: the page it reserves below the buffer"
        where = (
            f"wrote over {', '.join(hit)}"
            if hit
            else f"wrote {own}"
            if watch.reserved
            else (f"wrote {_escaped(attack)} unnoticed")
        )
        extra = {"label": "reserved"} if watch.reserved and not hit else {}
        return _missed(went_on, f"{where}; t went on", **extra)
    reason = KERNEL_REASONS.get(fault["reason"], str(fault["reason"]))
    how = (
        "a failed stack check"
        if fault["vector"] == 32
        else (
            f"a #PF at {fault['cr2']:#x}"
            if fault["cr2"] is not None
            else f"vector {fault['vector']}"
        )
    )
    died = f"{how}; {fault['thread']} aborted ({REASONS[fault['reason']]}), the system went on"
    if hit:
        return _cell(False, fault["thread"], fault["thread"] == "t", reason, False,
                     f"not caught: wrote over {', '.join(hit)} first, then {died}")  # fmt: skip
    return _cell(
        True,
        fault["thread"],
        fault["thread"] == "t",
        reason,
        False,
        f"caught: {died}",
        label="aborted",
    )


def _count(n: int, one: str, many: str = "") -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def _escaped(attack: str) -> str:
    return "above the stack" if attack == "underflow" else "below the stack"


def _runtime_cell(info: PolicyInfo, attack: str, board: str) -> dict[str, Any]:
    """A process on the kernel: ``main`` installs a SIGSEGV handler (``SA_ONSTACK``) and starts
    ``t``, which sets its own alternate stack and runs the attack on a stack the policy made,
    between two 16 KiB mappings of other owners, inside ``sigsetjmp``; the handler
    ``siglongjmp``-s back. RethinkDB: the attack runs in coroutine ``c``; its handler reports
    (``is_coroutine_stack_overflow``) and crashes, as RethinkDB's does."""
    pol: RuntimeStackPolicy = RUNTIME_POLICIES[info.name]()
    cfg = _config(info, board)
    watch = Watch()
    coro = info.name == "rethinkdb-coroutines"
    alt = MINSIGSTKSZ + 4096

    def op(kind: str, body: tuple[Op, ...] = (), **args: Any) -> Op:
        return Op(kind, body=body, args=args)

    attack_body = (MARK, *attack_ops(attack), WENT_ON)
    handler: tuple[Op, ...]
    worker: tuple[Op, ...]
    if coro:
        handler = (op("classify_fault"), Op("abort_self"))
        worker = (op("sigaltstack", mapping="alt_t"),
                  Op("coro_create", args={"name": "c", "mapping": "s_whole", "guard": 1,
                                          "body": "attack"}),
                  op("coro_switch", name="c"))  # fmt: skip
    else:
        handler = (Op("record", target="t.state", label="handled"), op("siglongjmp"))
        worker = (op("sigaltstack", mapping="alt_t"),
                  op("sigsetjmp", (op("on_stack", attack_body, mapping="s"),),
                     on_jump=(Op("record", target="t.state", label="longjmp"),)))  # fmt: skip
    main = (op("sigaction", handler="h", onstack=True),
            Op("create", target="t", stack="tstack", label="worker", n=K_FOREVER, prio=-1),
            Op("start", target="t"), Op("join", target="t"))  # fmt: skip
    k = Kernel(cfg.values, stacks=(StackObject("tstack", PAGE, False),), main_body=main,
               bodies={"worker": worker, "h": handler, "attack": attack_body})  # fmt: skip
    p = Process.attach(k, flavour=pol.space_flavour(), rlimit_stack=STACK_SIZE)
    k.extension_ops["compare_mark"] = _mark_op(watch)
    watch.read = _reader(k)
    p.mappings["alt_t"] = (p.space.mmap(alt, RW, ANON, name="alt_t"), alt)
    above = p.space.mmap(NEIGHBOUR_SIZE, RW, ANON, name="above")
    s: RtStack = pol.create(p.space, "s", STACK_SIZE)
    # The mapping below sits right under the stack's lowest guard (for a growsdown stack: under
    # the guard gap of its full extent, so that it may grow to RLIMIT_STACK).
    floor = min([g[0] for g in s.guards if g[1] <= s.lo] + [s.start, s.lo])
    below = p.space.mmap(NEIGHBOUR_SIZE, RW, ANON | MAP_FIXED, floor - NEIGHBOUR_SIZE, "below")
    for base in (above, below):
        p.space.populate(base, NEIGHBOUR_SIZE)
    watch.ranges += [("the mapping above", above, above + NEIGHBOUR_SIZE),
                     ("the mapping below", below, below + NEIGHBOUR_SIZE)]  # fmt: skip
    p.mappings["s"] = (s.lo, s.hi - s.lo)
    p.mappings["s_whole"] = (s.start, s.end - s.start)
    k.run()
    return _judge_runtime(k, p, watch, s, attack, coro)


def _judge_runtime(
    k: Kernel, p: Process, watch: Watch, s: RtStack, attack: str, coro: bool
) -> dict[str, Any]:
    hit = watch.changed()
    facts = k.facts
    went_on = "went_on" in facts
    if "sigsegv.si_addr" not in facts:
        if hit:
            return _missed(went_on, f"wrote over {', '.join(hit)}; t went on")
        grown = p.space.find(s.hi - 1)
        if grown is not None and grown.growsdown:
            return _cell(False, None, None, None, True,
                         f"grown to {(s.hi - grown.start) // 1024} KiB; t went on", label="grown")  # fmt: skip
        return _missed(went_on, f"wrote {_escaped(attack)} unnoticed; t went on")
    addr = facts["sigsegv.si_addr"][0]
    reason = f"SIGSEGV {facts['sigsegv.si_code'][0]}"
    why = facts["sigsegv.reason"][0]
    if coro:
        who = (facts.get("report.coroutine") or [None])[0]
        report = (facts.get("report") or ["(no report)"])[0]
        right = who == "c"
        how = f'SIGSEGV at {addr:#x} ({why}): "{report}", then crash() (abort)'
        if hit:
            return _cell(False, who, right, reason, False,
                         f"not caught: wrote over {', '.join(hit)} first; {how}")  # fmt: skip
        return _cell(True, who, right, reason, False, f"caught: {how}", label="crashed")
    killed = facts.get("killed")
    if killed:
        how = f"killed: {killed[0]}"
        recovered = False
    else:
        how = (f"SIGSEGV at {addr:#x} ({why}); the handler, on the alternate stack, "
               "siglongjmp-ed back; t went on")  # fmt: skip
        recovered = "longjmp" in facts
    if hit:
        return _cell(False, "t", True, reason, recovered,
                     f"not caught: wrote over {', '.join(hit)} first; {how}")  # fmt: skip
    label = "longjmp" if recovered else "killed"
    return _cell(True, "t", True, reason, recovered, f"caught: {how}", label=label)


GO_MAX_STACK = 64 * 1024  # compare's maxstacksize (Go's is 1 GB: same outcome, sooner)


def _go_cell(info: PolicyInfo, attack: str, board: str) -> dict[str, Any]:
    """A process whose thread ``t`` runs the attack as goroutine ``g`` (``go``), compiled as Go
    compiles: every call with the checked prologue. Another goroutine's stack (a heap block
    allocated first) lies below ``g``'s. ``max_stack`` is ``GO_MAX_STACK``, not Go's 1 GB: the
    deep recursion meets it after 96 KiB instead of after a billion bytes."""
    pol = RUNTIME_POLICIES[info.name](max_stack=GO_MAX_STACK)  # type: ignore[call-arg]
    cfg = _config(info, board)
    watch = Watch()
    attack_body = (MARK, *attack_ops(attack, "checked"), WENT_ON)
    main = (Op("create", target="t", stack="tstack", label="worker", n=K_FOREVER, prio=-1),
            Op("start", target="t"), Op("join", target="t"))  # fmt: skip
    worker = (Op("go", body=attack_body, args={"name": "g"}),)
    k = Kernel(cfg.values, stacks=(StackObject("tstack", PAGE, False),), main_body=main,
               bodies={"worker": worker})  # fmt: skip
    p = Process.attach(k, flavour=pol.space_flavour(), go_policy=pol)  # type: ignore[arg-type]
    k.extension_ops["compare_mark"] = _mark_op(watch)
    watch.read = _reader(k)
    other = p.go.heap.alloc(2048)  # another goroutine's stack, below g's
    watch.ranges = [("another goroutine's stack", *other)]
    k.run()
    hit = watch.changed()
    facts = k.facts
    counters = {
        key: int(facts.get(f"go.{key}", [0])[-1]) for key in ("splits", "copies", "bytes_copied")
    }
    grew = (
        _count(counters["splits"], "split")
        if info.name == "go-segmented"
        else f"{_count(counters['copies'], 'copy', 'copies')}, {counters['bytes_copied']} bytes copied"
    )
    fatal = facts.get("go.fatal")
    if fatal:
        who = facts["go.fatal.goroutine"][0]
        how = (
            f"the check called morestack ({grew}) until the stack would pass "
            f'{GO_MAX_STACK} bytes: "{fatal[0]}", the program exits'
        )
        if hit:
            return _cell(
                False,
                who,
                who == "g",
                "throw",
                False,
                f"not caught: wrote over {', '.join(hit)} first; {how}",
                **counters,
            )
        return _cell(
            True, who, who == "g", "throw", False, f"caught: {how}", label="thrown", **counters
        )
    went_on = "went_on" in facts
    if hit:
        return _missed(went_on, f"wrote over {', '.join(hit)}; g went on", **counters)
    if facts.get("go.growth"):
        label = "split" if info.name == "go-segmented" else "copied"
        return _cell(True, "g", True, "morestack", went_on,
                     f"caught by the prologue check: morestack grew the stack ({grew}); g went on",
                     label=label, **counters)  # fmt: skip
    return _missed(went_on, f"wrote {_escaped(attack)} unnoticed (no prologue checks a plain "
                   "write); g went on", **counters)  # fmt: skip


def policy_unavailable(info: PolicyInfo, board: str) -> str | None:
    """Why ``info`` cannot run on ``board`` (its Kconfig does not give the policy), or None."""
    if info.family != "kernel":
        return None
    want = {"zephyr-mapped": "MappedStacks", "zephyr-legacy": "LegacyGuard",
            "none": "NoProtection"}[info.name]  # fmt: skip
    try:
        got = type(policy_for_config(_config(info, board).values)).__name__
    except ConfigError as e:
        return f"{board}'s Kconfig refuses {' '.join(info.config)}: {e.reason}"
    if got != want:
        return f"{board}'s Kconfig with {' '.join(info.config)} gives {got}, not {want}"
    return None
