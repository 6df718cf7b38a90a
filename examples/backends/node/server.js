// An Express API behind Application Gateway that authorises callers by client certificate.
//
// The gateway forwards the client's leaf in X-Client-Cert as URL-encoded PEM
// ({var_client_certificate}); the header is absent when no certificate was sent. This API:
//   1. answers 401 without the header;
//   2. percent-decodes it (decodeURIComponent: never '+' as space) and parses it with
//      crypto.X509Certificate; 403 when it is expired, not yet valid, not for client
//      authentication, or not issued by the CA chain we trust. Behind Strict the gateway
//      checked this already; behind Passthrough nothing did, so this is the only check;
//   3. authorises by subject CN (--allow CN=ROLE), 403 otherwise.
//
// node server.js --port 8082 --trust-ca certs/trusted-client-ca-chain.pem --allow NAME=reader
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const express = require('express');

const CERT_HEADER = 'x-client-cert';
const CLIENT_AUTH_EKU = '1.3.6.1.5.5.7.3.2';
// A chain longer than this is not one we issued; stops a loop on a malformed bundle.
const MAX_CHAIN_DEPTH = 8;
const ORDERS = [{ id: 1, item: 'widget', qty: 3 }, { id: 2, item: 'gadget', qty: 1 }];

function parseArgs(argv) {
  const options = { host: '127.0.0.1', port: 8082, trustCa: null, allow: {} };
  for (let i = 0; i < argv.length; i += 1) {
    const flag = argv[i];
    const value = argv[i + 1];
    if (flag === '--port') options.port = Number(value);
    else if (flag === '--host') options.host = value;
    else if (flag === '--trust-ca') options.trustCa = value;
    else if (flag === '--allow') {
      const [cn, role] = value.split('=');
      options.allow[cn] = role;
    } else throw new Error(`unknown option ${flag}`);
    i += 1;
  }
  if (!options.trustCa) throw new Error('--trust-ca PEM is required');
  return options;
}

function loadBundle(path) {
  const text = fs.readFileSync(path, 'ascii');
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) || [];
  return blocks.map((pem) => new crypto.X509Certificate(pem));
}

class Denied extends Error {
  constructor(status, reason) {
    super(reason);
    this.status = status;
  }
}

function commonName(cert) {
  // X509Certificate.subject is one "TYPE=value" per line.
  const line = cert.subject.split('\n').find((entry) => entry.startsWith('CN='));
  return line ? line.slice(3) : '';
}

function chainsTo(cert, trusted) {
  let current = cert;
  for (let depth = 0; depth < MAX_CHAIN_DEPTH; depth += 1) {
    const issuer = trusted.find((ca) => current.checkIssued(ca) && current.verify(ca.publicKey));
    if (!issuer) return false;
    if (issuer.ca !== true) return false;
    if (issuer.subject === issuer.issuer) return true; // reached a trusted root
    current = issuer;
  }
  return false;
}

function caller(header, trusted, allow, now = new Date()) {
  if (!header) throw new Denied(401, 'a client certificate is required');
  let cert;
  try {
    cert = new crypto.X509Certificate(decodeURIComponent(header));
  } catch (error) {
    throw new Denied(400, `unreadable client certificate: ${error.message}`);
  }
  if (now > new Date(cert.validTo)) throw new Denied(403, 'client certificate expired');
  if (now < new Date(cert.validFrom)) throw new Denied(403, 'client certificate not yet valid');
  const ekus = cert.keyUsage; // extended key usages; undefined when the extension is absent
  if (Array.isArray(ekus) && !ekus.includes(CLIENT_AUTH_EKU)) {
    throw new Denied(403, 'client certificate not for client authentication');
  }
  if (!chainsTo(cert, trusted)) throw new Denied(403, 'client certificate not issued by our CA');
  const cn = commonName(cert);
  if (!(cn in allow)) throw new Denied(403, `subject CN=${cn} is not allowed`);
  return { caller: cn, role: allow[cn] };
}

function main() {
  const options = parseArgs(process.argv.slice(2));
  const trusted = loadBundle(options.trustCa);
  const app = express();
  app.use((req, res, next) => {
    try {
      req.caller = caller(req.get(CERT_HEADER), trusted, options.allow);
      next();
    } catch (error) {
      if (!(error instanceof Denied)) throw error;
      res.status(error.status).json({ error: error.message });
    }
  });
  app.get('/orders', (req, res) => res.json({ ...req.caller, orders: ORDERS }));
  app.use((req, res) => res.status(404).json({ error: 'no such resource' }));
  const server = app.listen(options.port, options.host, () => {
    const { port } = server.address();
    console.log(`ready: node orders API http://${options.host}:${port}/orders`);
  });
  const stop = () => server.close(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main();
