// A real OpenID provider (panva's oidc-provider) for the remote-issuer tests; tests/support/oidc.py
// runs it. Client credentials only: one resource server, JWT (RFC 9068) access tokens.
//
//   node tests/support/oidc_provider.mjs --port 4010 --keys keys.json --clients clients.json \
//        --audience https://api.tollgate.test [--scope "a b"] [--token-ttl 300]
//
// --port     (or OIDC_PORT) the port on 127.0.0.1; the issuer is exactly http://127.0.0.1:PORT
// --keys     a file holding a private JWK Set; the first key signs access tokens (its alg, or the
//            default for its kty/crv), the others are published for verification only
// --clients  a file, or inline JSON, holding an array of client registrations: client_id,
//            client_secret, scope, token_endpoint_auth_method (grant_types, response_types and
//            redirect_uris default to client credentials only)
// --audience the resource indicator and the tokens' aud; it is also the default resource, so a
//            token request without `resource` gets a JWT for it too
// --scope    the scopes the resource server knows (default: every client's scopes); scopes asked
//            for outside it are dropped from the token silently, as oidc-provider does
//
// Test-only routes: GET /__test/stats -> {"jwks": n, "discovery": m, "token": t}, the requests (any
// method) since the start or the last reset, discovery counting both the OpenID and the RFC 8414
// documents; DELETE /__test/stats resets them.
// Prints one line, "ready <issuer>", on stdout once listening; exits 0 on SIGTERM or SIGINT. A
// port in use exits 3, so the harness can tell that apart from a broken configuration (exit 1).

import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import { parseArgs } from 'node:util';

import Provider, { errors } from 'oidc-provider';

const EXIT_PORT_IN_USE = 3;
const ROUTES = { jwks: '/jwks', token: '/token' }; // oidc-provider's defaults, named so the counters match them
const DEFAULT_ALG = { RSA: 'RS256', 'EC:P-256': 'ES256', 'EC:P-384': 'ES384', 'EC:P-521': 'ES512', 'OKP:Ed25519': 'EdDSA' };

function options() {
  const { values } = parseArgs({
    options: {
      port: { type: 'string', default: process.env.OIDC_PORT },
      keys: { type: 'string' },
      clients: { type: 'string' },
      audience: { type: 'string', default: 'https://api.tollgate.test' },
      scope: { type: 'string' },
      'token-ttl': { type: 'string', default: '300' },
    },
  });
  const port = Number.parseInt(values.port ?? '', 10);
  if (!Number.isInteger(port) || port <= 0 || port > 65535) throw new Error('--port (or OIDC_PORT) is required');
  if (!values.keys) throw new Error('--keys FILE (a private JWK Set) is required');
  if (!values.clients) throw new Error('--clients FILE-or-JSON is required');
  const clients = JSON.parse(values.clients.trimStart().startsWith('[') ? values.clients : readFileSync(values.clients, 'utf8'));
  const jwks = JSON.parse(readFileSync(values.keys, 'utf8'));
  if (!Array.isArray(jwks.keys) || !jwks.keys.length) throw new Error(`${values.keys}: a JWK Set with at least one key`);
  const scope = values.scope ?? clientScopes(clients).join(' ');
  return { port, jwks, clients, audience: values.audience, scope, ttl: Number.parseInt(values['token-ttl'], 10) };
}

function clientScopes(clients) {
  return [...new Set(clients.flatMap((client) => (client.scope ?? '').split(' ')).filter(Boolean))];
}

function signingAlg(jwk) {
  const alg = jwk.alg ?? DEFAULT_ALG[jwk.crv ? `${jwk.kty}:${jwk.crv}` : jwk.kty];
  if (!alg) throw new Error(`no default JWS algorithm for a ${jwk.kty} key; give the JWK an "alg"`);
  return alg;
}

function configuration({ jwks, clients, audience, scope, ttl }) {
  const signer = jwks.keys[0];
  // The resource server pins the first key (by kid) so the token's kid names it, whatever else is in the set.
  const resourceServer = {
    scope,
    audience,
    accessTokenTTL: ttl,
    accessTokenFormat: 'jwt',
    jwt: { sign: { alg: signingAlg(signer), ...(signer.kid ? { kid: signer.kid } : {}) } },
  };
  return {
    // Clients' id_token_signed_response_alg defaults to RS256, which a key set without an RSA key
    // cannot serve (every request then fails with invalid_client_metadata).
    clientDefaults: { id_token_signed_response_alg: resourceServer.jwt.sign.alg },
    clients: clients.map((client) => ({
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
      ...client,
    })),
    jwks,
    routes: ROUTES,
    ttl: { ClientCredentials: ttl },
    // A client's `scope` may only hold scopes the server declares here (else every request fails
    // with invalid_client_metadata); declared ones a client was not given are then refused with
    // invalid_scope, while undeclared ones are just left out of the token.
    scopes: [...new Set(['openid', 'offline_access', ...scope.split(' '), ...clientScopes(clients)])],
    features: {
      clientCredentials: { enabled: true },
      devInteractions: { enabled: false },
      resourceIndicators: {
        enabled: true,
        // A client-credentials request without `resource` gets the one audience too.
        defaultResource: async () => audience,
        getResourceServerInfo: async (_ctx, resourceIndicator) => {
          if (resourceIndicator !== audience) throw new errors.InvalidTarget();
          return resourceServer;
        },
      },
    },
  };
}

function statsMiddleware(routes) {
  const stats = { jwks: 0, discovery: 0, token: 0 };
  const counted = {
    [routes.jwks]: 'jwks',
    [routes.token]: 'token',
    '/.well-known/openid-configuration': 'discovery',
    '/.well-known/oauth-authorization-server': 'discovery', // RFC 8414: oidc-provider serves it too
  };
  return async (ctx, next) => {
    if (ctx.path === '/__test/stats') {
      if (ctx.method === 'DELETE') for (const name of Object.keys(stats)) stats[name] = 0;
      ctx.set('cache-control', 'no-store');
      ctx.body = { ...stats };
      return;
    }
    const name = counted[ctx.path];
    if (name) stats[name] += 1;
    await next();
  };
}

function main() {
  const settings = options();
  const issuer = `http://127.0.0.1:${settings.port}`;
  const provider = new Provider(issuer, configuration(settings));
  provider.use(statsMiddleware(ROUTES));
  provider.on('server_error', (_ctx, error) => console.error('server_error', error));

  const server = http.createServer(provider.callback());
  server.on('error', (error) => {
    console.error(`listen ${issuer}: ${error.message}`);
    process.exit(error.code === 'EADDRINUSE' ? EXIT_PORT_IN_USE : 1);
  });
  server.listen(settings.port, '127.0.0.1', () => console.log(`ready ${issuer}`));

  const stop = () => {
    server.close(() => process.exit(0));
    server.closeAllConnections(); // keep-alive clients would hold close() open
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

try {
  main();
} catch (error) {
  console.error(error?.stack ?? String(error));
  process.exit(1);
}
