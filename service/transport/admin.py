"""tollgate.v1.Admin: authenticate the caller, translate, call the use case, translate back.

Whether the caller may administer (an admin credential) and the audit trail are the use case's
business; this module only converts messages.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from google.protobuf import timestamp_pb2
from tollgate.v1 import admin_pb2, admin_pb2_grpc

from ..domain.errors import InvalidRequest
from ..domain.model import (
    AdminAuditRecord,
    ApiKeyRecord,
    IssuerRecord,
    OAuthClientRecord,
    PartnerRecord,
    PartnerStatus,
    SigningKeyRecord,
)
from ..telemetry import Telemetry
from ..usecases.admin import AdminService, AuditQuery, NewIssuer, key_source
from ..usecases.callers import Caller, CallerAuthenticator
from ..usecases.remote_keys import key_ids
from .convert import timestamp
from .errors import translate_errors
from .metadata import credential_headers

_STATUSES = {PartnerStatus.ACTIVE: admin_pb2.PARTNER_STATUS_ACTIVE,
             PartnerStatus.SUSPENDED: admin_pb2.PARTNER_STATUS_SUSPENDED}
_STATUSES_BACK = {v: k for k, v in _STATUSES.items()}


class AdminServicer(admin_pb2_grpc.AdminServicer):
    def __init__(self, admin: AdminService, callers: CallerAuthenticator, telemetry: Telemetry) -> None:
        self._admin = admin
        self._callers = callers
        self._telemetry = telemetry

    def _caller(self, context) -> Caller:
        return self._callers.authenticate(*credential_headers(context))

    # -- partners --------------------------------------------------------------------------------

    @translate_errors
    def CreatePartner(self, request: admin_pb2.CreatePartnerRequest, context) -> admin_pb2.CreatePartnerResponse:
        partner = self._admin.create_partner(request.partner_id, request.name, list(request.grants),
                                             list(request.roles), caller=self._caller(context))
        return admin_pb2.CreatePartnerResponse(partner=partner_to_proto(partner))

    @translate_errors
    def GetPartner(self, request: admin_pb2.GetPartnerRequest, context) -> admin_pb2.GetPartnerResponse:
        partner = self._admin.get_partner(request.partner_id, caller=self._caller(context))
        return admin_pb2.GetPartnerResponse(partner=partner_to_proto(partner))

    @translate_errors
    def ListPartners(self, request: admin_pb2.ListPartnersRequest, context) -> admin_pb2.ListPartnersResponse:
        partners = self._admin.list_partners(caller=self._caller(context))
        return admin_pb2.ListPartnersResponse(partners=[partner_to_proto(p) for p in partners])

    @translate_errors
    def SetPartnerStatus(self, request: admin_pb2.SetPartnerStatusRequest,
                         context) -> admin_pb2.SetPartnerStatusResponse:
        partner = self._admin.set_partner_status(request.partner_id, _STATUSES_BACK.get(request.status),
                                                 caller=self._caller(context))
        return admin_pb2.SetPartnerStatusResponse(partner=partner_to_proto(partner))

    @translate_errors
    def SetPartnerGrants(self, request: admin_pb2.SetPartnerGrantsRequest,
                         context) -> admin_pb2.SetPartnerGrantsResponse:
        partner = self._admin.set_partner_grants(request.partner_id, list(request.grants), list(request.roles),
                                                 caller=self._caller(context))
        return admin_pb2.SetPartnerGrantsResponse(partner=partner_to_proto(partner))

    # -- API keys --------------------------------------------------------------------------------

    @translate_errors
    def IssueApiKey(self, request: admin_pb2.IssueApiKeyRequest, context) -> admin_pb2.IssueApiKeyResponse:
        caller = self._caller(context)
        record, plaintext = self._admin.issue_api_key(
            request.partner_id, request.name, list(request.grants), list(request.roles),
            list(request.customer_numbers), _time_or_none(request, "expire_time"), caller=caller)
        return admin_pb2.IssueApiKeyResponse(api_key=api_key_to_proto(record), key=plaintext)

    @translate_errors
    def RevokeApiKey(self, request: admin_pb2.RevokeApiKeyRequest, context) -> admin_pb2.RevokeApiKeyResponse:
        record = self._admin.revoke_api_key(request.key_id, caller=self._caller(context))
        return admin_pb2.RevokeApiKeyResponse(api_key=api_key_to_proto(record))

    @translate_errors
    def ListApiKeys(self, request: admin_pb2.ListApiKeysRequest, context) -> admin_pb2.ListApiKeysResponse:
        keys = self._admin.list_api_keys(request.partner_id, caller=self._caller(context))
        return admin_pb2.ListApiKeysResponse(api_keys=[api_key_to_proto(k) for k in keys])

    # -- issuers and tokens ----------------------------------------------------------------------

    @translate_errors
    def RegisterIssuer(self, request: admin_pb2.RegisterIssuerRequest, context) -> admin_pb2.RegisterIssuerResponse:
        caller = self._caller(context)
        source = request.WhichOneof("keys")
        new = NewIssuer(
            issuer=request.issuer, audience=request.audience, algorithms=tuple(request.algorithms),
            jwks=request.jwks if source == "jwks" else None,
            hmac_secret=request.hmac_secret if source == "hmac_secret" else None,
            jwks_uri=request.jwks_uri if source == "jwks_uri" else "",
            discovery_url=request.discovery_url if source == "discovery_url" else "",
            require_at_jwt_typ=not request.allow_any_typ, customer_claim=request.customer_claim)
        issuer = self._admin.register_new_issuer(new, caller=caller)
        return admin_pb2.RegisterIssuerResponse(issuer=issuer_to_proto(issuer))

    @translate_errors
    def RotateIssuerKeys(self, request: admin_pb2.RotateIssuerKeysRequest,
                         context) -> admin_pb2.RotateIssuerKeysResponse:
        issuer = self._admin.rotate_issuer_keys(request.issuer, request.jwks, caller=self._caller(context))
        return admin_pb2.RotateIssuerKeysResponse(issuer=issuer_to_proto(issuer))

    @translate_errors
    def RefreshIssuerKeys(self, request: admin_pb2.RefreshIssuerKeysRequest,
                          context) -> admin_pb2.RefreshIssuerKeysResponse:
        issuer = self._admin.refresh_issuer_keys(request.issuer, caller=self._caller(context))
        return admin_pb2.RefreshIssuerKeysResponse(issuer=issuer_to_proto(issuer))

    @translate_errors
    def ListIssuers(self, request: admin_pb2.ListIssuersRequest, context) -> admin_pb2.ListIssuersResponse:
        issuers = self._admin.list_issuers(caller=self._caller(context))
        return admin_pb2.ListIssuersResponse(issuers=[issuer_to_proto(i) for i in issuers])

    @translate_errors
    def ListRoles(self, request: admin_pb2.ListRolesRequest, context) -> admin_pb2.ListRolesResponse:
        roles = self._admin.list_roles(caller=self._caller(context))
        return admin_pb2.ListRolesResponse(roles=[admin_pb2.Role(name=name, grants=grants) for name, grants in roles])

    @translate_errors
    def RevokeToken(self, request: admin_pb2.RevokeTokenRequest, context) -> admin_pb2.RevokeTokenResponse:
        caller = self._caller(context)
        issuer = self._admin.revoke_token(request.issuer, request.jti, _time_or_none(request, "expire_time"),
                                          caller=caller)
        return admin_pb2.RevokeTokenResponse(issuer_id=issuer.id, jti=request.jti)

    # -- OAuth clients and signing keys of the token service -------------------------------------

    @translate_errors
    def CreateOAuthClient(self, request: admin_pb2.CreateOAuthClientRequest,
                          context) -> admin_pb2.CreateOAuthClientResponse:
        caller = self._caller(context)
        client, secret = self._admin.create_oauth_client(
            request.partner_id, request.name, list(request.scopes), list(request.customer_numbers),
            request.refresh_tokens, caller=caller)
        return admin_pb2.CreateOAuthClientResponse(client=oauth_client_to_proto(client), client_secret=secret)

    @translate_errors
    def ListOAuthClients(self, request: admin_pb2.ListOAuthClientsRequest,
                         context) -> admin_pb2.ListOAuthClientsResponse:
        clients = self._admin.list_oauth_clients(request.partner_id or None, caller=self._caller(context))
        return admin_pb2.ListOAuthClientsResponse(clients=[oauth_client_to_proto(c) for c in clients])

    @translate_errors
    def RotateOAuthClientSecret(self, request: admin_pb2.RotateOAuthClientSecretRequest,
                                context) -> admin_pb2.RotateOAuthClientSecretResponse:
        client, secret = self._admin.rotate_oauth_client_secret(request.client_id, caller=self._caller(context))
        return admin_pb2.RotateOAuthClientSecretResponse(client=oauth_client_to_proto(client), client_secret=secret)

    @translate_errors
    def RevokeOAuthClient(self, request: admin_pb2.RevokeOAuthClientRequest,
                          context) -> admin_pb2.RevokeOAuthClientResponse:
        client = self._admin.revoke_oauth_client(request.client_id, caller=self._caller(context))
        return admin_pb2.RevokeOAuthClientResponse(client=oauth_client_to_proto(client))

    @translate_errors
    def RotateSigningKey(self, request: admin_pb2.RotateSigningKeyRequest,
                         context) -> admin_pb2.RotateSigningKeyResponse:
        key, previous = self._admin.rotate_signing_key(caller=self._caller(context))
        return admin_pb2.RotateSigningKeyResponse(
            key=signing_key_to_proto(key), previous=signing_key_to_proto(previous) if previous else None)

    @translate_errors
    def ListSigningKeys(self, request: admin_pb2.ListSigningKeysRequest,
                        context) -> admin_pb2.ListSigningKeysResponse:
        keys = self._admin.list_signing_keys(caller=self._caller(context))
        return admin_pb2.ListSigningKeysResponse(keys=[signing_key_to_proto(k) for k in keys])

    # -- the audit trail -------------------------------------------------------------------------

    @translate_errors
    def ListAuditEvents(self, request: admin_pb2.ListAuditEventsRequest,
                        context) -> admin_pb2.ListAuditEventsResponse:
        caller = self._caller(context)
        query = AuditQuery(actor=request.actor or None, action=request.action or None,
                           since=_time_or_none(request, "start_time"), until=_time_or_none(request, "end_time"))
        events, next_token = self._admin.list_audit_events(query, request.page_size, request.page_token,
                                                           caller=caller)
        return admin_pb2.ListAuditEventsResponse(events=[audit_to_proto(e) for e in events],
                                                 next_page_token=next_token)


# -- conversions ---------------------------------------------------------------------------------


def partner_to_proto(partner: PartnerRecord) -> admin_pb2.Partner:
    return admin_pb2.Partner(id=partner.id, name=partner.name, status=_STATUSES[partner.status],
                             grants=list(partner.grants), roles=list(partner.roles),
                             create_time=timestamp(partner.created_at))


def api_key_to_proto(key: ApiKeyRecord) -> admin_pb2.ApiKey:
    """Never the digest: it would let anyone holding it test guesses offline."""
    return admin_pb2.ApiKey(
        id=key.id, partner_id=key.partner_id, name=key.name, grants=list(key.grants), roles=list(key.roles),
        customer_numbers=list(key.customer_numbers), create_time=timestamp(key.created_at),
        expire_time=timestamp(key.expires_at), revoke_time=timestamp(key.revoked_at))


_KEY_SOURCES = {
    "hmac_secret": admin_pb2.ISSUER_KEY_SOURCE_HMAC_SECRET,
    "jwks": admin_pb2.ISSUER_KEY_SOURCE_JWKS,
    "jwks_uri": admin_pb2.ISSUER_KEY_SOURCE_JWKS_URI,
    "discovery": admin_pb2.ISSUER_KEY_SOURCE_DISCOVERY,
}


def issuer_to_proto(issuer: IssuerRecord) -> admin_pb2.Issuer:
    """Never the sealed HMAC secret; the public JWK Set only."""
    hmac = issuer.hmac_secret_sealed is not None
    remote = issuer.remote
    return admin_pb2.Issuer(
        id=issuer.id, issuer=issuer.issuer, audience=issuer.audience, algorithms=list(issuer.algorithms),
        key_source=_KEY_SOURCES[key_source(issuer)],
        jwks="" if hmac or issuer.jwks is None else json.dumps(issuer.jwks, sort_keys=True),
        require_at_jwt_typ=issuer.require_at_jwt_typ, customer_claim=issuer.customer_claim,
        create_time=timestamp(issuer.created_at), key_ids=key_ids(issuer.jwks),
        remote=None if remote is None else admin_pb2.RemoteKeys(
            jwks_uri=remote.jwks_uri, discovery_url=remote.discovery_url or "",
            last_fetch_time=timestamp(remote.fetched_at), next_fetch_time=timestamp(remote.refresh_at),
            last_error=remote.error or "", last_error_time=timestamp(remote.error_at),
            consecutive_failures=remote.failures))


def oauth_client_to_proto(client: OAuthClientRecord) -> admin_pb2.OAuthClient:
    """Never the secret's digest: it would let anyone holding it test guesses offline."""
    return admin_pb2.OAuthClient(
        id=client.id, partner_id=client.partner_id, name=client.name, scopes=list(client.scopes),
        customer_numbers=list(client.customer_numbers), refresh_tokens=client.refresh_tokens,
        create_time=timestamp(client.created_at), secret_rotate_time=timestamp(client.secret_rotated_at),
        revoke_time=timestamp(client.revoked_at))


def signing_key_to_proto(key: SigningKeyRecord) -> admin_pb2.SigningKey:
    """The public half only; the sealed private key never leaves the store."""
    return admin_pb2.SigningKey(
        kid=key.kid, algorithm=key.algorithm, active=key.retired_at is None,
        public_jwk=json.dumps(key.public_jwk, sort_keys=True), create_time=timestamp(key.created_at),
        retire_time=timestamp(key.retired_at), publish_until_time=timestamp(key.publish_until))


def audit_to_proto(event: AdminAuditRecord) -> admin_pb2.AuditEvent:
    return admin_pb2.AuditEvent(id=event.id, actor=event.actor, action=event.action, target=event.target,
                                time=timestamp(event.at), outcome=event.outcome,
                                details=json.dumps(event.details, sort_keys=True))


def _time_or_none(message, field: str) -> datetime | None:
    """A Timestamp field that was set, as an aware UTC datetime; unset -> None."""
    if not message.HasField(field):
        return None
    value: timestamp_pb2.Timestamp = getattr(message, field)
    try:
        return value.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidRequest(f"{field} is not a valid time", field=field) from None
