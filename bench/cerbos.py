"""Cerbos as a baseline: the real Cerbos PDP deciding the same check as Tollgate's scenario (b).

Scenario (b) asks: does this RS256 access token, from an external issuer, carry scope `user:read`,
and does its partner (the `client_id` claim) have an active relation with the user? Cerbos answers
the same question in one CheckResources call when

- it verifies the token itself: the request hands it over as `auxData.jwt`, and Cerbos checks its
  signature (and expiry) against a local key set, the issuer's JWKS written to a file;
- a resource policy (kind `user`, action `getUser`, written to a disk store) holds a CEL rule that
  requires the token's issuer and audience, `user:read` among its scopes, and its `client_id` among
  the user's `active_partners`;
- the request carries that relation data as the user resource's attribute `active_partners` (every
  partner with an active relation to the user in the seeded store: what a caller of Cerbos has to
  look up itself before each call, since Cerbos holds no relations).

The binary is npm's `@cerbos/cerbos-linux-x64` (package.json, installed by `npm ci`); the request
and response messages are the PyPI `cerbos` package's generated modules. Cerbos runs with its
verified-token cache as shipped (256 tokens) or with it off (`auxData.jwt.cacheSize: -1`: every
call verifies the RS256 signature, like Tollgate's miss path).

Verification: Cerbos has no per-effect counter, so every body is decoded and sent once with grpcio
and must answer EFFECT_ALLOW (and one body with the token's partner left out of the relation data
must answer EFFECT_DENY), and its Prometheus metrics (`/_cerbos/metrics`) must count, over the
measured run, exactly h2load's succeeded calls as CheckResources answered OK (otel's
`rpc_server_call_duration_seconds_count`) and as successful engine checks
(`cerbos_dev_engine_check_latency_milliseconds_count{status="success"}`), and no other status.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import seed as seeding
from .h2load import grpc_frame, metrics_text
from .load import CALL_TIMEOUT, Request

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BINARY = PROJECT_ROOT / "node_modules" / "@cerbos" / "cerbos-linux-x64" / "cerbos-linux-x64"
PATH = "/cerbos.svc.v1.CerbosService/CheckResources"
METHOD = PATH.lstrip("/")
KEY_SET = "issuer"
RESOURCE_KIND, ACTION = "user", "getUser"
CALLS = "rpc_server_call_duration_seconds_count"  # otel gRPC server histogram: calls by method and status
ENGINE_CHECKS = "cerbos_dev_engine_check_latency_milliseconds_count"  # engine checks by status
SCRAPE_TIMEOUT = 10.0
START_TIMEOUT = 30.0

POLICY = """\
apiVersion: api.cerbos.dev/v1
resourcePolicy:
  version: default
  resource: {kind}
  rules:
    - actions: ["{action}"]
      effect: EFFECT_ALLOW
      roles: ["*"]
      condition:
        match:
          all:
            of:
              - expr: request.aux_data.jwt.iss == "{issuer}"
              - expr: >-
                  "{audience}" in (type(request.aux_data.jwt.aud) == string
                  ? [request.aux_data.jwt.aud] : request.aux_data.jwt.aud)
              - expr: '"user:read" in request.aux_data.jwt.scope.split(" ")'
              - expr: request.aux_data.jwt.client_id in request.resource.attr.active_partners
"""


class CerbosMissing(Exception):
    """The Cerbos binary is not installed (npm ci installs it)."""


def binary() -> Path:
    if not BINARY.is_file():
        raise CerbosMissing(f"the Cerbos binary is missing ({BINARY.relative_to(PROJECT_ROOT)}): run `npm ci` "
                            "(package.json pins @cerbos/cerbos-linux-x64) to add the Cerbos rows")
    return BINARY


def version(path: Path) -> str:
    try:
        done = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "Cerbos, version unknown"
    lines = done.stdout.strip().splitlines()
    return f"Cerbos {lines[0]}" if lines else "Cerbos, version unknown"


# -- configuration ------------------------------------------------------------------------------

def b_policies(issuer: str, audience: str) -> dict[str, str]:
    """Scenario (b)'s policy store: one resource policy, by file name."""
    return {"user.yaml": POLICY.format(kind=RESOURCE_KIND, action=ACTION, issuer=issuer, audience=audience)}


