"""benchmarks/bench_stacks.py runs (a smoke run with tiny parameters; not a timed test)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from mmusim.runtime.policies import RUNTIME_POLICIES

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_stacks.py"


def test_bench_stacks_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("bench_stacks", BENCH)
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--live", "3", "--cycles", "5", "--host-cycles", "5", "--repeat", "1"])
    out = capsys.readouterr().out
    for name in RUNTIME_POLICIES:
        assert out.count(name) == 2, out  # a rate row and a cost row
    assert "ratio" in out and "per-stack costs" in out
