"""The argument parser. Handlers are named "module.function" and imported only when run."""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import NoReturn

from ..domain.model import RelationStatus, SubjectType
from ..version import VERSION
from .values import default_target, duration

DEFAULT_TARGET_HELP = "server address host:port (default: $TOLLGATE_TARGET or 127.0.0.1:50051)"


class UsageError(Exception):
    def __init__(self, message: str, usage: str) -> None:
        super().__init__(message)
        self.message = message
        self.usage = usage


class Parser(argparse.ArgumentParser):
    """Raises UsageError instead of exiting, so main() reports it like every other error."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, self.format_usage())

    def parse_known_args(self, args=None, namespace=None):
        """Refuses what this (sub)command does not know, so the usage shown is its own: argparse
        would hand a subcommand's unknown options up to the top level, which shows its usage."""
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


def _global_options() -> argparse.ArgumentParser:
    """Accepted on every (sub)command; SUPPRESS keeps a later parser from resetting an earlier value."""
    common = Parser(add_help=False)
    group = common.add_argument_group("global options")
    group.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                       help="machine-readable output: one JSON document on stdout")
    return common


def _store_options() -> argparse.ArgumentParser:
    """Accepted by the commands that open the store or read the policy (not by `client`, which calls a server)."""
    store = Parser(add_help=False)
    group = store.add_argument_group("store and policy")
    group.add_argument("--database-url", metavar="URL", default=argparse.SUPPRESS,
                       help="sqlite:///… or postgresql+psycopg://… (default: $TOLLGATE_DATABASE_URL, "
                            "else a SQLite file in the data dir)")
    group.add_argument("--data-dir", metavar="DIR", default=argparse.SUPPRESS,
                       help="data directory (default: $TOLLGATE_DATA_DIR or data/ in the project)")
    group.add_argument("--policy", metavar="PATH", default=argparse.SUPPRESS,
                       help="policy YAML file (default: $TOLLGATE_POLICY_PATH or the project's examples/policy.yaml)")
    return store


GLOBAL = _global_options()
STORE = _store_options()


def _client_options() -> argparse.ArgumentParser:
    client = Parser(add_help=False)
    group = client.add_argument_group("server and credential")
    group.add_argument("--target", default=default_target(), metavar="HOST:PORT", help=DEFAULT_TARGET_HELP)
    group.add_argument("--tls-ca", metavar="PEM", help="speak TLS, trusting this CA file")
    group.add_argument("--tls-client-cert", metavar="PEM", help="client certificate for mutual TLS")
    group.add_argument("--tls-client-key", metavar="PEM", help="client key for mutual TLS")
    credential = group.add_mutually_exclusive_group()
    credential.add_argument("--key", metavar="KEY", help="an API key (default: $TOLLGATE_CREDENTIAL)")
    credential.add_argument("--token", metavar="JWT", help="a JWT access token (default: $TOLLGATE_CREDENTIAL)")
    return client


def _group(subparsers, name: str, help_text: str, parents=(STORE,)):
    parser = subparsers.add_parser(name, help=help_text, description=help_text, parents=[GLOBAL, *parents])
    return parser.add_subparsers(dest=f"{name}_command", required=True, metavar="COMMAND")


def _leaf(subparsers, name: str, handler: str, help_text: str, parents=(STORE,)) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help=help_text, description=help_text, parents=[GLOBAL, *parents])
    parser.set_defaults(handler=handler)
    return parser


def _grant_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--grant", action="append", default=[], metavar="GRANT",
                        help="a permission such as user:read or read:user, or admin (repeatable)")
    parser.add_argument("--role", action="append", default=[], metavar="ROLE",
                        help="a role from the policy file (repeatable)")


