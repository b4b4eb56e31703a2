"""Memory domains (``mmusim.kernel.domain``): per-domain page tables, the CR3 switch, partitions,
Zephyr's asserts, the common page table, the invariants that judge them, and the scenario ops.

The kernels run with every invariant checked after every step (``helpers.boot_kernel``); the
user-access bits are read from the page-table bytes with the raw entry bits of ``helpers``.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from helpers import US, X86_64_SMP, TmpFile, boot_kernel
from mmusim.kernel import (
    K_FOREVER,
    K_MEM_PARTITION_ATTRS,
    Kernel,
    KernelAssert,
    KMemPartition,
    Op,
    StackObject,
    assert_invariants,
    check_quiescent,
)
from mmusim.kernel.invariants import check_all
from mmusim.scenario import BUNDLED_DIR, ScenarioError, load_scenario, run_scenario

PAGE = 4096
STACKS = (StackObject("sa", 8192, True), StackObject("sp", 8192, True),
          StackObject("sb", 8192, True), StackObject("buf", 8192, True))  # fmt: skip
WAIT = (Op("sleep", n=K_FOREVER),)


def _partition(name: str = "pb", attr: str = "P_RW_U_RW", offset: int = 0) -> KMemPartition:
    return KMemPartition(name, PAGE, K_MEM_PARTITION_ATTRS[attr], stack="buf", offset=offset)


def _kernel(main: tuple[Op, ...], bodies: dict[str, tuple[Op, ...]] | None = None,
            parts: tuple[KMemPartition, ...] = (), **cfg: Any) -> Kernel:  # fmt: skip
    return Kernel({**X86_64_SMP, **cfg}, stacks=STACKS, main_body=main,
                  bodies={"wait": WAIT, **(bodies or {})}, check=assert_invariants,
                  partitions=parts)  # fmt: skip


def _user(k: Kernel, pt: Any, va: int) -> bool:
    hit = pt.lookup(va)
    return hit is not None and bool(hit[2] & US)


def _setup(domains: dict[str, str], writer: tuple[Op, ...]) -> tuple[Op, ...]:
    """Main: domains A and B; user threads b, peer (waiting) and a (``writer``), each moved to
    the domain ``domains`` names ('' leaves it in the default domain)."""
    ops: list[Op] = [Op("mem_domain_init", domain="A"), Op("mem_domain_init", domain="B")]
    for name, stack, body in (("b", "sb", "wait"), ("peer", "sp", "wait"), ("a", "sa", "writer")):
        ops.append(Op("create", target=name, stack=stack, label=body, user=True, prio=-1,
                      n=K_FOREVER))  # fmt: skip
        if domains.get(name):
            ops.append(Op("mem_domain_add_thread", domain=domains[name], target=name))
    ops += [Op("record", target="b.stack_start", label="b_start"),
            Op("record", target="peer.stack_start", label="peer_start"),
            Op("start", target="b"), Op("start", target="peer"), Op("sleep", n=1),
            Op("start", target="a"), Op("join", target="a"),
            Op("record", target="b.state", label="b_state"),
            Op("abort", target="b"), Op("abort", target="peer")]  # fmt: skip
    return tuple(ops)


WRITE_B = (Op("write", label="b_start", offset=64), Op("record", target="a.state", label="done"))


# -- per-domain page tables -----------------------------------------------------------------------


def test_a_write_into_another_domains_stack_faults() -> None:
    k = _kernel(_setup({"a": "A", "peer": "A", "b": "B"}, WRITE_B), {"writer": WRITE_B})
    k.run()
    assert [(f["thread"], f["reason"], f["error_code"]) for f in k.faults] == [("a", 0, 0x7)]
    assert k.faults[0]["cr2"] == k.facts["b_start"][-1] + 64
    assert "done" not in k.facts
    assert check_quiescent(k) == []


def test_the_same_write_within_one_domain_goes_through() -> None:
    """The control: all three in the default domain (one set of tables), no fault."""
    k = _kernel(_setup({}, WRITE_B), {"writer": WRITE_B})
    k.run()
    assert k.faults == [] and k.facts["done"] == ["running"]


def test_each_domain_has_its_own_tables_with_the_kernels_mappings() -> None:
    k = _kernel(_setup({"a": "A", "peer": "A", "b": "B"}, WAIT), {"writer": WAIT})
    k.run(until=lambda k: "b_start" in k.facts and k.threads["a"].cpl == 3)
    assert k.md is not None
    a_tables, b_tables = (k.md.by_name[n].ptables for n in "AB")
    assert a_tables is not None and b_tables is not None
    roots = {k.pt.root, a_tables.root, b_tables.root}
    assert len(roots) == 3  # three sets of page-table bytes in physical memory
    assert not set(a_tables.table_frames) & set(k.pt.table_frames)
    frames = {va: e & k.pt_frame_mask for va, e, _ in k.pt.leaves()}
    assert {va: e & k.pt_frame_mask for va, e, _ in a_tables.leaves()} == frames
    b = k.threads["b"].stack_info
    assert _user(k, b_tables, b.start) and not _user(k, a_tables, b.start)
    assert not _user(k, k.pt, b.start)  # nor in the default domain's (the kernel's)
    a = k.threads["a"]
    cpu = next(c for c in k.cpus if c.ctx is a)
    assert cpu.hw.ctl.cr3 == a_tables.root  # z_x86_swap_update_page_tables loaded A's tables


def test_kernel_mappings_made_after_a_domain_reach_its_tables() -> None:
    main = (Op("mem_domain_init", domain="A"), Op("k_mem_map", n=2 * PAGE, target="m"),
            Op("record", target="mapping.m", label="m"), Op("k_mem_unmap", target="m"),
            Op("k_mem_map", n=PAGE, target="m2"), Op("record", target="mapping.m2", label="m2"))  # fmt: skip
    k = _kernel(main)
    k.run()
    assert k.md is not None
    a = k.md.by_name["A"].ptables
    assert a is not None
    m, m2 = k.facts["m"][-1], k.facts["m2"][-1]
    assert a.lookup(m2) is not None and a.lookup(m2)[2] == k.pt.lookup(m2)[2]  # type: ignore[index]
    for va in range(m - PAGE, m + 3 * PAGE, PAGE):  # the unmap and the remap went to A's too
        assert (a.lookup(va) or (0, 0, None))[2] == (k.pt.lookup(va) or (0, 0, None))[2]
    assert check_quiescent(k) == []


def test_partitions_are_user_accessible_in_their_domain_only() -> None:
    main = (Op("mem_domain_init", domain="A", parts=("pb",)), Op("mem_domain_init", domain="B"),
            Op("record", target="stack.buf.addr", label="buf"),
            Op("mem_domain_remove_partition", domain="A", parts=("pb",)),
            Op("record", target="stack.buf.addr", label="removed"))  # fmt: skip
    k = _kernel(main, parts=(_partition(),))
    k.run(until=lambda k: "buf" in k.facts)
    assert k.md is not None
    a, b = k.md.by_name["A"].ptables, k.md.by_name["B"].ptables
    buf = k.facts["buf"][0]
    assert _user(k, a, buf) and not _user(k, b, buf) and not _user(k, k.pt, buf)
    k.run()
    assert not _user(k, a, buf)  # reset_region: back to what it was mapped with


def test_a_migrating_thread_takes_its_stack_access_along() -> None:
    main = (Op("mem_domain_init", domain="A"),
            Op("create", target="t", stack="sa", label="wait", user=True, prio=-1, n=0),
            Op("record", target="t.stack_start", label="start"),
            Op("mem_domain_add_thread", domain="A", target="t"),
            Op("record", target="t.stack_start", label="moved"), Op("abort", target="t"))  # fmt: skip
    k = _kernel(main)
    k.run(until=lambda k: "start" in k.facts)
    start = k.facts["start"][0]
    assert k.md is not None
    a = k.md.by_name["A"].ptables
    assert _user(k, k.pt, start) and not _user(k, a, start)
    k.run(until=lambda k: "moved" in k.facts)
    assert _user(k, a, start) and not _user(k, k.pt, start)  # arch_mem_domain_thread_add
    assert k.threads["t"].ptables is a
    k.run()
    assert not _user(k, a, start) and check_quiescent(k) == []


# -- Zephyr's asserts --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("main", "cfg", "message"),
    [
        ((Op("mem_domain_init", domain="A", parts=("pb", "pc")),), {},
         "k_mem_domain_init: partition pc [0x"),
        ((Op("mem_domain_init", domain="A", parts=("pb",)),
          Op("mem_domain_add_partition", domain="A", parts=("pb",))), {}, "overlaps existing pb"),
        ((Op("mem_domain_init", domain="A", parts=("pb",)),
          Op("mem_domain_add_partition", domain="A", parts=("pd",))), {"MAX_DOMAIN_PARTITIONS": 1},
         "k_mem_domain_add_partition: no free partition slots available"),
        ((Op("mem_domain_init", domain="A", parts=("pb", "pd")),), {"MAX_DOMAIN_PARTITIONS": 1},
         "k_mem_domain_init: num_parts of 2 exceeds maximum allowable partitions (1)"),
        ((Op("mem_domain_init", domain="A"),
          Op("mem_domain_remove_partition", domain="A", parts=("pb",))), {},
         "k_mem_domain_remove_partition: no matching partition found"),
        ((Op("mem_domain_init", domain="A"), Op("mem_domain_init", domain="A")), {},
         "arch_mem_domain_init: arch_mem_domain_init(A) called multiple times"),
        ((Op("mem_domain_init", domain="A"), Op("mem_domain_init", domain="B")),
         {"X86_MAX_ADDITIONAL_MEM_DOMAINS": 0}, "arch_mem_domain_init: page pool exhausted"),
        ((Op("mem_domain_add_thread", domain="Z", target="main"),), {},
         "k_mem_domain_add_thread: domain 'Z' is not initialised"),
        ((Op("mem_domain_init", domain="A"),), {"USERSPACE": False},
         "k_mem_domain_init: memory domains need CONFIG_USERSPACE"),
    ],
    ids=["overlap-init", "overlap-add", "no-slot", "too-many", "no-match", "twice", "pool",
         "no-domain", "no-userspace"],
)  # fmt: skip
def test_zephyrs_asserts(main: tuple[Op, ...], cfg: dict[str, Any], message: str) -> None:
    parts = (_partition(), _partition("pc"), _partition("pd", offset=PAGE))
    k = _kernel(main, parts=parts, **cfg)
    with pytest.raises(KernelAssert, match=re.escape(message)):
        k.run()


# -- the common page table ------------------------------------------------------------------------------

COMMON = {"SMP": False, "MP_MAX_NUM_CPUS": 1, "X86_COMMON_PAGE_TABLE": True}


def test_common_table_grants_only_the_running_user_threads_stack() -> None:
    write_peer = (Op("write", label="peer_start", offset=64),)
    k = _kernel(_setup({"a": "A", "peer": "A", "b": "B"}, write_peer), {"writer": write_peer},
                **COMMON)  # fmt: skip
    k.run()
    assert [(f["thread"], f["cr2"]) for f in k.faults] == [("a", k.facts["peer_start"][-1] + 64)]
    assert k.md is not None and k.md.x86_domain_list == []  # no tables of their own
    assert k.md.by_name["A"].ptables is None
    assert {c.hw.ctl.cr3 for c in k.cpus} == {k.pt.root}


def test_common_table_applies_the_incoming_domains_partitions() -> None:
    main = (Op("mem_domain_init", domain="A", parts=("pb",)),
            Op("create", target="t", stack="sa", label="touch", user=True, prio=-1, n=K_FOREVER),
            Op("mem_domain_add_thread", domain="A", target="t"),
            Op("record", target="stack.buf.addr", label="buf"),
            Op("start", target="t"), Op("join", target="t"))  # fmt: skip
    touch = (Op("write", label="buf", offset=8), Op("record", target="t.state", label="wrote"))
    k = _kernel(main, {"touch": touch}, parts=(_partition(),), **COMMON)
    k.run()
    assert k.faults == [] and k.facts["wrote"] == ["running"]
    assert k.md is not None and k.md.current_domain is k.md.by_name["A"]


# -- the invariants can fail ----------------------------------------------------------------------------


def _two_domains() -> Kernel:
    k = _kernel(_setup({"a": "A", "peer": "A", "b": "B"}, WAIT), {"writer": WAIT})
    k.check = None
    k.run(until=lambda k: "b_start" in k.facts and k.threads["a"].cpl == 3)
    assert check_all(k) == []
    return k


def test_invariant_user_access_in_the_wrong_domain() -> None:
    k = _two_domains()
    assert k.md is not None
    a = k.md.by_name["A"].ptables
    b_start = k.threads["b"].stack_info.start
    entry = a.lookup(b_start)[2]  # type: ignore[union-attr,index]
    a.set_flags(b_start, (entry & 0x1FF) | US)  # type: ignore[union-attr]
    assert any("user: b: page" in p and "domain A" in p for p in check_all(k))


def test_invariant_kernel_mapping_missing_in_a_domain() -> None:
    k = _two_domains()
    assert k.md is not None
    b = k.md.by_name["B"].ptables
    va = k.threads["a"].stack_info.start
    b.unmap(va)  # type: ignore[union-attr]
    assert any(p.startswith("domains: a: page") and "domain B" in p for p in check_all(k))


def test_invariant_cr3_of_another_domain() -> None:
    k = _two_domains()
    assert k.md is not None
    c = next(c for c in k.cpus if c.ctx is k.threads["a"])
    c.hw.write_cr3(k.md.by_name["B"].ptables.root)  # type: ignore[union-attr]
    assert any(p.startswith(f"cr3: CPU {c.id} runs a") for p in check_all(k))


def test_without_userspace_nothing_changes() -> None:
    k = boot_kernel({**X86_64_SMP, "USERSPACE": False})
    k.run()
    assert k.md is None and k.all_ptables() == [k.pt]


# -- scenarios -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mem_domain_cross_stack_write", "mem_domain_common_page_table"])
def test_bundled_domain_scenarios_pass_on_several_seeds(name: str) -> None:
    scn = load_scenario(BUNDLED_DIR / f"{name}.toml")
    for seed in (None, 1, 2, 3):
        r = run_scenario(scn, seed=seed)
        assert r.passed, (seed, r.failures, r.error)


BASE = """\
[scenario]
board = "qemu_x86_64"
config = ["CONFIG_USERSPACE=y"]

