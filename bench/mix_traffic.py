"""The realistic mix's traffic: who asks what, built from the seeded store's layout.

Users are drawn from a Zipf distribution over the store's relations (rank k has weight 1/k^s over
the 1M relations, the ranks shuffled over the relations with a fixed seed, so the hot users are
spread over the partners); each request asks on behalf of the drawn relation's partner, with one of
that partner's credentials:

- one partner in `JWT_EVERY` (the JWT clients, ~2,475 on the full store) authenticates with external
  issuers' access tokens (`client_id` = the partner, alternately RS256 and ES256), which it renews
  every `renew_seconds`: client c's next token takes over at its own offset within the period, so
  new token strings reach the server all through the run;
- every other partner with its valid API keys (up to 8 each, ~59k keys on the full store) in turn
  (a partner's services each holding a key of their own), so that a partner asked about several
  times brings several keys.

What is asked follows the relation drawn: an active user relation gives getUser (allow), or
createCourtBooking (allow, a write the partner is granted), or updateUser (deny insufficient_scope:
no partner holds user:write); an active organization relation gives getOrganization (allow); a
pending or revoked user relation gives getUser (deny user_access_denied). The deny share is
therefore known in advance (about 10 % + 0.8 × UPDATE_SHARE) and every answer is checked against
its request's expected decision. Relations of suspended partners are not drawn (their credentials
are not kept).

Everything here is plain data (tuples and strings): it crosses to the load processes.
"""

from __future__ import annotations

import itertools
import random
import time
from dataclasses import dataclass, field
from typing import NamedTuple

from tests.support.keys import access_token_claims

from . import seed as seeding

JWT_EVERY = 4  # one active partner in this many is a JWT client
SCOPE = "user:read organization:read court-booking:write"
BOOKING_SHARE = 0.20  # of active-user draws: createCourtBooking
UPDATE_SHARE = 0.05  # of active-user draws: updateUser (denied: no partner holds user:write)
TOKEN_GRACE = 3600  # seconds a token stays valid after the next one takes over
RANDOM_SEED = 16


def jwt_issuer(client: int) -> str:
    """The external issuer (a key of Seeded.issuers) whose tokens JWT client `client` carries."""
    return "rsa" if client % 2 == 0 else "ec"


class MixRequest(NamedTuple):
    partner: str
    credential: int  # index into Traffic.api_keys, or the JWT client's index into Traffic.tokens
    jwt: bool
    operation: str
    user_id: str
    organization_id: str
    expected: str  # "allow" or "deny:<reason>"
    relation: int  # the relation drawn (its index in the seeded layout)


@dataclass
class Traffic:
    """Requests in sending order and the credentials they name. Token `g` of JWT client `c` is the
    one in use from `epoch + (g - offsets[c]) * renew_seconds` on (the last one until the end)."""

    requests: list[MixRequest]
    api_keys: list[str] = field(repr=False)
    tokens: list[list[str]] = field(repr=False)
    offsets: list[float]
    epoch: float
    renew_seconds: float
    zipf_exponent: float
    relations: int
    jwt_clients: int
    key_partners: int

    def generation(self, client: int, now: float) -> int:
        g = int((now - self.epoch) / self.renew_seconds + self.offsets[client])
        return min(max(g, 0), len(self.tokens[client]) - 1)

    def credential(self, request: MixRequest, now: float) -> tuple[str, int]:
        """The credential string the request carries at wall-clock `now`, and its token generation
        (0 for API keys)."""
        if request.jwt:
            g = self.generation(request.credential, now)
            return self.tokens[request.credential][g], g
        return self.api_keys[request.credential], 0

    def share(self, index: int, count: int) -> Traffic:
        """The requests of load process `index` of `count` (every count-th), with every credential."""
        return Traffic(self.requests[index::count], self.api_keys, self.tokens, self.offsets, self.epoch,
                       self.renew_seconds, self.zipf_exponent, self.relations, self.jwt_clients, self.key_partners)

    def expected_denies(self) -> float:
        return sum(1 for r in self.requests if r.expected != "allow") / len(self.requests) if self.requests else 0.0


