#!/bin/bash
# Runs INSIDE the container that nspawn.sh boots (systemd is PID 1): installs the project's
# units like the Debian package does, then proves the systemd contract with the real
# presenced and presencectl (bind-mounted at /usr/bin). One line per check: PASS/FAIL/INFO.
# The exit status (also left in /run/presence-tests.rc) is the number of failed checks.
set -u
export LC_ALL=C.UTF-8
LAB=/lab
fails=0; passes=0
pass() { echo "PASS: $*"; passes=$((passes + 1)); }
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }
info() { echo "INFO: $*"; }
show() { sed 's/^/    | /'; }
check() { # check "what" CMD... : PASS if CMD succeeds
  local what=$1; shift
  if "$@"; then pass "$what"; else bad "$what"; fi
}
prop() { systemctl show -P "$2" "$1"; }
waitfor() { # waitfor SECONDS CMD... : poll until CMD succeeds
  local end=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do [ $SECONDS -ge $end ] && return 1; sleep 0.2; done
}
is_active() { [ "$(systemctl is-active "$1")" = active ]; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); $1"; }
outbox_lines() { wc -l < /var/lib/presenced/outbox.jsonl 2>/dev/null || echo 0; }
# Every (article, account) in the outbox exactly once.
outbox_unique() {
  python3 -c '
import json, sys, collections
seen = collections.Counter()
for line in open("/var/lib/presenced/outbox.jsonl"):
    o = json.loads(line); seen[(o["article_url"], o["account"])] += 1
dupes = {k: n for k, n in seen.items() if n > 1}
print("    | " + ", ".join("%s %s: %d" % (u, a, n) for (u, a), n in sorted(seen.items()))); sys.exit(1 if dupes else 0)'
}
jlog() { journalctl --no-pager -o cat "$@"; }
finish() {
  echo "== $passes passed, $fails failed"
  echo "$fails" > /run/presence-tests.rc
  exit "$fails"
}

echo "== $(systemctl --version | head -1); system $(systemctl is-system-running)"
DEB=/lab-deb/presence.deb
if [ -e $DEB ]; then
  # --- install the Debian package -----------------------------------------------------------
  if dpkg -i $DEB > /tmp/dpkg.txt 2>&1; then pass "dpkg -i presence.deb"
  else bad "dpkg -i presence.deb:"; show < /tmp/dpkg.txt; finish; fi
  show < /tmp/dpkg.txt
  check "the package enabled and started presenced.socket, not the service" \
    [ "$(systemctl is-enabled presenced.socket) $(systemctl is-active presenced.socket) $(systemctl is-enabled presenced.service)" = "enabled active disabled" ]
  check "conffile /etc/presenced/presenced.toml" grep -qx /etc/presenced/presenced.toml /var/lib/dpkg/info/presence.conffiles
  check "man page and bash completion installed" [ -s /usr/share/man/man1/presencectl.1.gz -a -s /usr/share/bash-completion/completions/presencectl ]
else
  # --- install as the Debian package does ---------------------------------------------------
  install -D -m644 -t /usr/lib/systemd/system $LAB/systemd/presenced.service \
    $LAB/systemd/presenced.socket "$LAB/systemd/presenced@.service" "$LAB/systemd/presenced@.socket"
  install -D -m644 -t /usr/lib/systemd/user $LAB/systemd/user/presenced.service \
    $LAB/systemd/user/presenced.socket
  install -D -m644 $LAB/systemd/presenced.sysusers /usr/lib/sysusers.d/presenced.conf
  install -D -m644 $LAB/systemd/presenced.tmpfiles /usr/lib/tmpfiles.d/presenced.conf
  install -D -m644 $LAB/systemd/presenced.toml /etc/presenced/presenced.toml
  systemd-sysusers presenced.conf | show
  systemd-tmpfiles --create presenced.conf
  systemctl daemon-reload
fi
if ! presenced --version > /tmp/version 2>&1; then
  bad "presenced runs in the container: $(cat /tmp/version)"; finish