def _relation_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--partner", metavar="PARTNER_ID", help="only this partner's relations")
    parser.add_argument("--subject-type", choices=[t.value for t in SubjectType],
                        help="only relations to users, or only to organizations")
    parser.add_argument("--subject-id", metavar="ID", help="only relations to this user or organization")
    parser.add_argument("--status", choices=[s.value for s in RelationStatus], help="only relations in this status")
    parser.add_argument("--page-size", type=int, default=0, metavar="N", help="1..500 (default 50)")
    parser.add_argument("--page-token", default="", metavar="TOKEN",
                        help="the next_page_token of the previous page, for the page after it")


def build_parser() -> Parser:
    parser = Parser(prog="tollgate", parents=[GLOBAL],
                    description="Tollgate: the central authorization decision point.")
    parser.add_argument("--version", action="version", version=f"tollgate {VERSION}",
                        help="print the version and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _server_commands(commands)
    _partner_commands(_group(commands, "partner", "manage partners (client applications)"))
    _key_commands(_group(commands, "key", "issue, list and revoke API keys"))
    _issuer_commands(_group(commands, "issuer", "register trusted JWT issuers"))
    _token_commands(_group(commands, "token", "revoke JWTs"))
    _oauth_client_commands(_group(commands, "oauth-client", "manage OAuth clients of the token service"))
    _signing_key_commands(_group(commands, "signing-key", "rotate the keys Tollgate signs its tokens with"))
    _relation_commands(_group(commands, "relation", "inspect and sweep relations in the store"))
    _client_commands(_group(commands, "client", "call a running server over gRPC", parents=()))
    return parser


def _server_commands(commands) -> None:
    serve = _leaf(commands, "serve", "commands.serve", "run the gRPC server until SIGTERM/SIGINT")
    serve.add_argument("--host", help="address to bind (default: $TOLLGATE_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default: $TOLLGATE_PORT or 50051)")
    serve.add_argument("--max-workers", type=int, help="RPC worker threads (default: $TOLLGATE_MAX_WORKERS or 16)")
    serve.add_argument("--workers", type=int,
                       help="server processes sharing the port, 0 for one per core (default: $TOLLGATE_WORKERS or 0)")
    serve.add_argument("--metrics-port", type=int,
                       help="Prometheus /metrics port, 0 to turn off (default: $TOLLGATE_METRICS_PORT or 9464)")
    serve.add_argument("--http-port", type=int,
                       help="the OAuth endpoints' HTTP port, 0 to turn off (default: $TOLLGATE_HTTP_PORT or 8080)")
    _leaf(commands, "migrate", "commands.migrate", "create or upgrade the database schema")


def _partner_commands(partner) -> None:
    create = _leaf(partner, "create", "commands.partner_create",
                   "create a partner (without --grant or --role: the policy's default_role, if any)")
    create.add_argument("partner_id", metavar="ID")
    create.add_argument("--name", required=True, help="the partner's display name")
    _grant_options(create)
    _leaf(partner, "list", "commands.partner_list", "list partners")
    for name, help_text in (("show", "show one partner"),
                            ("suspend", "suspend a partner (all its credentials are refused)"),
                            ("activate", "reactivate a suspended partner")):
        _leaf(partner, name, f"commands.partner_{name}", help_text).add_argument("partner_id", metavar="ID")
    set_grants = _leaf(partner, "set-grants", "commands.partner_set_grants", "replace a partner's grants and roles")
    set_grants.add_argument("partner_id", metavar="ID")
    _grant_options(set_grants)


def _key_commands(key) -> None:
    issue = _leaf(key, "issue", "commands.key_issue", "issue an API key (shown once)")
    issue.add_argument("partner_id", metavar="PARTNER_ID")
    issue.add_argument("--name", default="", help="a label for the key")
    _grant_options(issue)
    issue.add_argument("--customer", action="append", default=[], metavar="NUMBER",
                       help="a customer number the key may act for (repeatable)")
    issue.add_argument("--expires-in", type=duration, metavar="DURATION", help="e.g. 30d, 12h, 15m")
    _leaf(key, "revoke", "commands.key_revoke", "revoke an API key").add_argument("key_id", metavar="KEY_ID")
    _leaf(key, "list", "commands.key_list", "list a partner's keys").add_argument("partner_id", metavar="PARTNER_ID")


def _jwks_source(parser: argparse.ArgumentParser, *, new_issuer: bool):
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--jwks-file", metavar="PATH", help="a public JWK Set file")
    source.add_argument("--jwks", metavar="JSON", help="a public JWK Set as JSON")
    if new_issuer:
        source.add_argument("--hmac-secret-file", metavar="PATH", help="a file holding the HS* shared secret")
        source.add_argument("--hmac-secret-env", metavar="VAR", help="an environment variable holding it")
        source.add_argument("--discovery", metavar="URL",
                            help="the issuer's OpenID Connect discovery URL: its jwks_uri is fetched and kept fresh")
        source.add_argument("--jwks-uri", metavar="URL", help="the URL of the issuer's JWK Set, fetched and kept fresh")


def _issuer_commands(issuer) -> None:
    add = _leaf(issuer, "add", "commands.issuer_add", "register a JWT issuer")
    add.add_argument("issuer", metavar="ISS", help="the exact iss claim value")
    add.add_argument("--audience", required=True, metavar="AUD", help="the aud the tokens must carry")
    add.add_argument("--alg", action="append", required=True, metavar="ALG", help="an accepted algorithm (repeatable)")
    _jwks_source(add, new_issuer=True)
    add.add_argument("--allow-any-typ", action="store_true", help="accept tokens without typ at+jwt (unsafe)")
    add.add_argument("--customer-claim", default="customer_numbers", metavar="NAME",
                     help="the claim holding customer numbers (default: customer_numbers)")
    rotate = _leaf(issuer, "rotate", "commands.issuer_rotate", "replace an issuer's JWKS")
    rotate.add_argument("issuer", metavar="ISS_OR_ID")
    _jwks_source(rotate, new_issuer=False)
    refresh = _leaf(issuer, "refresh", "commands.issuer_refresh", "fetch a remote issuer's keys now")
    refresh.add_argument("issuer", metavar="ISS_OR_ID")
    _leaf(issuer, "list", "commands.issuer_list", "list issuers with their keys' fetch status (never secrets)")


def _token_commands(token) -> None:
    revoke = _leaf(token, "revoke", "commands.token_revoke", "revoke one JWT by its jti")
    revoke.add_argument("--issuer", required=True, metavar="ISS", help="the issuer's iss or id")
    revoke.add_argument("--jti", required=True, help="the token's jti claim")


def _oauth_client_commands(client) -> None:
    create = _leaf(client, "create", "commands.oauth_client_create", "create an OAuth client (secret shown once)")
    create.add_argument("partner_id", metavar="PARTNER")
    create.add_argument("--name", default="", help="a label for the client")
    create.add_argument("--scope", action="append", default=[], metavar="SCOPE",
                        help="a grant its tokens may carry, within the partner's (repeatable; default: the "
                             "partner's grants)")
    create.add_argument("--refresh-tokens", action="store_true",
                        help="also return refresh tokens from client_credentials grants")
    create.add_argument("--customer", action="append", default=[], metavar="NUMBER",
                        help="a customer number its tokens carry (repeatable)")
    _leaf(client, "list", "commands.oauth_client_list", "list OAuth clients (never secrets)").add_argument(
        "partner_id", metavar="PARTNER", nargs="?", help="only this partner's clients")
    _leaf(client, "rotate-secret", "commands.oauth_client_rotate_secret",
          "replace a client's secret (the new one is shown once)").add_argument("client_id", metavar="CLIENT_ID")
    _leaf(client, "revoke", "commands.oauth_client_revoke",
          "revoke an OAuth client and every token it holds").add_argument("client_id", metavar="CLIENT_ID")


def _signing_key_commands(signing_key) -> None:
    _leaf(signing_key, "rotate", "commands.signing_key_rotate",
          "make a new signing key; the old one stays published until its tokens expire")
    _leaf(signing_key, "list", "commands.signing_key_list", "list signing keys (public halves only)")


def _relation_commands(relation) -> None:
    _relation_filters(_leaf(relation, "list", "commands.relation_list", "list relations (as the operator)"))
    _leaf(relation, "expire", "commands.relation_expire", "record the expiry of overdue relations once")


def _client_commands(client) -> None:
    remote = [_client_options()]
    check = _leaf(client, "check", "client.check", "ask for a decision (exit 0 even when denied)", remote)
    check.add_argument("--operation", required=True, metavar="OP", help="the operation, as named in the policy")
    check.add_argument("--permission", action="append", default=[], metavar="P",
                       help="a permission the operation needs, for one the policy does not name (repeatable)")
    for name in ("user", "organization", "customer"):
        check.add_argument(f"--{name}-id", default="", help=f"the {name} the request touches (resource.{name}_id)")
    check.add_argument("--explain", action="store_true",
                       help="also show the steps evaluated, in order, with the facts each used")
    request = _leaf(client, "request-relation", "client.request_relation", "request a user relation", remote)
    request.add_argument("--user-id", required=True, help="the user the partner asks to act for")
    request.add_argument("--partner-id", default="", help="platform callers: the partner it is for")
    for name, help_text in (("approve", "approve a pending user relation (platform)"),
                            ("reject", "reject a pending user relation (platform)"),
                            ("revoke", "revoke an active relation")):
        action = _leaf(client, f"{name}-relation", f"client.{name}_relation", help_text, remote)
        action.add_argument("relation_id", metavar="RELATION_ID")
        action.add_argument("--reason", default="", help="why, recorded with the relation's event")
        if name == "approve":
            action.add_argument("--ttl", type=duration, metavar="DURATION", help="relation lifetime, e.g. 90d")
    issue = _leaf(client, "issue-connect-token", "client.issue_connect_token",
                  "issue an organization connect token (platform)", remote)
    issue.add_argument("--organization-id", required=True, help="the organization the token connects to")
    issue.add_argument("--issued-by", default="", metavar="ADMIN", help="the organization admin handing it out")
    issue.add_argument("--ttl", type=duration, metavar="DURATION", help="how long the token stays claimable, e.g. 24h")
    issue.add_argument("--relation-ttl", type=duration, metavar="DURATION",
                       help="lifetime of the relation the claim creates, e.g. 365d")
    claim = _leaf(client, "claim-organization", "client.claim_organization", "claim a connect token", remote)
    claim.add_argument("connect_token", metavar="TOKEN")
    _leaf(client, "get-relation", "client.get_relation", "show a relation and its events",
          remote).add_argument("relation_id", metavar="RELATION_ID")
    _relation_filters(_leaf(client, "list-relations", "client.list_relations", "list relations", remote))
    _reflection_commands(client, remote)


def _reflection_commands(client, remote) -> None:
    """Any service the server exposes, through server reflection (service/cli/reflection.py)."""
    describe = _leaf(client, "describe", "reflection.describe", "list the server's services, or describe a "
                     "service, method, message or enum (server reflection)", remote)
    describe.add_argument("symbol", nargs="?", metavar="SERVICE|METHOD|MESSAGE",
                          help="e.g. tollgate.v1.Authorization, tollgate.v1.Authorization/Check or "
                               "tollgate.v1.CheckRequest (default: list the services)")
    call = _leaf(client, "call", "reflection.call", "call a method of the server with a JSON request; the answer "
                 "is printed as JSON (server reflection)", remote)
    call.add_argument("method", metavar="METHOD", help="e.g. tollgate.v1.Authorization/Check")
    call.add_argument("request", metavar="JSON", nargs="?", default="{}",
                      help="the request in protobuf's JSON mapping, or - to read it from standard input (default: {})")
    for parser in (describe, call):
        parser.add_argument("--header", action="append", default=[], metavar="NAME:VALUE",
                            help="metadata to send with each call, e.g. 'x-request-id: 42' (repeatable)")
        parser.add_argument("--timeout", type=duration, default=timedelta(seconds=10), metavar="DURATION",
                            help="deadline of each call, e.g. 30s (default: 10s)")