def write_config(work: Path, *, grpc_port: int, http_port: int, key_sets: dict[str, dict], policies: dict[str, str],
                 jwt_cache: bool) -> Path:
    """The policy store (`policies`: file name to policy text), one local key set per entry of
    `key_sets` (key set id to JWKS) and the server configuration under `work`; the config's path."""
    store = work / "policies"
    store.mkdir(parents=True, exist_ok=True)
    for name, text in policies.items():
        (store / name).write_text(text)
    sets = []
    for key_set_id, jwks in key_sets.items():
        keys = work / f"jwks-{key_set_id}.json"
        keys.write_text(json.dumps(jwks))
        sets.append({"id": key_set_id, "local": {"file": str(keys)}})
    jwt: dict = {"keySets": sets}
    if not jwt_cache:
        jwt["cacheSize"] = -1  # a negative size turns Cerbos's verified-token cache off
    settings = {
        "server": {"httpListenAddr": f"127.0.0.1:{http_port}", "grpcListenAddr": f"127.0.0.1:{grpc_port}"},
        "storage": {"driver": "disk", "disk": {"directory": str(store), "watchForChanges": False}},
        "auxData": {"jwt": jwt},
        "audit": {"enabled": False},
        "telemetry": {"disabled": True},
    }
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump(settings, sort_keys=False))
    return config


def command(path: Path, config: Path, cpus: str | None) -> list[str]:
    base = [str(path), "server", f"--config={config}", "--log-level=warn"]
    return ["taskset", "-c", cpus, *base] if cpus else base


def wait_ready(metrics_url: str, process: subprocess.Popen, log: Path) -> None:
    """Until Cerbos's HTTP side answers (its gRPC side starts first)."""
    health = metrics_url.replace("/_cerbos/metrics", "/_cerbos/health")
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            with urllib.request.urlopen(health, timeout=2) as response:  # noqa: S310 - our own http:// URL
                if b"SERVING" in response.read():
                    return
        except (urllib.error.URLError, OSError):
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:]) if log.exists() else ""
            raise RuntimeError(f"Cerbos did not start:\n{tail}")
        time.sleep(0.1)


# -- requests -----------------------------------------------------------------------------------

