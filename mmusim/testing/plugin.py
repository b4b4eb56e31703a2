"""The pytest plugin of ``mmusim.testing`` (registered through the ``pytest11`` entry point, so
installing mmusim is enough).

* Hypothesis profiles ``ci`` (deterministic: ``derandomize``, no example database), ``dev`` and
  ``thorough``; pick one with ``pytest --hypothesis-profile=ci``. A conftest may re-register them.
* The ``mmusim`` marker configures the fixtures: ``@pytest.mark.mmusim(board="qemu_x86_64",
  config=["CONFIG_USERSPACE=y"], policy=MyPolicy)``; without it, the defaults of ``KernelMachine``.
* ``machine``: the configured ``KernelMachine`` class -- ``machine.check()`` runs it under the
  active Hypothesis profile; a falsifying example prints as code that rebuilds it
  (``state = KernelMachine.configured(policy=MyPolicy)()``).
* ``kernel``: a booted kernel of that configuration (``main`` serves ``Kernel.post`` calls),
  whose invariants are checked after every step.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings

from mmusim.kernel import Kernel, assert_invariants
from mmusim.testing.machine import KernelMachine, boot_kernel

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
    "mmusim(board='qemu_x86_64', config=(), policy=None): the kernel the `kernel` and `machine` "
    "fixtures boot -- a board, Kconfig fragment lines, and a StackPolicy (None: Kconfig's choice)"
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
            "(board=..., config=[...], policy=...)",
            pytrace=False,
        )
    bad = set(mark.kwargs) - {"board", "config", "policy"}
    if bad:
        pytest.fail(
            f"{request.node.nodeid}: @pytest.mark.mmusim: unknown keyword(s) {sorted(bad)} "
            "(allowed: board, config, policy)",
            pytrace=False,
        )
    return dict(mark.kwargs)


@pytest.fixture
def machine(request: pytest.FixtureRequest) -> type[KernelMachine]:
    """The ``KernelMachine`` the ``mmusim`` marker configures; ``machine.check()`` runs it."""
    return KernelMachine.configured(**marker_options(request))


@pytest.fixture
def kernel(request: pytest.FixtureRequest) -> Kernel:
    """A booted kernel of the ``mmusim`` marker's configuration, invariants checked every step."""
    opts = marker_options(request)
    return boot_kernel(
        opts.get("board", KernelMachine.board),
        tuple(opts.get("config", ())),
        opts.get("policy"),
        check=assert_invariants,
    )
