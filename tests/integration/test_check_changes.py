"""Check sees every change at once: revocation, suspension, key rotation, revoked jti."""

from service.domain.model import PartnerStatus
from tests.support.keys import generate_signing_key, jwks


def test_revoked_key_is_denied_on_the_next_check(world):
    allowed = world.check("createCourtBooking", authorization=world.bearer("acme"))
    with world.seed() as repos:
        repos.api_keys.revoke(world.key_ids["acme"], world.clock.now())
    denied = world.check("createCourtBooking", authorization=world.bearer("acme"))
    assert allowed.allowed and (denied.allowed, denied.reason) == (False, "token_revoked")


def test_suspended_partner_is_denied_on_the_next_check(world):
    token = world.jwt("rsa")
    assert world.check("createCourtBooking", authorization=f"Bearer {token}").allowed
    with world.seed() as repos:
        repos.partners.set_status("acme", PartnerStatus.SUSPENDED)
    assert world.check("createCourtBooking", authorization=f"Bearer {token}").reason == "token_revoked"


def test_revoked_jti(world):
    token = world.jwt("rsa", jti="one-time")
    assert world.check("createCourtBooking", authorization=f"Bearer {token}").allowed
    with world.seed() as repos:
        repos.revoked_tokens.revoke("iss_rsa", "one-time", world.clock.now(), None)
    assert world.check("createCourtBooking", authorization=f"Bearer {token}").reason == "token_revoked"


def test_kid_rotation(world):
    old = world.signers["rsa"]
    new = generate_signing_key("RS256", "rsa-2")
    old_token = world.jwt("rsa")
    new_token = world.jwt("rsa", signer=new)
    assert world.check("createCourtBooking", authorization=f"Bearer {new_token}").reason == "invalid_token"
    with world.seed() as repos:
        repos.issuers.replace_keys("iss_rsa", jwks(old, new))  # overlap: both kids published
    assert world.check("createCourtBooking", authorization=f"Bearer {old_token}").allowed
    assert world.check("createCourtBooking", authorization=f"Bearer {new_token}").allowed
    with world.seed() as repos:
        repos.issuers.replace_keys("iss_rsa", jwks(new))  # old key retired
    assert world.check("createCourtBooking", authorization=f"Bearer {old_token}").reason == "invalid_token"
    assert world.check("createCourtBooking", authorization=f"Bearer {new_token}").allowed


def test_token_expiry_follows_the_clock(world):
    token = world.jwt("ec", lifetime=60)
    assert world.check("createCourtBooking", authorization=f"Bearer {token}").allowed
    world.clock.advance(60 + 20)  # within the default 30 s leeway
    assert world.check("createCourtBooking", authorization=f"Bearer {token}").allowed
    world.clock.advance(20)
    assert world.check("createCourtBooking", authorization=f"Bearer {token}").reason == "token_expired"


def test_not_yet_valid_token(world):
    token = world.jwt("ec", nbf=int(world.clock.now().timestamp()) + 600)
    assert world.check("createCourtBooking", authorization=f"Bearer {token}").reason == "token_expired"