def related_partners(size: seeding.SeedSize, subject: str) -> list[str]:
    """Every partner with an active relation to `subject` (a user "u-…" or an organization "o-…")
    in the seeded layout, as the caller would look them up. Subjects are shared between partners
    (seeding.subject_id: partner p's slot j names subject (p × step + j) mod span), so the partners
    are found by solving that for p, slot by slot, rather than by scanning every partner."""
    if subject.startswith("o-"):
        kind, step, span = seeding.ACTIVE_ORGANIZATION, 17, 50_000
    else:
        kind, step, span = seeding.ACTIVE_USER, 131, 500_000
    number = int(subject[2:])
    per = size.relations_per_partner
    found: set[int] = set()
    for j in range(per):
        if seeding.relation_kind(j, per) != kind:
            continue
        for product in range((number - j) % span, step * size.partners, span):  # p × step, p < partners
            if product % step == 0 and seeding.subject_id(product // step, j, kind) == subject:
                found.add(product // step)
    return [seeding.partner_id(p) for p in sorted(found)]


def check_message(request: Request, partners: Sequence[str]):
    """The CheckResources request of one (b) request: the token as auxData, the user as the
    resource with its related partners, the token's partner as the principal."""
    from cerbos.engine.v1 import engine_pb2
    from cerbos.request.v1 import request_pb2
    from google.protobuf import struct_pb2

    related = struct_pb2.Value(list_value=struct_pb2.ListValue(
        values=[struct_pb2.Value(string_value=partner) for partner in partners]))
    resource = engine_pb2.Resource(kind=RESOURCE_KIND, id=request.user_id, attr={"active_partners": related})
    return request_pb2.CheckResourcesRequest(
        principal=engine_pb2.Principal(id=request.partner, roles=["partner"]),
        resources=[request_pb2.CheckResourcesRequest.ResourceEntry(actions=[ACTION], resource=resource)],
        aux_data=request_pb2.AuxData(jwt=request_pb2.AuxData.JWT(
            token=request.authorization.removeprefix("Bearer "), key_set_id=KEY_SET)))


@dataclass(frozen=True)
class Body:
    path: Path
    request: Request
    allow: bool  # the answer expected: EFFECT_ALLOW, or EFFECT_DENY


def write_bodies(directory: Path, name: str, requests: Sequence[Request], size: seeding.SeedSize,
                 denied: bool = False) -> list[Body]:
    """One gRPC frame per request; `denied`: the first request with its partner left out of the
    user's related partners (Cerbos must deny it)."""
    directory.mkdir(parents=True, exist_ok=True)
    bodies = []
    for i, request in enumerate(requests):
        partners = related_partners(size, request.user_id)
        if request.partner not in partners:
            raise AssertionError(f"{request.partner} has no active relation with {request.user_id} in the layout")
        path = directory / f"{name}-{i}.grpc"
        path.write_bytes(grpc_frame(check_message(request, partners).SerializeToString()))
        bodies.append(Body(path, request, True))
    if denied and requests:
        request = requests[0]
        others = [p for p in related_partners(size, request.user_id) if p != request.partner] or ["p-none"]
        path = directory / f"{name}-denied.grpc"
        path.write_bytes(grpc_frame(check_message(request, others).SerializeToString()))
        bodies.append(Body(path, request, False))
    return bodies


def check_bodies(target: str, bodies: Sequence[Body]) -> list[str]:
    """Decodes every body file, sends it with grpcio, and returns what is wrong with the answers."""
    import grpc
    from cerbos.effect.v1 import effect_pb2
    from cerbos.request.v1 import request_pb2
    from cerbos.svc.v1 import svc_pb2_grpc

    problems = []
    with grpc.insecure_channel(target) as channel:
        stub = svc_pb2_grpc.CerbosServiceStub(channel)
        for body in bodies:
            data = body.path.read_bytes()
            if data[0] != 0 or int.from_bytes(data[1:5], "big") != len(data) - 5:
                problems.append(f"{body.path.name}: not one uncompressed gRPC frame")
                continue
            expected = "EFFECT_ALLOW" if body.allow else "EFFECT_DENY"
            try:
                answer = stub.CheckResources(request_pb2.CheckResourcesRequest.FromString(data[5:]),
                                             timeout=CALL_TIMEOUT)
                effects = [effect_pb2.Effect.Name(result.actions.get(ACTION, 0)) for result in answer.results]
                outcome = ",".join(effects) or "no result"
            except grpc.RpcError as error:
                outcome = f"error:{error.code().name}"
            if outcome != expected:
                problems.append(f"{body.path.name}: grpcio check gave {outcome}, expected {expected}")
    return problems


# -- the server's counters ----------------------------------------------------------------------

def scrape(url: str) -> Counter:
    """CheckResources calls by gRPC status ("calls", status) and engine checks by status
    ("engine", status), from Cerbos's Prometheus metrics; retried for up to SCRAPE_TIMEOUT seconds."""
    from prometheus_client.parser import text_string_to_metric_families

    counts: Counter = Counter()
    for family in text_string_to_metric_families(metrics_text(url, SCRAPE_TIMEOUT)):
        for sample in family.samples:
            if sample.name == CALLS and sample.labels.get("rpc_method") == METHOD:
                counts[("calls", sample.labels.get("rpc_response_status_code", ""))] += int(sample.value)
            elif sample.name == ENGINE_CHECKS:
                counts[("engine", sample.labels.get("status", ""))] += int(sample.value)
    return counts


def counter_delta(before: Counter, after: Counter) -> Counter:
    return Counter({key: moved for key in after if (moved := after[key] - before.get(key, 0))})
