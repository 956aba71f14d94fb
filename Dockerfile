# Tollgate: the gRPC authorization decision point (tollgate.v1 and Envoy ext_authz v3 on one port)
# and its OAuth 2 token service (HTTP).
#
#   docker build -t tollgate .
#   docker run --rm -p 50051:50051 -p 8080:8080 -p 9464:9464 -v tollgate-data:/var/lib/tollgate \
#     -e TOLLGATE_ISSUER_URL=https://auth.example.com tollgate
#   docker run --rm -v tollgate-data:/var/lib/tollgate tollgate partner list   # any other command
#
# The builder stage installs the runtime lock (requirements.txt, hash-checked) and then the project
# (service/ and the generated tollgate/ package) into a virtualenv; the runtime stage copies only
# that virtualenv and the example policy. Mount your own policy over /etc/tollgate/policy.yaml (or
# point TOLLGATE_POLICY_PATH elsewhere) and set TOLLGATE_DATABASE_URL for PostgreSQL; without it the
# SQLite file and the key-encryption key live in the /var/lib/tollgate volume.
# tests/unit/test_dockerfile.py holds this file to its promises.

FROM python:3.11.14-slim-bookworm AS builder

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# The runtime lock (`make lock`): every package, setuptools and wheel included, pinned with its hashes;
# wheels only. Resolved on Linux x86_64 (linux/amd64), where CI runs.
COPY requirements.txt ./
RUN pip install --no-cache-dir --require-hashes --only-binary :all: -r requirements.txt
COPY pyproject.toml README.md LICENSE ./
COPY service ./service
COPY generated ./generated
# Not editable: the venv must stand alone once /src is gone. Dependencies are all in place already,
# and the locked setuptools and wheel build it.
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
    && tollgate --help > /dev/null

FROM python:3.11.14-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="tollgate" \
      org.opencontainers.image.description="Central authorization decision point: gRPC Check and Envoy ext_authz v3"

# A fixed, unprivileged uid/gid so volume ownership is predictable across rebuilds.
RUN groupadd --system --gid 10001 tollgate \
    && useradd --system --uid 10001 --gid tollgate --home-dir /var/lib/tollgate --no-create-home \
       --shell /usr/sbin/nologin tollgate \
    && install -d -o tollgate -g tollgate -m 0750 /var/lib/tollgate

COPY --from=builder /opt/venv /opt/venv
COPY examples/policy.yaml /etc/tollgate/policy.yaml

# `make serve`, but listening on every interface, with the state in the volume.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TOLLGATE_HOST=0.0.0.0 \
    TOLLGATE_PORT=50051 \
    TOLLGATE_METRICS_PORT=9464 \
    TOLLGATE_HTTP_PORT=8080 \
    TOLLGATE_DATA_DIR=/var/lib/tollgate \
    TOLLGATE_POLICY_PATH=/etc/tollgate/policy.yaml

VOLUME ["/var/lib/tollgate"]
WORKDIR /var/lib/tollgate
USER 10001:10001

# 50051: gRPC (tollgate.v1.*, envoy.service.auth.v3.Authorization, grpc.health.v1, reflection).
# 8080: the OAuth endpoints, /oauth/token and the others (TOLLGATE_HTTP_PORT=0 turns them off); set
# TOLLGATE_ISSUER_URL to the URL clients reach them at.
# 9464: Prometheus /metrics (TOLLGATE_METRICS_PORT=0 turns it off).
EXPOSE 50051 8080 9464

# grpc.health.v1 Check on the overall service (""): exit 0 only when SERVING. It follows
# TOLLGATE_PORT; a port given with `serve --port` instead is not seen here.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; channel = grpc.insecure_channel('127.0.0.1:' + os.environ.get('TOLLGATE_PORT', '50051')); reply = g.HealthStub(channel).Check(h.HealthCheckRequest(service=''), timeout=3); sys.exit(0 if reply.status == h.HealthCheckResponse.SERVING else 1)"]

# Exec form: tollgate is PID 1 and gets SIGTERM itself (it drains in-flight calls, then exits 0).
ENTRYPOINT ["tollgate"]
CMD ["serve"]
