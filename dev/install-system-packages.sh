#!/usr/bin/env bash
# Installs the Debian packages the local stack and the tests run (PostgreSQL, Redis, Knot DNS,
# PowerDNS, Postfix, Dovecot, OpenSSH, SpamAssassin), and what the local node runs on (containerd, runc,
# the CNI plugins, iptables and conntrack for kube-proxy, debootstrap for the image's root
# filesystem, socat to reach local services from pods), Chromium for the dashboard's browser
# tests (Playwright drives it; no browser is downloaded), only when missing.
set -euo pipefail

packages=(postgresql redis-server knot pdns-server pdns-backend-sqlite3 postfix dovecot-imapd dovecot-lmtpd
  openssh-server spamassassin chromium
  containerd runc containernetworking-plugins iptables conntrack debootstrap socat)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing Debian packages: ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
# The packages start system-wide services; the stack runs private instances instead.
$SUDO service postgresql stop >/dev/null 2>&1 || true
$SUDO service redis-server stop >/dev/null 2>&1 || true
$SUDO service knot stop >/dev/null 2>&1 || true
$SUDO service pdns stop >/dev/null 2>&1 || true
$SUDO service postfix stop >/dev/null 2>&1 || true
$SUDO service dovecot stop >/dev/null 2>&1 || true
$SUDO service ssh stop >/dev/null 2>&1 || true
# The node runs a private containerd (own socket and directories), never the system one.
$SUDO service containerd stop >/dev/null 2>&1 || true