[stacks]
s = { size = 8192, user = true }

[partitions]
p = { stack = "s", size = 4096, attr = "P_RW_U_RW" }

[bodies]
main = [
    { op = "mem_domain_init", domain = "d", partitions = ["p"] },
    { op = "create", thread = "t", stack = "s", body = "main", user = true, delay = "forever" },
    { op = "mem_domain_add_thread", domain = "d", thread = "t" },
    { op = "mem_domain_remove_partition", domain = "d", partition = "p" },
]
"""

# fmt: off
BAD = [
    # (name, old, new, line, key, message fragment)
    ("unknown domain", 'domain = "d", thread', 'domain = "dd", thread', 15, "bodies.main[2].domain", "unknown memory domain 'dd' (did you mean 'd'?"),
    ("unknown partition", 'partitions = ["p"]', 'partitions = ["q"]', 13, "bodies.main[0].partitions[0]", "unknown partition 'q'"),
    ("partition of add", 'partition = "p" }', 'partition = "x" }', 16, "bodies.main[3].partition", "unknown partition 'x'"),
    ("partitions not a list", 'partitions = ["p"]', 'partitions = "p"', 13, "bodies.main[0].partitions", "expected an array of partition names"),
    ("default re-init", 'domain = "d", partitions', 'domain = "default", partitions', 13, "bodies.main[0].domain", "'default' is k_mem_domain_default"),
    ("no userspace", 'config = ["CONFIG_USERSPACE=y"]', "config = []", 8, "partitions", "memory partitions need CONFIG_USERSPACE=y"),
    ("bad attr", 'attr = "P_RW_U_RW"', 'attr = "P_RW_U_RX"', 9, "partitions.p.attr", "unknown attribute 'P_RW_U_RX'"),
    ("addr and stack", 'stack = "s", size', 'stack = "s", addr = 4096, size', 9, "partitions.p", "exactly one of 'addr' or 'stack'"),
    ("unaligned size", "size = 4096,", "size = 100,", 9, "partitions.p.size", "not a positive multiple of 4096"),
    ("unknown stack", 'stack = "s", size', 'stack = "z", size', 9, "partitions.p.stack", "unknown stack 'z'"),
    ("unaligned offset", 'stack = "s", size', 'stack = "s", offset = 8, size', 9, "partitions.p.offset", "not a page-aligned address"),
    ("unknown key", 'attr = "P_RW_U_RW"', 'atr = "P_RW_U_RW"', 9, "partitions.p.atr", "unknown key (did you mean 'attr'?"),
]
# fmt: on


@pytest.mark.parametrize(("old", "new", "line", "key", "message"), [b[1:] for b in BAD],
                         ids=[b[0] for b in BAD])  # fmt: skip
def test_bad_domain_input_is_a_scenario_error(
    tmp_file: TmpFile, old: str, new: str, line: int, key: str, message: str
) -> None:
    assert old in BASE
    path = tmp_file("d.toml", BASE.replace(old, new))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    e = info.value
    assert (e.path, e.line, e.key) == (str(path), line, key), str(e)
    assert message in e.message, e.message


def test_domain_ops_without_userspace_are_an_error(tmp_file: TmpFile) -> None:
    text = """\
