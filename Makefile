# The README's quick start: `make demo` and `make test`. Both create the virtualenv on first use.
VENV   ?= .venv
PYTHON ?= python3
BIN     = $(VENV)/bin

.PHONY: demo test lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,dev,progress,dask]'
	touch $@

# The main job on the bundled default: run every bundled scenario (Zephyr's mapped-stack tests
# ported, the #119098 pair, the toggle-off twins) and print the verdicts.
demo: $(BIN)/.installed
	$(BIN)/mmusim run

# A real browser for the test of `mmusim view`'s page: Debian's Chromium and its ChromeDriver
# (apt-get as root, else through sudo), installed once if they are not there yet.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
BROWSER_PACKAGES = chromium chromium-driver
$(BIN)/.browser: | $(BIN)/.installed
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $(SUDO) apt-get install -y -q $(BROWSER_PACKAGES) >/dev/null \
	  || { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q $(BROWSER_PACKAGES) >/dev/null; }; \
	fi
	chromium --version && chromedriver --version
	touch $@

# The test suite, differential tests against Unicorn and the browser test included. pytest's exit
# code 5 (no tests collected) is turned into a failure: a suite that ran nothing has not passed.
# The tests run on every core (pytest-xdist); `make test TEST_WORKERS=0` runs them in one process.
TEST_WORKERS ?= auto
test: $(BIN)/.installed $(BIN)/.browser
	$(BIN)/pytest -n $(TEST_WORKERS); rc=$$?; if [ $$rc -eq 5 ]; then echo "make test: no tests collected" >&2; exit 1; fi; exit $$rc

lint: $(BIN)/.installed
	$(BIN)/ruff check mmusim tests benchmarks
	$(BIN)/ruff format --check mmusim tests benchmarks
	$(BIN)/mypy mmusim

# Benchmarks against volatility3 and the host kernel (not part of CI; see benchmarks/README.md).
bench: $(BIN)/.installed
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/bench_translate.py
	$(BIN)/python benchmarks/bench_cli.py
	$(BIN)/python benchmarks/bench_kernel_cycle.py
	$(BIN)/python benchmarks/bench_explore.py
	$(BIN)/python benchmarks/bench_machine.py
	$(BIN)/python benchmarks/bench_stacks.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
