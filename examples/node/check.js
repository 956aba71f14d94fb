#!/usr/bin/env node
// Asks Tollgate whether one request may pass: `node examples/node/check.js getUser --user-id u-1`.
// Prints the CheckResponse as one JSON line; exits 0 on a decision (allow or deny), 1 on an RPC error
// and 2 on bad usage. Target: $TOLLGATE_TARGET (default 127.0.0.1:50051); credential:
// $TOLLGATE_CREDENTIAL, an API key or JWT ("Bearer " is added unless the value carries a scheme).
"use strict";

const path = require("node:path");
const { parseArgs } = require("node:util");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTO_ROOT = path.resolve(__dirname, "..", "..", "protos");
const USAGE = "usage: check.js OPERATION [--user-id ID] [--organization-id ID] [--customer-id ID] " +
  "[--permission SCOPE:LEVEL]... [--target HOST:PORT]";

function parse(argv) {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      "user-id": { type: "string", default: "" },
      "organization-id": { type: "string", default: "" },
      "customer-id": { type: "string", default: "" },
      permission: { type: "string", multiple: true, default: [] },
      target: { type: "string", default: process.env.TOLLGATE_TARGET || "127.0.0.1:50051" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  if (positionals.length > 1) throw new Error(`one operation expected, got ${positionals.join(" ")}`);
  return { operation: positionals[0] || "", ...values };
}

// The credential as an Authorization header value, as a gateway would forward it.
function authorizationHeader(credential) {
  if (!credential) return "";
  return /^\S+ \S/.test(credential) ? credential : `Bearer ${credential}`;
}

function main() {
  let args;
  try {
    args = parse(process.argv.slice(2));
  } catch (error) {
    console.error(`error: ${error.message}\n${USAGE}`);
    process.exit(2);
  }
  // includeDirs makes `import "tollgate/v1/common.proto"` resolve against protos/; defaults: true
  // prints false/0/"" fields too, so the JSON always has allowed, httpStatus and reason.
  const definition = protoLoader.loadSync("tollgate/v1/authorization.proto", {
    includeDirs: [PROTO_ROOT], longs: String, enums: String, defaults: true, oneofs: true,
  });
  const { Authorization } = grpc.loadPackageDefinition(definition).tollgate.v1;
  const client = new Authorization(args.target, grpc.credentials.createInsecure());
  const request = {
    authorization: authorizationHeader(process.env.TOLLGATE_CREDENTIAL || ""),
    operation: args.operation,
    permissions: args.permission,
    resource: {
      userId: args["user-id"], organizationId: args["organization-id"], customerId: args["customer-id"],
    },
  };
  client.check(request, { deadline: Date.now() + 10_000 }, (error, response) => {
    client.close();
    if (error) {
      console.error(`error: ${grpc.status[error.code] || error.code}: ${error.details}`);
      process.exitCode = 1;  // not process.exit(): let stderr drain first
      return;
    }
    console.log(JSON.stringify(response));
  });
}

main();
