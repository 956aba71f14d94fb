# The two commands a newcomer needs are `make serve` and `make test`; both set up everything first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

HOST   ?= 127.0.0.1
PORT   ?= 50051
POLICY ?= examples/policy.yaml

.PHONY: install serve test proto clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/tollgate serve --host $(HOST) --port $(PORT) --policy $(POLICY)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

proto: $(STAMP)
	$(PY) -m service.protogen generated

clean:
	rm -rf $(VENV) build *.egg-info