def zipf_ranks(count: int, draws: int, exponent: float, rng: random.Random) -> list[int]:
    """`draws` ranks in [0, count), rank k drawn with probability proportional to 1/(k+1)^exponent."""
    weights = itertools.accumulate(1.0 / (k + 1) ** exponent for k in range(count))
    return rng.choices(range(count), cum_weights=list(weights), k=draws)


def build(seeded: seeding.Seeded, draws: int, *, exponent: float = 1.0, renew_seconds: float = 30.0,
          lasting: float = 300.0, say=lambda line: None) -> Traffic:
    """`draws` requests over the seeded store; tokens signed for `lasting` seconds of renewals."""
    rng = random.Random(RANDOM_SEED)  # noqa: S311 - a reproducible draw, not a secret
    size = seeded.size
    per = size.relations_per_partner
    relations = size.partners * per
    by_rank = list(range(relations))
    rng.shuffle(by_rank)

    jwt_partners = [p for p in seeding.active_partners(size) if p % JWT_EVERY == 0]
    jwt_client_of = {p: c for c, p in enumerate(jwt_partners)}
    api_keys: list[str] = []
    keys_of: dict[int, range] = {}
    for p in seeding.active_partners(size):
        if p in jwt_client_of:
            continue
        keys = seeded.partner_api_keys.get(seeding.partner_id(p), [])
        keys_of[p] = range(len(api_keys), len(api_keys) + len(keys))
        api_keys.extend(keys)

    requests: list[MixRequest] = []
    turns: dict[int, int] = {}  # the partner's next key
    while len(requests) < draws:
        for rank in zipf_ranks(relations, draws - len(requests), exponent, rng):
            r = by_rank[rank]
            p, j = divmod(r, per)
            if seeding.is_suspended(p) or (p not in jwt_client_of and not keys_of.get(p)):
                continue
            kind = seeding.relation_kind(j, per)
            subject = seeding.subject_id(p, j, kind)
            user = organization = ""
            if kind == seeding.ACTIVE_ORGANIZATION:
                operation, organization, expected = "getOrganization", subject, "allow"
            elif kind == seeding.ACTIVE_USER:
                roll = rng.random()
                if roll < UPDATE_SHARE:
                    operation, user, expected = "updateUser", subject, "deny:insufficient_scope"
                elif roll < UPDATE_SHARE + BOOKING_SHARE:
                    operation, expected = "createCourtBooking", "allow"
                else:
                    operation, user, expected = "getUser", subject, "allow"
            else:  # pending or revoked: no active relation
                operation, user, expected = "getUser", subject, "deny:user_access_denied"
            jwt = p in jwt_client_of
            if jwt:
                credential = jwt_client_of[p]
            else:
                turn = turns.get(p, rng.randrange(len(keys_of[p])))
                credential, turns[p] = keys_of[p][turn % len(keys_of[p])], turn + 1
            requests.append(MixRequest(seeding.partner_id(p), credential, jwt, operation, user, organization,
                                       expected, r))

    generations = int(lasting / renew_seconds) + 2
    epoch = time.time()
    offsets = [rng.random() for _ in jwt_partners]
    started = time.monotonic()
    tokens = []
    for c, p in enumerate(jwt_partners):
        issuer = jwt_issuer(c)
        pid = seeding.partner_id(p)
        mine = []
        for g in range(generations):
            takes_over = epoch + (g - offsets[c]) * renew_seconds
            claims = access_token_claims(seeded.issuers[issuer], seeding.AUDIENCE, pid, scope=SCOPE,
                                         lifetime=int(renew_seconds + TOKEN_GRACE), now=takes_over - 1)
            mine.append(seeded.signers[issuer].sign(claims))
        tokens.append(mine)
    say(f"mix traffic: {len(requests):,} requests (Zipf s={exponent:g} over {relations:,} relations), "
        f"{len(api_keys):,} API keys of {len(keys_of):,} partners, {len(jwt_partners):,} JWT clients × "
        f"{generations} tokens (renewed every {renew_seconds:g} s) signed in {time.monotonic() - started:.1f} s")
    return Traffic(requests, api_keys, tokens, offsets, epoch, renew_seconds, exponent, relations,
                   len(jwt_partners), len(keys_of))