fi
info "$(cat /tmp/version), $(presencectl --version)"
check "sysusers: group presence exists ($(getent group presence))" sh -c "getent group presence > /dev/null"
check "tmpfiles: /etc/credstore is 0700 root" [ "$(stat -c '%a %U' /etc/credstore)" = "700 root" ]
out=$(cd /usr/lib/systemd/system && systemd-analyze verify --man=no presenced.service \
  presenced.socket presenced@.service presenced@.socket 2>&1)
if [ -z "$out" ]; then pass "systemd-analyze verify of the installed units: no output"
else bad "systemd-analyze verify:"; echo "$out" | show; fi
out=$(presenced --check-config 2>&1) && pass "the example presenced.toml passes --check-config: $out" \
  || bad "example config: $out"

# --- the test's own setup: a local feed, accounts, tokens in the credstore ------------------
mkdir -p /srv/blog
item() { echo "<item><title>$1</title><link>https://blog.example/posts/$2</link><guid>https://blog.example/posts/$2</guid><pubDate>$3</pubDate></item>"; }
write_feed() { # write_feed ITEM...
  { echo '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Blog</title><link>https://blog.example/</link>'
    printf '%s\n' "$@"; echo '</channel></rss>'; } > /srv/blog/feed.xml.new
  chmod 644 /srv/blog/feed.xml.new; mv /srv/blog/feed.xml.new /srv/blog/feed.xml
}
ITEM1=$(item "First post" 1 "Mon, 01 Jan 2024 10:00:00 +0000")
ITEM2=$(item "Second post" 2 "Tue, 02 Jan 2024 10:00:00 +0000")
write_feed "$ITEM2" "$ITEM1"
TOKEN="masto-tok-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
BSKYPW="bsky-pw-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
(umask 077; printf '%s\n' "$TOKEN" > /etc/credstore/masto-token; printf '%s\n' "$BSKYPW" > /etc/credstore/bsky-password)
write_config() { # write_config [EXTRA TOML]
  cat > /etc/presenced/presenced.toml <<EOF
control_group = "presence"

[[feed]]
url = "file:///srv/blog/feed.xml"
interval = "1h"
template = "New on the blog: {title} {url}"
on_first_run = "announce-latest"
announce_latest = 1

[[account]]
name = "dry-run"
kind = "outbox"

# Tokens from LoadCredential=, sent to a local stand-in server that refuses them.
[[account]]
name = "masto"
kind = "mastodon"
server = "http://127.0.0.1:8089"
token = { credential = "masto-token" }

[[account]]
name = "bsky"
kind = "bluesky"
service = "http://127.0.0.1:8089"
handle = "test.example"
password = { credential = "bsky-password" }

# The control: a credential the unit does not pass.
[[account]]
name = "bsky-nocred"
kind = "bluesky"
service = "http://127.0.0.1:8089"
handle = "other.example"
password = { credential = "not-passed" }
$1
EOF
  chmod 644 /etc/presenced/presenced.toml
}
write_config ""
# Test timing (the packaged unit says WatchdogSec=30s, RestartSec=5s) and the credentials,
# as an administrator would add them: a drop-in.
mkdir -p /etc/systemd/system/presenced.service.d
cat > /etc/systemd/system/presenced.service.d/50-test.conf <<'EOF'
[Unit]
StartLimitBurst=50
[Service]
WatchdogSec=3s
RestartSec=500ms
TimeoutAbortSec=5s
LoadCredential=masto-token
LoadCredential=bsky-password
# Everything the daemon and its libraries log, so that a leaked token would show.
Environment=PRESENCED_LOG=debug
EOF
systemctl daemon-reload
systemd-run --quiet --unit=fake-network -p StandardOutput=null -p StandardError=null \
  /usr/bin/python3 $LAB/fake-network.py 8089 /run/fake-network.log
waitfor 10 bash -c 'echo > /dev/tcp/127.0.0.1/8089' || bad "the stand-in server did not start"
# PID 1 logs every sd_notify message it gets at debug level: READY=1, STATUS=, STOPPING=1.
systemd-analyze log-level debug

