# Two entry points: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test install clean

$(STAMP): requirements.txt setup.py pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	# bert4keras pins keras<=2.3.1 (obsolete); it runs on tf_keras, so skip its deps.
	$(PY) -m pip install -q --no-deps bert4keras==0.11.5
	# PYTHONWARNINGS: setuptools prints a boxed notice on every editable install; it is advice, not a fault.
	PYTHONWARNINGS=ignore $(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

$(TEST_STAMP): $(STAMP) requirements-test.txt
	$(PY) -m pip install -q -r requirements-test.txt
	touch $(TEST_STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m roformer_sim_ft.demo

# -rs: a green run that skipped tests says which and why (only real-data tests may skip: ../shared absent).
# -n logical: one pytest process per logical core (at most TEST_WORKERS_MAX: each holds its own TensorFlow);
# --dist loadscope keeps a module's tests, and its module fixtures, in one process.
# `make test TEST_WORKERS=0` runs them in this process, one after another.
TEST_WORKERS ?= logical
TEST_WORKERS_MAX ?= 4
test: $(TEST_STAMP)
	$(PY) -m pytest -q -rs -n $(TEST_WORKERS) --maxprocesses $(TEST_WORKERS_MAX) --dist loadscope tests

clean:
	rm -rf $(VENV) demo_out build *.egg-info
