#!/usr/bin/env node
// Gets an access token from Tollgate's token service with openid-client, as a Node partner would:
// `node examples/node/token.js --scope user:read`. It discovers the RFC 8414 metadata at
// <issuer>/.well-known/oauth-authorization-server, runs the client_credentials grant at the
// discovered token_endpoint and prints one JSON line: the issuer, the token_endpoint read from the
// metadata, and the token response (access_token, token_type, expires_in, scope, refresh_token when
// the client has refresh tokens). With --token it prints the access token alone, for
// `TOLLGATE_CREDENTIAL=$(node examples/node/token.js --token) node examples/node/check.js …`.
// Exits 0 on a token, 1 when discovery or the grant fails (`error: …` on stderr), 2 on bad usage.
//
// Issuer: $TOLLGATE_ISSUER (default http://127.0.0.1:8080, the server's default issuer) or --issuer;
// client: $TOLLGATE_CLIENT_ID or --client-id, and $TOLLGATE_CLIENT_SECRET (from the environment
// only: arguments are visible to every user of the machine in `ps`).
//
// openid-client v6 is ESM-only. This file stays CommonJS like check.js (package.json has no
// "type": "module") and loads it with a dynamic import(), which works on every Node 20; require()
// of an ES module only works unflagged from Node 20.19 / 22.12.
"use strict";

const { parseArgs } = require("node:util");
const { isIP } = require("node:net");

const USAGE = "usage: token.js [--issuer URL] [--client-id ID] [--scope SCOPES] [--auth basic|post] " +
  "[--allow-insecure-http] [--token]";

function parse(argv) {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: false,
    options: {
      issuer: { type: "string", default: process.env.TOLLGATE_ISSUER || "http://127.0.0.1:8080" },
      "client-id": { type: "string", default: process.env.TOLLGATE_CLIENT_ID || "" },
      scope: { type: "string", default: "" },
      auth: { type: "string", default: "basic" },
      "allow-insecure-http": { type: "boolean", default: false },
      token: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  if (positionals.length) throw new Error(`unexpected argument ${positionals[0]}`);
  if (!values["client-id"]) throw new Error("a client id is required: --client-id or $TOLLGATE_CLIENT_ID");
  if (!process.env.TOLLGATE_CLIENT_SECRET) throw new Error("$TOLLGATE_CLIENT_SECRET is required");
  if (!["basic", "post"].includes(values.auth)) throw new Error("--auth is basic or post");
  let issuer;
  try {
    issuer = new URL(values.issuer);
  } catch {
    throw new Error(`the issuer ${values.issuer} is not a URL`);
  }
  return { ...values, issuer };
}

// Plain http is allowed for a loopback issuer (a server on this machine, as in the tests) and
// otherwise only when asked for: a client secret sent over http to another host is readable on the
// way. openid-client refuses http unless allowInsecureRequests is applied.
function insecureAllowed(issuer, asked) {
  if (issuer.protocol !== "http:") return false;
  const host = issuer.hostname.replace(/^\[|\]$/g, "");
  const loopback = host === "localhost" || host === "::1" || (isIP(host) === 4 && host.startsWith("127."));
  if (!loopback && !asked) {
    throw new Error(`refusing plain http to ${issuer.host}: use https, or --allow-insecure-http`);
  }
  if (!loopback) console.error(`warning: sending the client secret over plain http to ${issuer.host}`);
  return true;
}

async function describe(error) {
  // An RFC 6749 section 5.2 error from the server: its code and description.
  if (error && typeof error.error === "string") {
    return `${error.error}${error.error_description ? `: ${error.error_description}` : ""} (HTTP ${error.status})`;
  }
  // A 401 with WWW-Authenticate (invalid_client) is thrown as a challenge before the body is read:
  // the body still holds the OAuth error.
  if (error && error.code === "OAUTH_WWW_AUTHENTICATE_CHALLENGE" && error.response) {
    const schemes = error.cause.map((challenge) => challenge.scheme).join(", ");
    const body = await error.response.json().catch(() => ({}));
    const status = `${error.status}, WWW-Authenticate: ${schemes}`;
    return typeof body.error === "string" ? describe({ ...body, status }) : `HTTP ${status}`;
  }
  const code = error && error.code ? `${error.code}: ` : "";
  const cause = error && error.cause && error.cause.message ? ` (${error.cause.message})` : "";
  return `${code}${error && error.message}${cause}`;
}

async function main() {
  let args;
  let allowInsecure;
  try {
    args = parse(process.argv.slice(2));
    allowInsecure = insecureAllowed(args.issuer, args["allow-insecure-http"]);
  } catch (error) {
    console.error(`error: ${error.message}\n${USAGE}`);
    process.exit(2);
  }
  const client = await import("openid-client");
  const secret = process.env.TOLLGATE_CLIENT_SECRET;
  const clientAuth = args.auth === "post" ? client.ClientSecretPost(secret) : client.ClientSecretBasic(secret);
  try {
    // algorithm "oauth2": RFC 8414 discovery (/.well-known/oauth-authorization-server), not OpenID
    // Connect's; openid-client checks that the metadata's issuer is exactly the URL discovered.
    const config = await client.discovery(args.issuer, args["client-id"], undefined, clientAuth, {
      algorithm: "oauth2",
      execute: allowInsecure ? [client.allowInsecureRequests] : [],
      timeout: 10,
    });
    const metadata = config.serverMetadata();
    const parameters = args.scope ? { scope: args.scope } : {};
    const tokens = await client.clientCredentialsGrant(config, parameters);
    if (args.token) {
      console.log(tokens.access_token);
      return;
    }
    console.log(JSON.stringify({
      issuer: metadata.issuer,
      token_endpoint: metadata.token_endpoint,
      access_token: tokens.access_token,
      token_type: tokens.token_type,
      expires_in: tokens.expires_in,
      scope: tokens.scope,
      ...(tokens.refresh_token ? { refresh_token: tokens.refresh_token } : {}),
    }));
  } catch (error) {
    console.error(`error: ${await describe(error)}`);
    process.exitCode = 1;  // not process.exit(): let stderr drain first
  }
}

main();
