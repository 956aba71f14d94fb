"""docs/envoy.md's mutual-TLS cluster example is one Envoy loads: merged into docs/envoy.yaml's
`tollgate` cluster, the whole bootstrap still parses into Envoy's v3 protos and passes the
validation rules tests/unit/test_envoy_config.py checks."""

from __future__ import annotations

import re

import pytest
import yaml
from envoy.config.bootstrap.v3 import bootstrap_pb2
from google.protobuf import json_format

from tests.unit.test_envoy_config import ENVOY_MD, ENVOY_YAML, register, type_names, unpack, validation_problems

UPSTREAM_TLS = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"


@pytest.fixture(scope="module")
def example() -> dict:
    blocks = re.findall(r"```yaml\n(.*?)```", ENVOY_MD.read_text(), re.DOTALL)
    (block,) = [block for block in blocks if UPSTREAM_TLS in block]
    (cluster,) = yaml.safe_load(block)
    return cluster


@pytest.fixture(scope="module")
def bootstrap(example) -> bootstrap_pb2.Bootstrap:
    document = yaml.safe_load(ENVOY_YAML.read_text())
    (cluster,) = [c for c in document["static_resources"]["clusters"] if c["name"] == example["name"]]
    cluster.update(example)
    for full_name in set(type_names(document)):
        register(full_name)
    return json_format.ParseDict(document, bootstrap_pb2.Bootstrap())


def test_the_example_fits_envoy_yaml_and_passes_envoys_load_time_validation(bootstrap):
    assert validation_problems(bootstrap) == []


def test_the_example_presents_a_client_certificate_and_verifies_tollgate_on_the_mtls_port(bootstrap):
    (cluster,) = [c for c in bootstrap.static_resources.clusters if c.name == "tollgate"]
    assert cluster.transport_socket.typed_config.type_url.endswith(UPSTREAM_TLS)
    context = unpack(cluster.transport_socket.typed_config).common_tls_context
    (certificate,) = context.tls_certificates
    assert certificate.certificate_chain.filename and certificate.private_key.filename
    assert context.validation_context.trusted_ca.filename
    assert [m.matcher.exact for m in context.validation_context.match_typed_subject_alt_names] == ["tollgate"]
    assert list(context.alpn_protocols) == ["h2"], "gRPC over TLS negotiates HTTP/2"
    ports = [e.endpoint.address.socket_address.port_value
             for group in cluster.load_assignment.endpoints for e in group.lb_endpoints]
    assert ports == [50052]
