"""The pytest plugin of ``mmusim.testing`` (registered through the ``pytest11`` entry point, so
installing mmusim is enough).

* Hypothesis profiles ``ci`` (deterministic: ``derandomize``, no example database), ``dev`` and
  ``thorough``; pick one with ``pytest --hypothesis-profile=ci``. A conftest may re-register them.
* The ``mmusim`` marker configures the fixtures: ``@pytest.mark.mmusim(board="qemu_x86_64",
  config=["CONFIG_USERSPACE=y"], policy=MyPolicy)``; without it, the defaults of ``KernelMachine``.
* ``machine``: the configured ``KernelMachine`` class -- ``machine.check()`` runs it under the
  active Hypothesis profile; a falsifying example prints as code that rebuilds it
  (``state = KernelMachine.configured(policy=MyPolicy)()``). While it runs, a line on the
  terminal counts its examples and kernel steps (tqdm, the extra ``mmusim[progress]``; only when
  standard error is a terminal; ``--mmusim-no-progress`` turns it off).
* ``kernel``: a booted kernel of that configuration (``main`` serves ``Kernel.post`` calls),
  whose invariants are checked after every step.
* ``runtime_machine``: the ``RuntimeMachine`` (``mmusim.testing.runtime``) of the marker's
  ``runtime_policy`` (a name of ``RUNTIME_POLICIES``, a ``RuntimeStackPolicy`` class or instance;
  default ``posix-reserve``) and ``altstack_on_new_threads`` -- ``runtime_machine.check()``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings

from mmusim._progress import StatusLine, available, isatty
from mmusim.kernel import Kernel, assert_invariants
from mmusim.testing.machine import Campaign, KernelMachine, boot_kernel
from mmusim.testing.runtime import RuntimeMachine

_SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
# Hypothesis's explain phase traces every line the failing examples run, which makes shrinking a
# kernel machine 30x slower (21 s against 0.7 s for a leak, measured); ci and dev leave it out.
NO_EXPLAIN = tuple(p for p in Phase if p != Phase.explain)

settings.register_profile(
    "ci",
    max_examples=100,
    stateful_step_count=50,
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=False,
    report_multiple_bugs=False,
    phases=NO_EXPLAIN,
    suppress_health_check=_SLOW,
)
settings.register_profile(
    "dev",
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    phases=NO_EXPLAIN,
    suppress_health_check=_SLOW,
)
settings.register_profile(
    "thorough",
    max_examples=2_000,
    stateful_step_count=100,
    deadline=None,
    suppress_health_check=_SLOW,
)

MARKER = (
    "mmusim(board='qemu_x86_64', config=(), policy=None, runtime_policy=None, "
    "altstack_on_new_threads=True): the kernel the `kernel` and `machine` fixtures boot -- a "
    "board, Kconfig fragment lines, and a StackPolicy (None: Kconfig's choice); the runtime stack "
    "policy (a name or a RuntimeStackPolicy) the `runtime_machine` fixture checks"
)
KERNEL_KEYS = ("board", "config", "policy")
RUNTIME_KEYS = ("runtime_policy", "altstack_on_new_threads")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--mmusim-no-progress",
        action="store_true",
        help="mmusim: no progress line for property campaigns (the machine fixture)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER)


def marker_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The ``mmusim`` marker's keywords (closest marker wins); unknown keywords are an error."""
    mark = request.node.get_closest_marker("mmusim")
    if mark is None:
        return {}
    if mark.args:
        pytest.fail(
            f"{request.node.nodeid}: @pytest.mark.mmusim takes keywords only "
            "(board=..., config=[...], policy=..., runtime_policy=...)",
            pytrace=False,
        )
    bad = set(mark.kwargs) - {*KERNEL_KEYS, *RUNTIME_KEYS}
    if bad:
        pytest.fail(
            f"{request.node.nodeid}: @pytest.mark.mmusim: unknown keyword(s) {sorted(bad)} "
            f"(allowed: {', '.join((*KERNEL_KEYS, *RUNTIME_KEYS))})",
            pytrace=False,
        )
    return dict(mark.kwargs)


def kernel_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The marker's keywords that configure the kernel (``board``, ``config``, ``policy``)."""
    return {k: v for k, v in marker_options(request).items() if k in KERNEL_KEYS}


@pytest.fixture
def machine(request: pytest.FixtureRequest) -> Iterator[type[KernelMachine]]:
    """The ``KernelMachine`` the ``mmusim`` marker configures; ``machine.check()`` runs it,
    with a progress line on the terminal (``campaign_line``)."""
    line = campaign_line(request)
    if line is None:
        yield KernelMachine.configured(**kernel_options(request))
        return
    KernelMachine.progress_reporter = line.update
    try:
        yield KernelMachine.configured(**kernel_options(request))
    finally:
        KernelMachine.progress_reporter = None
        line.close()


class CampaignLine:
    """A property campaign's progress, drawn on the terminal while pytest captures the test's
    output: examples, kernel steps, rate, elapsed (``mmusim._progress.StatusLine``)."""

    def __init__(self, name: str, around: Callable[[], AbstractContextManager[Any]]) -> None:
        self.name = name
        self.line = StatusLine(sys.__stderr__ or sys.stderr, f"{name}: starting", around=around)

    def update(self, c: Campaign) -> None:
        if self.line.due():
            rate = c.examples / self.line.elapsed()
            self.line.show(
                f"{self.name}: {c.examples:,} examples, {c.kernel_steps:,} kernel steps "
                f"(max {c.max_steps:,} in one), {rate:,.1f} examples/s"
            )

    def close(self) -> None:
        self.line.close()


def campaign_line(request: pytest.FixtureRequest) -> CampaignLine | None:
    """A ``CampaignLine`` for this test if one can be shown: tqdm installed, standard error a
    terminal, not ``--mmusim-no-progress``, not a pytest-xdist worker (whose output is not a
    terminal's); else None."""
    config = request.config
    if config.getoption("mmusim_no_progress") or hasattr(config, "workerinput"):
        return None
    if not available():
        return None
    capman = config.pluginmanager.getplugin("capturemanager")
    around = capman.global_and_fixture_disabled if capman is not None else nullcontext
    with around():  # pytest captures file descriptor 2 itself: ask with capturing suspended
        if not isatty(sys.__stderr__):
            return None
    return CampaignLine(request.node.name, around)


@pytest.fixture
def kernel(request: pytest.FixtureRequest) -> Kernel:
    """A booted kernel of the ``mmusim`` marker's configuration, invariants checked every step."""
    opts = kernel_options(request)
    return boot_kernel(
        opts.get("board", KernelMachine.board),
        tuple(opts.get("config", ())),
        opts.get("policy"),
        check=assert_invariants,
    )


@pytest.fixture
def runtime_machine(request: pytest.FixtureRequest) -> type[RuntimeMachine]:
    """The ``RuntimeMachine`` of the marker's ``runtime_policy`` and ``altstack_on_new_threads``;
    ``runtime_machine.check()`` runs it under the active Hypothesis profile."""
    opts = marker_options(request)
    return RuntimeMachine.configured(
        policy=opts.get("runtime_policy"),
        altstack_on_new_threads=opts.get("altstack_on_new_threads"),
    )