# --- 1. socket activation -----------------------------------------------------------------
echo "== socket activation"
systemctl start presenced.socket
check "presenced.socket is active" is_active presenced.socket
check "/run/presenced/control.sock is a socket, 0660 root:presence" \
  [ "$(stat -c '%F %a %U %G' /run/presenced/control.sock)" = "socket 660 root presence" ]
check "presenced.service has not started before the first connection" \
  [ "$(systemctl is-active presenced.service)" = inactive ]
if presencectl status > /tmp/status.txt 2>&1; then
  pass "the first 'presencectl status' is answered (and started the service)"
else bad "first presencectl status: rc $?"; show < /tmp/status.txt; fi
show < /tmp/status.txt
check "presenced.service is active after the first connection" waitfor 10 is_active presenced.service
jlog -u presenced.service | grep -q 'using the socket passed by systemd' \
  && pass "the daemon used the socket passed by systemd (LISTEN_FDS)" || bad "no 'using the socket passed by systemd' in the journal"

# --- 2. Type=notify, STATUS ---------------------------------------------------------------
echo "== Type=notify and STATUS"
check "Type=notify NotifyAccess=main" [ "$(prop presenced.service Type) $(prop presenced.service NotifyAccess)" = "notify main" ]
systemctl status --no-pager presenced.service > /tmp/sys-status.txt 2>&1
show < /tmp/sys-status.txt | head -n 12
grep -q 'Active: active (running)' /tmp/sys-status.txt && grep -q '^ *Status: ".*feeds' /tmp/sys-status.txt \
  && pass "systemctl status: active (running) with the daemon's Status line" || bad "systemctl status lacks active (running) or Status:"
jlog -u presenced.service | grep -q 'Got notification message from PID .*READY=1' \
  && pass "PID 1 got READY=1 from the main process" || bad "no READY=1 seen by PID 1"

# --- 3. an announcement, and the journal's structured fields -------------------------------
echo "== announcement and journal fields"
if waitfor 20 [ "$(outbox_lines)" -ge 1 ]; then
  pass "the newest article was announced into the outbox (announce-latest)"
  show < /var/lib/presenced/outbox.jsonl
else bad "nothing in /var/lib/presenced/outbox.jsonl"; fi
if jlog -u presenced.service ACCOUNT=dry-run ARTICLE_URL=https://blog.example/posts/2 | grep -q .; then
  pass "journalctl -u presenced ACCOUNT=dry-run ARTICLE_URL=…/posts/2 finds the announcement"
  journalctl -u presenced.service ACCOUNT=dry-run ARTICLE_URL=https://blog.example/posts/2 -o verbose --no-pager \
    | grep -E '^ +(MESSAGE|ACCOUNT|ARTICLE_URL|PRIORITY|_SYSTEMD_UNIT|_UID)=' | head -n 12 | show
else bad "no journal entry with ACCOUNT=dry-run ARTICLE_URL=https://blog.example/posts/2"
  journalctl -u presenced.service -o verbose --no-pager | tail -n 40 | show; fi

# --- 4. what PID 1 applied ----------------------------------------------------------------
echo "== sandbox"
PID=$(prop presenced.service MainPID)
grep -E '^(Uid|Gid|NoNewPrivs|Seccomp|CapEff|CapBnd):' /proc/$PID/status | tr '\t' ' ' | show
DUID=$(awk '/^Uid:/{print $2}' /proc/$PID/status)
check "DynamicUser: runs as uid $DUID ($(getent passwd "$DUID" | cut -d: -f1)), not root" [ "$DUID" != 0 ]
check "NoNewPrivileges applied" [ "$(awk '/^NoNewPrivs:/{print $2}' /proc/$PID/status)" = 1 ]
check "seccomp filter applied" [ "$(awk '/^Seccomp:/{print $2}' /proc/$PID/status)" = 2 ]
check "no capabilities" [ "$(awk '/^CapEff:/{print $2}' /proc/$PID/status)" = 0000000000000000 ]
check "state directory is /var/lib/private/presenced, 0700, owned by the dynamic user" \
  [ "$(stat -c '%a %u' /var/lib/private/presenced)" = "700 $DUID" ]
