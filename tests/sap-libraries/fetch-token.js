// Reads one credential the way an application does, with SAP's own libraries, and fetches
// a client-credentials token with it over mTLS. Used by tests/sap_libraries.rs.
//
//   node fetch-token.js files <target dir> <xsuaa|identity>
//       credentials.json as a Cloud Foundry or file-based application reads it;
//   node fetch-token.js servicebinding <SERVICE_BINDING_ROOT> <binding name> <xsuaa|identity>
//       the binding found by @sap/xsenv under the root, by name and label.
//
// Prints one JSON line: {"ok": true, "client": <client of the token>, "fields": [...]} or
// {"ok": false, "error": "..."} (exit 1). The token itself is never printed.
'use strict';
const fs = require('fs');
const path = require('path');
const xsenv = require('@sap/xsenv');
const xssec = require('@sap/xssec');

async function main() {
  const [mode, where, a, b] = process.argv.slice(2);
  let credentials;
  let kind;
  if (mode === 'files') {
    kind = a;
    credentials = JSON.parse(fs.readFileSync(path.join(where, 'credentials.json'), 'utf8'));
  } else if (mode === 'servicebinding') {
    kind = b;
    const found = xsenv.getServices(where, { svc: { name: a, label: kind } });
    credentials = found.svc;
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
  const Service = kind === 'identity' ? xssec.IdentityService : xssec.XsuaaService;
  const service = new Service(credentials);
  const response = await service.fetchClientCredentialsToken();
  const token = new xssec.Token(response.access_token);
  return { ok: true, client: token.clientId, fields: Object.keys(credentials).sort() };
}

main().then(
  (r) => console.log(JSON.stringify(r)),
  (e) => {
    console.log(JSON.stringify({ ok: false, error: String(e && e.message || e) }));
    process.exit(1);
  },
);
