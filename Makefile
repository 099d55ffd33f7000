# Two entry points, both self-installing: `make repro` and `make test`.
VENV := .venv
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)

.PHONY: setup repro test test-quick bench reproduce

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml tools/offline_plot_template.py
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	$(BIN)/python tools/offline_plot_template.py
	touch $@

repro: setup
	dvc repro

# The whole suite, then its 10 slowest tests. test-quick leaves out the tests marked slow
# (whole dvc pipelines, the packaged Gemma, kill-and-resume runs).
test: setup
	pytest -q --durations=10

test-quick: setup
	pytest -q -m "not slow" --durations=10

# Needs `make repro` first (models/teacher, models/students). Results: docs/results.md.
bench: setup
	python -m bench.teacher_throughput
	python -m bench.student_throughput --student models/students/mlp
	python -m bench.cost_ratio

# After `make repro`: the run's metrics against the committed baseline, number by number, each
# held to a stated tolerance (bench/reproduce.py; docs/development.md#checking-a-run-against-the-baseline).
reproduce: setup
	python -m bench.reproduce
