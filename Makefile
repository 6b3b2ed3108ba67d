# The two set-up commands of the README. Each installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint install

$(BIN)/llmjobs: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/llmjobs

# The main job, on the embedded SQLite default.
run: install
	$(BIN)/llmjobs demo

# Lint, then every test (PostgreSQL tests need LLMJOBS_TEST_PG_URL; .ci/run provides it):
# the quick ones two at a time, then the browser ones two at a time in processes of their own
# (Playwright's driver keeps an event loop running in its process), then the multi-process
# ones (marked slow) one at a time, since they time workers, leases and restarts on the
# machine's cores; beside them, the SQLite runs of those that mostly wait out the clock
# (marked clock: they touch no PostgreSQL server, which one slow test restarts), whose output
# follows.
test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -n 2 -m "not slow and not browser"
	$(BIN)/pytest -n 2 -m browser
	log=$$(mktemp); \
	$(BIN)/pytest -m "clock and not postgres" >$$log 2>&1 & beside=$$!; \
	$(BIN)/pytest -m "slow and not (clock and not postgres)"; serial=$$?; \
	wait $$beside; clock=$$?; cat $$log; rm -f $$log; \
	[ $$serial -eq 0 ] && [ $$clock -eq 0 ]

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
