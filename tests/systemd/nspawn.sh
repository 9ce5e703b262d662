#!/bin/bash
# Boots a real systemd (PID 1) in systemd-nspawn on ROOTFS, installs presence in it and runs
# incontainer.sh there, then shuts the container down. Exit status = the tests' status.
#   usage: nspawn.sh ROOTFS BIN_DIR [RESULTS_DIR]   the binaries in BIN_DIR (bind-mounted at
#                                                   /usr/bin) and the units of this checkout,
#                                                   installed as the Debian package does
#          nspawn.sh ROOTFS PACKAGE.deb [RESULTS_DIR]  the Debian package, with dpkg
# Needs root and a ROOTFS from build-rootfs.sh, which is never written: --volatile=overlay
# keeps every change in a tmpfs. RESULTS_DIR gets tests.log, journal.txt (the container's
# whole journal) and console.log.
set -euo pipefail
usage="usage: nspawn.sh ROOTFS BIN_DIR|PACKAGE.deb [RESULTS_DIR]"
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
ROOT=$(cd "${1:?$usage}" && pwd)
WHAT=${2:?$usage}
RES=${3:-$(mktemp -d --tmpdir presence-nspawn.XXXXXX)}
mkdir -p "$RES"; RES=$(cd "$RES" && pwd)
BINDS=()
if [[ "$WHAT" == *.deb ]]; then
  DEB=$(cd "$(dirname "$WHAT")" && pwd)/$(basename "$WHAT")
  [ -f "$DEB" ] || { echo "nspawn.sh: $DEB missing" >&2; exit 2; }
  BINDS+=(--bind-ro="$DEB":/lab-deb/presence.deb)
else
  BIN=$(cd "$WHAT" && pwd)
  for b in presenced presencectl; do
    [ -x "$BIN/$b" ] || { echo "nspawn.sh: $BIN/$b missing" >&2; exit 2; }
    BINDS+=(--bind-ro="$BIN/$b":/usr/bin/$b)
  done
fi
t0=$(date +%s%N)
elapsed() { local ms=$((($(date +%s%N) - t0) / 1000000)); printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100)); }

# What the package installs, staged outside the rootfs (never bind a folder containing it).
STAGE=$(mktemp -d --tmpdir presence-stage.XXXXXX)
NSPAWN=""
cleanup() {
  if [ -n "$NSPAWN" ] && kill -0 "$NSPAWN" 2>/dev/null; then
    kill "$NSPAWN" 2>/dev/null || true; wait "$NSPAWN" 2>/dev/null || true
  fi
  rm -rf "$STAGE"
}
trap cleanup EXIT
cp -r "$REPO/systemd" "$STAGE/systemd"
cp "$HERE/incontainer.sh" "$HERE/fake-network.py" "$STAGE/"
chmod -R a+rX "$STAGE"

# A private mount namespace with a tmpfs over /run/systemd: nspawn's bookkeeping there never
# touches the host. --register=no --keep-unit: no machined or host systemd needed.
# --private-network: the container's own loopback only (no Internet needed or used).
unshare --mount --propagation private sh -c '
  mount -t tmpfs -o mode=755 tmpfs /run/systemd &&
  exec systemd-nspawn -D "$@" --volatile=overlay --register=no --keep-unit --console=pipe \
    --machine=presenced-test --resolv-conf=off --timezone=off --private-network -b' \
  sh "$ROOT" "${BINDS[@]}" --bind-ro="$STAGE":/lab --bind="$RES":/results \
  > "$RES/console.log" 2>&1 &
NSPAWN=$!
# The container's PID 1 is the child of systemd-nspawn in a PID namespace of its own. The
# first child will not do: nspawn forks a short-lived helper first, in the host's namespace,
# and entering that one fails once it is gone.
HOST_PIDNS=$(readlink /proc/self/ns/pid)
LEADER=""
for _ in $(seq 400); do
  for c in $(pgrep -P "$NSPAWN" || true); do
    ns=$(readlink /proc/"$c"/ns/pid 2>/dev/null || true)
    [ -n "$ns" ] && [ "$ns" != "$HOST_PIDNS" ] && { LEADER=$c; break; }
  done
  [ -n "$LEADER" ] && break; sleep 0.05
done
[ -n "$LEADER" ] || { echo "nspawn did not start:"; cat "$RES/console.log"; exit 2; }
IN() { nsenter --target "$LEADER" --all env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin TERM=dumb LANG=C.UTF-8 "$@"; }
# PID 1's private socket appears a moment after exec; only then can systemctl talk to it.
for _ in $(seq 300); do IN test -S /run/systemd/private 2>/dev/null && break; sleep 0.1; done
state=$(timeout 90 nsenter --target "$LEADER" --all systemctl is-system-running --wait 2>&1 || true)
echo "container booted: systemd $(IN systemctl --version | head -1 | cut -d' ' -f2), state $state, after $(elapsed) s"
rc=0
IN timeout "${PRESENCE_NSPAWN_TIMEOUT:-420}" bash /lab/incontainer.sh 2>&1 | tee "$RES/tests.log" || true
rc=$(IN cat /run/presence-tests.rc 2>/dev/null || echo 99)
IN journalctl -b --no-pager -o short-monotonic > "$RES/journal.txt" 2>&1 || echo "journalctl failed: $?"
# `systemctl exit N`: PID 1 exits with N, and so does systemd-nspawn.
IN systemctl --no-block exit "$rc" >/dev/null 2>&1 || echo "systemctl exit failed"
if ! timeout 60 tail --pid="$NSPAWN" -f /dev/null; then
  echo "container did not exit within 60 s; console:"; tail -n 50 "$RES/console.log"; exit 3
fi
nrc=0; wait "$NSPAWN" || nrc=$?; NSPAWN=""
echo "systemd-nspawn exit status $nrc (tests $rc); $(elapsed) s in all; logs in $RES"
exit "$rc"
