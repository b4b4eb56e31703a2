"""A ten-line property test of a custom stack policy, with the mmusim pytest plugin."""

import pytest
from lower_guard import LowerGuardPolicy


@pytest.mark.mmusim(policy=LowerGuardPolicy)
def test_lower_guard_policy(machine):
    machine.check()
