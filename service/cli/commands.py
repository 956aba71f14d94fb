"""Handlers of the commands that work on the local store. Each takes (args, output)."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from ..domain.ids import new_id
from ..domain.model import IssuerRecord, OAuthClientRecord, PartnerStatus, RelationFilter, RelationStatus, SubjectType
from ..telemetry import configure_logging
from ..usecases.admin import NewIssuer
from ..usecases.callers import OPERATOR
from . import values
from .local import local, open_store, settings_from, step
from .output import CommandFailed, Output
from .views import (
    ISSUER_COLUMNS,
    KEY_COLUMNS,
    OAUTH_CLIENT_COLUMNS,
    PARTNER_COLUMNS,
    RELATION_COLUMNS,
    SIGNING_KEY_COLUMNS,
    iso,
    issuer_view,
    key_view,
    oauth_client_view,
    partner_view,
    relation_view,
    signing_key_view,
)

KEY_WARNING = "this is the only time the key is shown; store it now, it cannot be shown again"
CLIENT_SECRET_WARNING = "this is the only time the client secret is shown; store it now, it cannot be shown again"


# -- server and schema ---------------------------------------------------------------------------

def serve(args: argparse.Namespace, out: Output) -> None:
    from ..affinity import pin_this_process
    from ..server import serve as run_server
    from ..workers import serve_workers

    settings = settings_from(args, host=args.host, port=args.port, max_workers=args.max_workers,
                             metrics_port=args.metrics_port, workers=args.workers, http_port=args.http_port)
    configure_logging(settings.log_level, json_lines=settings.log_format == "json")
    try:
        if settings.worker_count > 1:
            raise SystemExit(serve_workers(settings, settings.worker_count))
        if settings.pin_workers:
            pin_this_process(0)  # before the server starts a thread
        run_server(settings)
    except RuntimeError as error:
        raise CommandFailed(str(error)) from None


def migrate(args: argparse.Namespace, out: Output) -> None:
    settings = settings_from(args)
    store = open_store(settings)
    try:
        step("migrate the store", store.migrate)
    finally:
        store.dispose()
    backend = "postgresql" if settings.effective_database_url.startswith("postgresql") else "sqlite"
    out.record({"migrated": True, "database": backend})


# -- partners ------------------------------------------------------------------------------------

def partner_create(args: argparse.Namespace, out: Output) -> None:
    with local(args) as app:
        partner = app.admin().create_partner(args.partner_id, args.name, args.grant, args.role)
    out.record(partner_view(partner), PARTNER_COLUMNS)


def partner_list(args: argparse.Namespace, out: Output) -> None:
    with local(args) as app:
        partners = app.admin().list_partners()
    out.table("partners", [partner_view(p) for p in partners], PARTNER_COLUMNS)


def partner_show(args: argparse.Namespace, out: Output) -> None:
    with local(args) as app:
        partner = app.admin().get_partner(args.partner_id)
    out.record(partner_view(partner), PARTNER_COLUMNS)


def partner_suspend(args: argparse.Namespace, out: Output) -> None:
    _set_status(args, out, PartnerStatus.SUSPENDED)


def partner_activate(args: argparse.Namespace, out: Output) -> None:
    _set_status(args, out, PartnerStatus.ACTIVE)


def _set_status(args: argparse.Namespace, out: Output, status: PartnerStatus) -> None:
    with local(args) as app:
        partner = app.admin().set_partner_status(args.partner_id, status)
    out.record(partner_view(partner), PARTNER_COLUMNS)


def partner_set_grants(args: argparse.Namespace, out: Output) -> None:
    with local(args) as app:
        partner = app.admin().set_partner_grants(args.partner_id, args.grant, args.role)
    out.record(partner_view(partner), PARTNER_COLUMNS)


# -- API keys ------------------------------------------------------------------------------------

def key_issue(args: argparse.Namespace, out: Output) -> None:
    expires_at = datetime.now(UTC) + args.expires_in if args.expires_in else None
    with local(args) as app:
        record, plaintext = app.admin().issue_api_key(
            args.partner_id, args.name, args.grant, args.role, args.customer, expires_at)
    view = {"id": record.id, "key": plaintext, **key_view(record)}
    out.record(view, [("id", "id"), ("partner", "partner_id"), ("name", "name"), ("grants", "grants"),
                      ("roles", "roles"), ("customers", "customer_numbers"), ("expires", "expires_at"),
                      ("key", "key")])
    out.warn(KEY_WARNING)


def key_revoke(args: argparse.Namespace, out: Output) -> None:
    with local(args) as app:
        record = app.admin().revoke_api_key(args.key_id)
    out.record(key_view(record), KEY_COLUMNS)


def key_list(args: argparse.Namespace, out: Output) -> None:
    with local(args) as app:
        keys = app.admin().list_api_keys(args.partner_id)
    out.table("keys", [key_view(k) for k in keys], KEY_COLUMNS)


# -- issuers and tokens --------------------------------------------------------------------------

def issuer_add(args: argparse.Namespace, out: Output) -> None:
    if args.allow_any_typ:
        out.warn("!!! --allow-any-typ: tokens of this issuer will be accepted WITHOUT the 'at+jwt' typ "
                 "header (RFC 9068); ID tokens and other JWTs of the issuer may then pass as access tokens !!!")
    with local(args) as app:
        if args.discovery is not None or args.jwks_uri is not None:
            remote = app.admin().register_new_issuer(NewIssuer(
                issuer=args.issuer, audience=args.audience, algorithms=tuple(args.alg),
                discovery_url=args.discovery or "", jwks_uri=args.jwks_uri or "",
                require_at_jwt_typ=not args.allow_any_typ, customer_claim=args.customer_claim))
            out.record(issuer_view(remote), ISSUER_COLUMNS)
            return
        jwks, sealed = _issuer_keys(args, app.settings)
        record = IssuerRecord(
            id=new_id("iss"), issuer=args.issuer, audience=args.audience, algorithms=tuple(dict.fromkeys(args.alg)),
            jwks=jwks, hmac_secret_sealed=sealed, require_at_jwt_typ=not args.allow_any_typ,
            customer_claim=args.customer_claim, created_at=datetime.now(UTC))
        record = app.admin().register_issuer(record)
    out.record(issuer_view(record), ISSUER_COLUMNS)


def _issuer_keys(args: argparse.Namespace, settings) -> tuple[dict | None, str | None]:
    """(public JWKS, None) or (None, sealed HMAC secret), from whichever source was given."""
    if args.jwks_file is not None or args.jwks is not None:
        return _jwks(args), None
    from ..keyring import load_key_encryption_key
    from ..tokens import seal_secret

    secret = (values.read_secret_file(args.hmac_secret_file) if args.hmac_secret_file is not None
              else values.read_secret_env(args.hmac_secret_env))
    _check_hmac_length(secret, args.alg)
    try:
        return None, seal_secret(secret, load_key_encryption_key(settings))
    except (ValueError, OSError) as error:
        raise CommandFailed(f"cannot seal the HMAC secret: {getattr(error, 'strerror', None) or error}") from None


_HMAC_KEY_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}


def _check_hmac_length(secret: bytes, algorithms: list[str]) -> None:
    """RFC 7518 section 3.2: the key must be at least as long as the hash output."""
    needed = max((_HMAC_KEY_BYTES.get(a, 0) for a in algorithms), default=0)
    if len(secret) < needed:
        raise CommandFailed(f"the HMAC secret has {len(secret)} bytes; {', '.join(algorithms)} needs at least "
                            f"{needed} (RFC 7518 section 3.2)")


def _jwks(args: argparse.Namespace) -> dict[str, Any]:
    from ..tokens import load_jwks

    text = values.read_text(args.jwks_file, "JWKS file") if args.jwks_file is not None else args.jwks
    try:
        return load_jwks(text)
    except (ValueError, TypeError, json.JSONDecodeError) as error:
        raise CommandFailed(f"invalid JWKS: {error}") from None


def issuer_rotate(args: argparse.Namespace, out: Output) -> None:
    jwks = _jwks(args)
    with local(args) as app:
        record = app.admin().rotate_issuer_keys(args.issuer, jwks)
    out.record(issuer_view(record), ISSUER_COLUMNS)


def issuer_refresh(args: argparse.Namespace, out: Output) -> None:
    with local(args) as app:
        record = app.admin().refresh_issuer_keys(args.issuer)
    out.record(issuer_view(record), ISSUER_COLUMNS)


def issuer_list(args: argparse.Namespace, out: Output) -> None:
    with local(args) as app:
        issuers = app.admin().list_issuers()
    out.table("issuers", [issuer_view(i) for i in issuers], ISSUER_COLUMNS)


def token_revoke(args: argparse.Namespace, out: Output) -> None:
    with local(args) as app:
        issuer = app.admin().revoke_token(args.issuer, args.jti)
    out.record({"issuer_id": issuer.id, "issuer": issuer.issuer, "jti": args.jti, "revoked": True})


# -- OAuth clients and signing keys of the token service -----------------------------------------

def oauth_client_create(args: argparse.Namespace, out: Output) -> None:
    with local(args) as app:
        client, secret = app.admin().create_oauth_client(
            args.partner_id, args.name, args.scope, args.customer, args.refresh_tokens)
    _show_client_secret(out, client, secret)


def oauth_client_list(args: argparse.Namespace, out: Output) -> None:
    with local(args) as app:
        clients = app.admin().list_oauth_clients(args.partner_id)
    out.table("clients", [oauth_client_view(c) for c in clients], OAUTH_CLIENT_COLUMNS)


def oauth_client_rotate_secret(args: argparse.Namespace, out: Output) -> None:
    with local(args) as app:
        client, secret = app.admin().rotate_oauth_client_secret(args.client_id)
    _show_client_secret(out, client, secret)


def oauth_client_revoke(args: argparse.Namespace, out: Output) -> None:
    with local(args) as app:
        client = app.admin().revoke_oauth_client(args.client_id)
    out.record(oauth_client_view(client), OAUTH_CLIENT_COLUMNS)


def _show_client_secret(out: Output, client: OAuthClientRecord, secret: str) -> None:
    """The client and its plaintext secret, this once; the warning goes to stderr."""
    view = {"client_id": client.id, "client_secret": secret, **oauth_client_view(client)}
    out.record(view, [("client_id", "client_id"), ("client_secret", "client_secret"),
                      *(column for column in OAUTH_CLIENT_COLUMNS if column[1] != "id")])
    out.warn(CLIENT_SECRET_WARNING)


def signing_key_rotate(args: argparse.Namespace, out: Output) -> None:
    with local(args) as app:
        key, previous = app.admin().rotate_signing_key()
    view = {**signing_key_view(key), "previous_kid": previous.kid if previous else None,
            "previous_publish_until": iso(previous.publish_until) if previous else None}
    out.record(view, [*SIGNING_KEY_COLUMNS, ("previous kid", "previous_kid"),
                      ("previous published until", "previous_publish_until")])


def signing_key_list(args: argparse.Namespace, out: Output) -> None:
    with local(args) as app:
        keys = app.admin().list_signing_keys()
    out.table("keys", [signing_key_view(k) for k in keys], SIGNING_KEY_COLUMNS)


# -- relations -----------------------------------------------------------------------------------

def relation_list(args: argparse.Namespace, out: Output) -> None:
    relation_filter = RelationFilter(
        partner_id=args.partner or None,
        subject_type=SubjectType(args.subject_type) if args.subject_type else None,
        subject_id=args.subject_id or None,
        status=RelationStatus(args.status) if args.status else None,
    )
    with local(args) as app:
        page, next_token = app.relations().list_relations(OPERATOR, relation_filter, args.page_size, args.page_token)
    out.table("relations", [relation_view(r) for r in page], RELATION_COLUMNS,
              extra={"next_page_token": next_token})


def relation_expire(args: argparse.Namespace, out: Output) -> None:
    with local(args) as app:
        expired = app.relations().expire_due()
    out.record({"expired": expired})