systemd-analyze security --no-pager presenced.service | tail -n 1 | show

# --- 5. state survives a restart under DynamicUser ----------------------------------------
echo "== restart"
# What the outbox account has done (the other accounts' attempts go on meanwhile).
dry_run_posts() { presencectl --json posts --all | json 'print(sorted((a["url"], p["state"], p["remote_url"]) for a in d for p in a["accounts"] if p["account"] == "dry-run"))'; }
POSTS_BEFORE=$(dry_run_posts)
systemctl restart presenced.service
check "restarted and active" waitfor 10 is_active presenced.service
PID2=$(prop presenced.service MainPID)
check "a new process (pid $PID -> $PID2)" [ "$PID2" != "$PID" ]
jlog -u presenced.service -n 200 | grep 'state loaded' | tail -n 1 | show
jlog -u presenced.service -n 200 | grep 'state loaded' | tail -n 1 | grep -qv 'first start' \
  && pass "the state was loaded again, not started afresh" || bad "state not found after restart"
sleep 1
POSTS_AFTER=$(dry_run_posts)
echo "$POSTS_AFTER" | show
check "presencectl posts: the same announcements after the restart" [ "$POSTS_BEFORE" = "$POSTS_AFTER" ]
check "outbox: still exactly one line per (article, account)" outbox_unique

# --- 6. credentials -----------------------------------------------------------------------
echo "== LoadCredential"
health() { presencectl --json status | json "print([a['health'] for a in d['accounts'] if a['name'] == '$1'][0])"; }
waitfor 15 sh -c "presencectl --json status | grep -q 'not-passed'"
for a in masto bsky bsky-nocred; do info "health of $a: $(health $a)"; done
# How a secret that cannot be read shows (network::spawn: "token: …" / "password: …").
credential_error() { echo "$1" | grep -qE '^(token|password): |/run/credentials/|CREDENTIALS_DIRECTORY|No such file|readable by group'; }
if credential_error "$(health bsky-nocred)"; then
  pass "control: an account whose credential the unit does not pass reports it"
else bad "control account bsky-nocred does not report its missing credential"; fi
for a in masto bsky; do
  h=$(health $a)
  if credential_error "$h"; then bad "$a: credential not loaded: $h"
  else pass "$a: its credential was loaded from \$CREDENTIALS_DIRECTORY (health: $h)"; fi
done
# Used, not only read: what the stand-in server was sent. Checked per network once its
# adapter talks to the network (until then its health says "not supported yet").
sent() { # sent mastodon|bluesky : did the stand-in get this network's secret?
  [ -s /run/fake-network.log ] && python3 - "$1" "$TOKEN" "$BSKYPW" <<'EOF'
import json, sys
kind, token, pw = sys.argv[1:]
reqs = [json.loads(l) for l in open("/run/fake-network.log")]
if kind == "mastodon":
    ok = any(r["authorization"] == "Bearer " + token for r in reqs)
else:
    ok = any(pw in r["body"] for r in reqs)
sys.exit(0 if ok else 1)
EOF
}
[ -s /run/fake-network.log ] && python3 - "$TOKEN" <<'EOF' | show
import json, sys
token = sys.argv[1]
for r in map(json.loads, open("/run/fake-network.log")):
    auth = "Bearer <the token>" if r["authorization"] == "Bearer " + token else r["authorization"]
    print(r["method"], r["path"], "Authorization:", auth)
