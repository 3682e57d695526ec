#!/usr/bin/env python3
"""A `command` signer for certrot backed by a cfssl server (Debian's golang-cfssl).

Reads a CSR (PEM) on stdin, posts it to <cfssl-url>/api/v1/cfssl/sign, prints the signed
certificate followed by the CA file given as the second argument. Errors go to stderr with a
non-zero exit code.

    cfssl-sign.py http://127.0.0.1:8888 ca.pem < request.csr
"""
import json
import sys
import urllib.request

url, ca_file = sys.argv[1], sys.argv[2]
csr = sys.stdin.read()
req = urllib.request.Request(
    url.rstrip("/") + "/api/v1/cfssl/sign",
    data=json.dumps({"certificate_request": csr}).encode(),
    headers={"Content-Type": "application/json"},
)
try:
    with urllib.request.urlopen(req, timeout=20) as resp:
        answer = json.load(resp)
except Exception as e:  # noqa: BLE001 - report whatever went wrong, to stderr
    print(f"cfssl at {url}: {e}", file=sys.stderr)
    sys.exit(2)
if not answer.get("success"):
    print(f"cfssl refused: {answer.get('errors')}", file=sys.stderr)
    sys.exit(3)
sys.stdout.write(answer["result"]["certificate"].strip() + "\n")
with open(ca_file) as f:
    sys.stdout.write(f.read())
