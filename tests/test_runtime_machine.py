"""mmusim.testing.runtime: the runtime property-test machine passes every runtime stack policy,
catches each deliberately broken variant under the ``ci`` profile (a guard left present, a gap
too small, an alternate stack not installed on a new thread), prints counterexamples that run,
and the pytest plugin gives it from the ``mmusim`` marker."""

from __future__ import annotations

import pytest
from hypothesis import Phase, settings

import mmusim.testing as mt
from mmusim.runtime.gostack import GoStackPolicy
from mmusim.runtime.policies import (
    RUNTIME_POLICIES,
    HaikuAreas,
    LinuxGuardRegions,
    NanosGrowsdown,
    PosixReserve,
    RethinkdbCoroutines,
    RuntimeStackPolicy,
)
from mmusim.runtime.sigstate import AltStack
from mmusim.testing import PromiseBroken, RuntimeMachine

pytest_plugins = ["pytester"]

CI = settings.get_profile("ci")
FIND = settings(CI, phases=[Phase.explicit, Phase.reuse, Phase.generate])  # no shrinking


# Go's stacks have no guard and no mapping of their own: GoStackMachine checks them
# (tests/test_go_stacks.py), and this machine refuses them.
GUARDED = sorted(n for n, p in RUNTIME_POLICIES.items() if not issubclass(p, GoStackPolicy))


@pytest.mark.parametrize("name", GUARDED)
def test_every_runtime_policy_keeps_its_promise(name: str) -> None:
    RuntimeMachine.configured(policy=name).check(CI)


def test_gos_policies_are_left_to_their_own_machine() -> None:
    with pytest.raises(ValueError, match="checked by GoStackMachine"):
        RuntimeMachine.configured(policy="go-copying")()


@pytest.mark.parametrize("signals", [True, False], ids=["with-signals", "bare"])
def test_a_guard_left_present_is_caught(signals: bool) -> None:
    machine = RuntimeMachine.configured(policy=HaikuAreas(guard_present=True), signals=signals)
    with pytest.raises(PromiseBroken, match="overflow .* went silently"):
        machine.check(FIND)


@pytest.mark.parametrize(
    "policy",
    [PosixReserve(guard_present=True), LinuxGuardRegions(guard_present=True),
     RethinkdbCoroutines(guard_present=True)],
    ids=repr,
)  # fmt: skip
def test_every_other_policys_broken_variant_is_caught(policy: RuntimeStackPolicy) -> None:
    machine = RuntimeMachine.configured(policy=policy, signals=False)
    with pytest.raises(PromiseBroken):
        machine.check(FIND)


def test_a_gap_too_small_is_caught() -> None:
    # The next mapping is placed one page below the stack's current start: inside the room the
    # stack grows into, so the stack's guard -- or a write inside the stack -- lands in it.
    machine = RuntimeMachine.configured(policy=NanosGrowsdown(gap_pages=1), signals=False)
    with pytest.raises(PromiseBroken, match="went (silently )?into 's1'|overlap"):
        machine.check(FIND)
    # The neighbour mapping's way: a push inside the stack lands, silently, in the neighbour.
    for gap in (256, 1):
        state = RuntimeMachine.configured(policy=NanosGrowsdown(gap_pages=gap), signals=False)()
        state.create(pick=0)
        state.neighbour(pages=2)  # placed by the address space, gap pages below the stack's top
        if gap == 256:
            state.touch(which=0, page=3, byte=8, cpu=0)  # refused (growth stops): safe
            continue
        with pytest.raises(PromiseBroken, match="inside s0 at .* went silently into 'm1'"):
            state.touch(which=0, page=3, byte=8, cpu=0)


@pytest.mark.parametrize("name", ["posix-reserve", "rethinkdb-coroutines"])
def test_an_alternate_stack_not_installed_on_a_new_thread_is_caught(name: str) -> None:
    machine = RuntimeMachine.configured(policy=name, altstack_on_new_threads=False)
    with pytest.raises(PromiseBroken, match="not reported by the SIGSEGV handler") as info:
        machine.check(FIND)
    assert "signal frame could not be written" in str(info.value)


def test_counterexample_prints_as_code_that_reproduces_it() -> None:
    machine = RuntimeMachine.configured(policy=HaikuAreas(guard_present=True), signals=False)
    with pytest.raises(PromiseBroken) as info:
        machine.check(CI)
    notes = "\n".join(getattr(info.value, "__notes__", []))
    code = notes[
        notes.index("state = ") : notes.index("state.teardown()") + len("state.teardown()")
    ]
    invariants = {"state.consistent()", "state.guards_fault()", "state.stacks_disjoint()"}
    steps = [line for line in code.splitlines() if line not in invariants]
    assert steps == [
        "state = RuntimeMachine.configured(policy=HaikuAreas(guard_present=True), signals=False)()",
        "state.create(pick=0)",
        "state.escape(by=1, cpu=0, kind='overflow', which=0)",
        "state.teardown()",
    ], code  # shrunk to: one stack, one byte below it
    with pytest.raises(PromiseBroken, match="overflow of s0 by 1 bytes .* went silently"):
        exec(compile(code, "<counterexample>", "exec"), dict(vars(mt), HaikuAreas=HaikuAreas))


def test_configured_classes_are_shared_and_names_are_checked() -> None:
    a = RuntimeMachine.configured(policy="haiku-areas")
    assert a is RuntimeMachine.configured(policy="haiku-areas")
    assert a.__name__ == "RuntimeMachine.configured(policy='haiku-areas')"
    with pytest.raises(ValueError, match="unknown runtime policy 'nope'"):
        RuntimeMachine.configured(policy="nope")()


def test_a_thread_at_the_base_of_its_alternate_stack_is_not_on_it() -> None:
    # Linux on_sig_stack: sp > ss_sp && sp - ss_sp <= ss_size. A thread whose stack ends where
    # the alternate stack begins is not on it (the machine found this with a one-page
    # rethinkdb-coroutines stack, all guard, right below the thread's alternate stack).
    alt = AltStack(0x1000, 0x2000)
    assert not alt.holds(0x1000) and alt.holds(0x1008) and alt.holds(0x3000)
    assert not alt.holds(0x3008)


def test_plugin_runtime_machine_fixture_and_marker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.mmusim(runtime_policy="linux-guard-regions")
        def test_guard_regions(runtime_machine):
            assert runtime_machine.__name__.endswith("(policy='linux-guard-regions')")
            runtime_machine.check()

        @pytest.mark.mmusim(runtime_policy="rethinkdb-coroutines", altstack_on_new_threads=False)
        def test_no_altstack(runtime_machine):
            runtime_machine.check()
        """
    )
    result = pytester.runpytest_inprocess("--hypothesis-profile=ci", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*not reported by the SIGSEGV handler*",
            "*state = RuntimeMachine.configured(policy='rethinkdb-coroutines', "
            "altstack_on_new_threads=False)()*",
        ]
    )