[scenario]
board = "qemu_x86_64"

[bodies]
main = [ { op = "mem_domain_add_thread", domain = "default", thread = "main" } ]
"""
    with pytest.raises(ScenarioError) as info:
        load_scenario(tmp_file("d.toml", text))
    assert (info.value.line, info.value.key) == (5, "bodies.main[0].domain")
    assert "memory domains need CONFIG_USERSPACE=y" in info.value.message


def test_the_base_domain_scenario_loads_and_runs(tmp_file: TmpFile) -> None:
    r = run_scenario(tmp_file("d.toml", BASE))
    assert r.verdict == "pass", (r.failures, r.error)


def test_legacy_guard_is_set_in_every_domains_tables() -> None:
    """Without mapped stacks, z_x86_set_stack_guard goes through range_map: a domain created
    before the thread gets the read-only guard page too."""
    main = (Op("mem_domain_init", domain="A"),
            Op("create", target="t", stack="sa", label="wait", prio=-1, n=K_FOREVER))  # fmt: skip
    k = _kernel(main, THREAD_STACK_MEM_MAPPED=False, THREAD_ABORT_NEED_CLEANUP=False)
    k.run()
    assert k.md is not None
    a = k.md.by_name["A"].ptables
    guard = k.stacks["sa"].addr
    assert a is not None and a.lookup(guard)[2] & 0x2 == 0 == k.pt.lookup(guard)[2] & 0x2  # type: ignore[index]