EOF
for pair in masto:mastodon bsky:bluesky; do
  a=${pair%%:*}; kind=${pair#*:}
  if health $a | grep -q 'not supported yet'; then
    info "$a: the $kind adapter does not talk to the network yet: its secret is shown loaded, not used"
  elif sent "$kind"; then pass "$a: the secret from LoadCredential was sent to the $kind server"
  else bad "$a: the $kind server never received the secret from LoadCredential"; fi
done
leaks=""
for what in "journalctl -b -o export" "presencectl status" "presencectl --json status" \
  "presencectl --json posts --all" "systemctl status --no-pager presenced.service" "systemctl show presenced.service"; do
  if $what 2>&1 | grep -aqF -e "$TOKEN" -e "$BSKYPW"; then leaks="$leaks [$what]"; fi
done
if [ -z "$leaks" ]; then pass "neither secret appears in the journal (all fields, debug logging), presencectl or systemctl output"
else bad "a secret leaked into:$leaks"; fi

# --- 7. a presence group member may use presencectl, another user may not -------------------
echo "== who may connect"
useradd -m -G presence alice; useradd -m bob
if runuser -u alice -- presencectl status > /tmp/alice.txt 2>&1; then
  pass "alice (group presence) can run presencectl status"
else bad "alice refused: $(cat /tmp/alice.txt)"; fi
runuser -u bob -- presencectl status > /tmp/bob.txt 2>&1; rc=$?
if [ $rc = 69 ]; then pass "bob (not in presence) cannot: exit 69, $(head -n 1 /tmp/bob.txt)"
else bad "bob: exit $rc: $(cat /tmp/bob.txt)"; fi

# --- 8. reload applies a changed configuration ----------------------------------------------
echo "== reload"
accounts() { presencectl --json status | json "print(' '.join(a['name'] for a in d['accounts']))"; }
PID=$(prop presenced.service MainPID)
write_config $'[[account]]\nname = "added-by-reload"\nkind = "outbox"'
if systemctl reload presenced.service; then pass "systemctl reload: rc 0"; else bad "systemctl reload failed"; fi
if waitfor 10 sh -c "presencectl --json status | grep -q added-by-reload"; then
  pass "the reloaded configuration is in use: accounts $(accounts)"
else bad "reload not applied: accounts $(accounts)"; fi
check "same process after reload (pid $PID)" [ "$(prop presenced.service MainPID)" = "$PID" ]
jlog -u presenced.service | grep -q 'Got notification message from PID .*RELOADING=1' \
  && pass "PID 1 got RELOADING=1 (with MONOTONIC_USEC) and READY=1 again" || bad "no RELOADING=1 seen by PID 1"
echo 'this is = = not toml' > /etc/presenced/presenced.toml
if systemctl reload presenced.service 2> /tmp/reload.txt; then bad "reload of a broken config succeeded"
else pass "reload of a broken config fails visibly: $(head -n 1 /tmp/reload.txt)"; fi
jlog -u presenced.service -n 20 | grep -m1 'presenced.toml:' | show
check "and the daemon runs on with its configuration (pid $PID, active)" \
  [ "$(prop presenced.service MainPID) $(systemctl is-active presenced.service)" = "$PID active" ]
write_config $'[[account]]\nname = "added-by-reload"\nkind = "outbox"'

# --- 9. watchdog --------------------------------------------------------------------------
echo "== watchdog (WatchdogSec=3s in the test drop-in)"
PID=$(prop presenced.service MainPID); R0=$(prop presenced.service NRestarts)
kill -STOP "$PID"
if waitfor 30 sh -c "[ \$(systemctl show -P NRestarts presenced.service) -gt $R0 ] && [ \$(systemctl is-active presenced.service) = active ]"; then
  pass "frozen daemon (SIGSTOP) -> watchdog -> restarted (NRestarts $R0 -> $(prop presenced.service NRestarts), pid $PID -> $(prop presenced.service MainPID))"
else bad "no watchdog restart (NRestarts $(prop presenced.service NRestarts), state $(systemctl is-active presenced.service))"; fi
jlog -u presenced.service | grep -m1 'Watchdog timeout' | show
jlog -u presenced.service | grep -q 'Watchdog timeout' && pass "PID 1 logged the watchdog timeout" || bad "no 'Watchdog timeout' in the journal"
check "outbox: still exactly one line per (article, account)" outbox_unique

# --- 10. kill -9: restarted, socket kept, nothing lost ------------------------------------------
echo "== kill -9"
PID=$(prop presenced.service MainPID); R0=$(prop presenced.service NRestarts)
SOCK_SINCE=$(prop presenced.socket ActiveEnterTimestampMonotonic); INODE=$(stat -c %i /run/presenced/control.sock)
write_feed "$(item "Third post" 3 "Wed, 03 Jan 2024 10:00:00 +0000")" "$ITEM2" "$ITEM1"
kill -9 "$PID"
# Sent while no daemon runs: waits in the socket PID 1 keeps, answered by the next daemon.
if presencectl poll > /tmp/poll.txt 2>&1; then pass "presencectl poll sent right after kill -9 is answered"
else bad "presencectl poll after kill -9: $(cat /tmp/poll.txt)"; fi
check "restarted (NRestarts $R0 -> $(prop presenced.service NRestarts), pid $PID -> $(prop presenced.service MainPID))" \
  waitfor 10 sh -c "[ \$(systemctl show -P NRestarts presenced.service) -gt $R0 ] && [ \$(systemctl is-active presenced.service) = active ]"
check "the socket unit was never stopped and the socket file is the same" \
  [ "$(prop presenced.socket ActiveEnterTimestampMonotonic) $(stat -c %i /run/presenced/control.sock)" = "$SOCK_SINCE $INODE" ]
if waitfor 20 sh -c "grep -q 'posts/3' /var/lib/presenced/outbox.jsonl"; then
  pass "the article published during the crash was announced"
else bad "posts/3 never announced"; fi
sleep 1
check "outbox: every (article, account) exactly once after all the restarts" outbox_unique
show < /var/lib/presenced/outbox.jsonl

# --- 11. the template: one more identity on the same host ---------------------------------
echo "== presenced@blog2"
cat > /etc/presenced/blog2.toml <<'EOF'
control_group = "presence"
[[feed]]
url = "file:///srv/blog/feed.xml"
on_first_run = "announce-latest"
[[account]]
name = "second-identity"
kind = "outbox"
EOF
chmod 644 /etc/presenced/blog2.toml
systemctl start presenced@blog2.socket
check "presenced@blog2.socket listens on /run/presenced-blog2/control.sock" [ -S /run/presenced-blog2/control.sock ]
if presencectl --socket /run/presenced-blog2/control.sock status > /tmp/blog2.txt 2>&1; then
  pass "presencectl --socket /run/presenced-blog2/control.sock status starts presenced@blog2"
else bad "presenced@blog2: $(cat /tmp/blog2.txt)"; jlog -u presenced@blog2.service | tail -n 20 | show; fi
check "presenced@blog2 is active with its own state in /var/lib/presenced-blog2" \
  waitfor 10 sh -c '[ "$(systemctl is-active presenced@blog2.service)" = active ] && [ -e /var/lib/presenced-blog2/state ]'
check "presenced@blog2 announced into its own outbox" waitfor 20 grep -q second-identity /var/lib/presenced-blog2/outbox.jsonl
check "and not into the main instance's" sh -c '! grep -q second-identity /var/lib/presenced/outbox.jsonl'
runuser -u alice -- presencectl --socket /run/presenced-blog2/control.sock status >/dev/null 2>&1 \
  && pass "alice can use presenced@blog2 too" || bad "alice refused by presenced@blog2"
systemctl stop presenced@blog2.service presenced@blog2.socket

# --- 12. user units -------------------------------------------------------------------------
echo "== systemctl --user (carol)"
useradd -m carol; CUID=$(id -u carol)
systemctl start "user@$CUID.service"
U() { runuser -u carol -- env XDG_RUNTIME_DIR=/run/user/$CUID HOME=/home/carol "$@"; }
U mkdir -p /home/carol/.config/presenced
U sh -c 'cat > /home/carol/.config/presenced/presenced.toml' <<'EOF'
[[feed]]
url = "file:///srv/blog/feed.xml"
on_first_run = "announce-latest"
[[account]]
name = "carol-dry-run"
kind = "outbox"
EOF
if U systemctl --user start presenced.socket 2> /tmp/user.txt; then
  check "user socket at \$XDG_RUNTIME_DIR/presenced/control.sock, 0600 carol" \
    [ "$(stat -c '%F %a %U' /run/user/$CUID/presenced/control.sock)" = "socket 600 carol" ]
  if U presencectl status > /tmp/user.txt 2>&1; then
    pass "carol's 'presencectl status' (default socket) starts her presenced"
  else bad "carol's presencectl: $(cat /tmp/user.txt)"; fi
  check "her daemon is active (Type=notify) as carol" waitfor 10 sh -c "[ \"\$(runuser -u carol -- env XDG_RUNTIME_DIR=/run/user/$CUID systemctl --user is-active presenced.service)\" = active ]"
  check "state and outbox in ~/.local/state/presenced" waitfor 20 grep -q carol-dry-run /home/carol/.local/state/presenced/outbox.jsonl
  runuser -u alice -- presencectl --socket /run/user/$CUID/presenced/control.sock status > /tmp/alice2.txt 2>&1 \
    && bad "alice could use carol's daemon" || pass "alice cannot use carol's daemon: $(head -n 1 /tmp/alice2.txt)"
  U systemctl --user stop presenced.service presenced.socket
else bad "systemctl --user start presenced.socket: $(cat /tmp/user.txt)"; fi
systemctl stop "user@$CUID.service"

# --- 13. PrivateUsers= (not used; shown here) ------------------------------------------------
echo "== why not PrivateUsers=yes"
mkdir -p /etc/systemd/system/presenced.service.d
printf '[Service]\nPrivateUsers=yes\n' > /etc/systemd/system/presenced.service.d/60-privateusers.conf
systemctl daemon-reload; systemctl restart presenced.service
waitfor 10 is_active presenced.service
if runuser -u alice -- presencectl status > /tmp/pu.txt 2>&1; then
  info "with PrivateUsers=yes alice can still connect: PrivateUsers= could be added"
else info "with PrivateUsers=yes alice is refused ($(head -n 1 /tmp/pu.txt)): group members reach the daemon as 'nobody'"; fi
rm /etc/systemd/system/presenced.service.d/60-privateusers.conf
systemctl daemon-reload; systemctl restart presenced.service; waitfor 10 is_active presenced.service

# --- 14. stop ----------------------------------------------------------------------------------
echo "== stop"
PID=$(prop presenced.service MainPID)
systemctl stop presenced.service 2>&1 | show
check "stopped cleanly: Result=success, exit status 0" \
  [ "$(prop presenced.service Result) $(prop presenced.service ExecMainStatus) $(systemctl is-active presenced.service)" = "success 0 inactive" ]
jlog -u presenced.service | grep -q "Got notification message from PID $PID .*STOPPING=1" \
  && pass "PID 1 got STOPPING=1 from the daemon" || bad "no STOPPING=1 from pid $PID"
jlog -u presenced.service _PID="$PID" | tail -n 3 | show
jlog -u presenced.service _PID="$PID" | grep -qx 'stopped' && pass "the daemon logged 'stopped' (clean exit)" || bad "no 'stopped' from the daemon"
check "the socket stays while the service is stopped" is_active presenced.socket
presencectl status > /dev/null 2>&1 && pass "… and the next presencectl starts it again" || bad "no re-activation after stop"
systemctl stop presenced.service presenced.socket
check "stopping the socket removes /run/presenced/control.sock" [ ! -e /run/presenced/control.sock ]
check "outbox: every (article, account) exactly once in the end" outbox_unique

systemd-analyze log-level info
if [ -e $DEB ]; then
  echo "== dpkg --purge"
  systemctl start presenced.socket; presencectl status > /dev/null 2>&1
  if dpkg --purge presence > /tmp/dpkg.txt 2>&1; then pass "dpkg --purge presence"; else bad "dpkg --purge:"; show < /tmp/dpkg.txt; fi
  check "nothing left running or listening" [ "$(systemctl is-active presenced.service presenced.socket | sort -u)" = inactive ]
  check "units, binaries and state gone" [ ! -e /usr/lib/systemd/system/presenced.service -a ! -e /usr/bin/presenced -a ! -e /var/lib/private/presenced -a ! -e /run/presenced/control.sock ]
fi
finish
