#!/usr/bin/env bash
# Builds the Debian package (scripts/build-deb.sh) and installs it for real with dpkg -i on
# this machine (root or sudo; CI's fresh machine), then checks what an operator gets:
# /usr/bin/certrot runs and names its commit, every file the units' Documentation= names is
# there, `man certrot` finds its page, the units pass `systemd-analyze verify` as installed,
# the `certrot` user and /etc/certrot (0700) exist, the example configuration passes
# `certrot config check`; then `dpkg --purge` removes it all again. Exits non-zero naming
# the first thing missing.
#
#   scripts/deb-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=$( [ "$(id -u)" = 0 ] || echo sudo )
fail() { echo "deb-test: $*" >&2; exit 1; }
if dpkg -s certrot >/dev/null 2>&1; then
  fail "a certrot package is installed already; remove it first (dpkg --purge certrot)"
fi
deb=$(scripts/build-deb.sh)
echo "== $deb"
# Each command's output is read whole before grep -q looks at it: under pipefail, grep -q
# leaving a pipe early kills its writer with SIGPIPE and fails the pipeline.
info=$(dpkg-deb --info "$deb")
grep -q "Package: certrot" <<<"$info" || fail "$deb: no package named certrot"
contents=$(dpkg-deb --contents "$deb")
for f in usr/bin/certrot lib/systemd/system/certrot.service lib/systemd/system/certrot-rotate.timer \
         usr/share/man/man1/certrot.1.gz usr/lib/sysusers.d/certrot.conf \
         usr/share/doc/certrot/docs/systemd.md usr/share/doc/certrot/examples/config.example.toml; do
  grep -Eq " (\./)?$f\$" <<<"$contents" || fail "$deb lacks /$f"
done

cleanup() { $SUDO dpkg --purge certrot >/dev/null 2>&1 || true; }
trap cleanup EXIT
$SUDO env DEBIAN_FRONTEND=noninteractive dpkg -i "$deb"
version=$(/usr/bin/certrot --version)
grep -Eq "^certrot [0-9.]+ \(.+\)$" <<<"$version" || fail "--version: $version"
help=$(/usr/bin/certrot --help)
if grep -Eq '^  (demo|sandbox) ' <<<"$help"; then
  fail "the packaged binary carries the stand-ins (build it with --no-default-features)"
fi
for u in certrot.service certrot-rotate.service; do
  grep -q '^ExecStart=/usr/bin/certrot ' "/lib/systemd/system/$u" || fail "$u: ExecStart is not /usr/bin/certrot"
  for doc in $(sed -n 's/^Documentation=//p' "/lib/systemd/system/$u"); do
    case $doc in
      file://*) [ -f "${doc#file://}" ] || fail "$u: Documentation= names ${doc#file://}, which the package does not install" ;;
      man:*) page=${doc#man:}; page=${page%%(*}
             [ -f "/usr/share/man/man1/$page.1.gz" ] || fail "$u: Documentation= names $doc, which is not installed" ;;
    esac
  done
done
man_page=$(zcat /usr/share/man/man1/certrot.1.gz)
grep -q '^.TH certrot' <<<"$man_page" || fail "the man page has no .TH header"
if command -v man >/dev/null; then man -w certrot >/dev/null || fail "man -w certrot finds nothing"; fi
command -v systemd-analyze >/dev/null || fail "systemd-analyze is missing (scripts/test-deps.sh installs it)"
systemd-analyze verify --man=no /lib/systemd/system/certrot.service /lib/systemd/system/certrot-rotate.service \
  /lib/systemd/system/certrot-rotate.timer || fail "systemd-analyze verify fails for the installed units"
getent passwd certrot >/dev/null || fail "the package did not create the certrot user"
[ "$(stat -c %a /etc/certrot)" = 700 ] || fail "/etc/certrot is not 0700"
[ "$(stat -c %U /etc/certrot)" = certrot ] || fail "/etc/certrot is not owned by certrot"
/usr/bin/certrot --config /usr/share/doc/certrot/examples/config.example.toml config check >/dev/null \
  || fail "the packaged example configuration does not pass config check"
[ -s /usr/share/bash-completion/completions/certrot ] || fail "no bash completion"
$SUDO dpkg --purge certrot >/dev/null
[ ! -e /usr/bin/certrot ] || fail "purge left /usr/bin/certrot"
[ ! -e /etc/certrot ] || fail "purge left an empty /etc/certrot"
trap - EXIT
echo "deb-test: ok ($(du -h "$deb" | cut -f1) package, installed, checked and purged)"
