#!/bin/bash
# Builds the root file system the systemd tests boot with systemd-nspawn: Debian minbase with
# systemd as init, libpam-systemd (user managers), procps (/bin/kill for ExecReload=) and
# python3 (a stand-in HTTP server for the credential test). Idempotent: an up-to-date rootfs
# is left alone; a changed script rebuilds it.
#   usage: build-rootfs.sh ROOTFS_DIR        (root; ~1.5-2 min cold, ~150 MB)
# SUITE defaults to the host's Debian release, so that binaries built on the host run inside;
# MIRROR to the mirror apt already uses.
set -euo pipefail
ROOT=${1:?usage: build-rootfs.sh ROOTFS_DIR}
host_codename() { . /etc/os-release 2>/dev/null && [ "${ID:-}" = debian ] && echo "${VERSION_CODENAME:-}"; }
SUITE=${SUITE:-$(host_codename || true)}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
# The rootfs is rebuilt when this script changes.
STAMP="$SUITE $(sha256sum < "$0" | cut -c1-16)"
if [ "$(cat "$ROOT/.presence-rootfs" 2>/dev/null)" = "$STAMP" ]; then
  echo "rootfs $ROOT: up to date ($STAMP)"
  exit 0
fi
rm -rf "$ROOT" "$ROOT.tmp"
mkdir -p "$(dirname "$ROOT")"
t0=$SECONDS
debootstrap --variant=minbase --include=systemd,systemd-sysv,libpam-systemd,dbus,procps,python3 \
  "$SUITE" "$ROOT.tmp" "$MIRROR" > "$ROOT.debootstrap.log" 2>&1 || {
  tail -n 30 "$ROOT.debootstrap.log" >&2; rm -rf "$ROOT.tmp"; exit 1; }
echo presenced-test > "$ROOT.tmp/etc/hostname"
# Nothing here needs apt lists, docs or locales; nothing should start a getty on the pipe.
chroot "$ROOT.tmp" apt-get clean
rm -rf "$ROOT.tmp"/var/lib/apt/lists/* "$ROOT.tmp"/usr/share/doc/* "$ROOT.tmp"/usr/share/man/* \
  "$ROOT.tmp"/usr/share/locale/*
ln -sf /dev/null "$ROOT.tmp/etc/systemd/system/console-getty.service"
echo "$STAMP" > "$ROOT.tmp/.presence-rootfs"
mv "$ROOT.tmp" "$ROOT"
echo "rootfs $ROOT: built ($SUITE from $MIRROR) in $((SECONDS - t0)) s, $(du -sh "$ROOT" | cut -f1)"
