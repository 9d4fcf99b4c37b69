#!/usr/bin/env bash
# Profiles one hot path of a release build of offboard, the way BENCHMARKS.md §10 records it: the server on CPU 0,
# wrk (32 connections) on CPU 1, and for the length of the load
#   - `perf record -g` of the server: the symbols that take the time (top entries printed, perf.data kept);
#   - `perf stat` of the server's fsync/fdatasync system calls, per request;
#   - the database statements per request, from the server's own `offboard_db_statements_total` counter.
#
#   benches/profile.sh PHASE [sqlite|postgres] [SECONDS]
#     PHASE: get | filter | list | create | lifecycle | introspect | healthz
#   Environment: PROFILE_BIN (default target/release/offboard), USERS (seeded, default 2000),
#   PG_URL (PostgreSQL server, default postgres://postgres@127.0.0.1:5432; a fresh database is created and dropped),
#   KEEP=1 keeps the working directory (perf.data, server.log); CALLGRAPH=dwarf for whole call chains (heavier).
# Needs: perf, wrk, curl, jq, taskset (and psql for PostgreSQL).
set -euo pipefail
PHASE=${1:?"usage: benches/profile.sh PHASE [sqlite|postgres] [SECONDS]"}
BACKEND=${2:-sqlite}
SECONDS_=${3:-8}
USERS=${USERS:-2000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(realpath "${PROFILE_BIN:-$ROOT/target/release/offboard}")
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
for tool in perf wrk curl jq taskset; do
  command -v "$tool" >/dev/null || { echo "profile.sh: $tool is missing (apt-get install -y linux-perf wrk curl jq util-linux)" >&2; exit 2; }
done
[ -x "$BIN" ] || { echo "profile.sh: no binary at $BIN (cargo build --release)" >&2; exit 2; }

WORK=$(mktemp -d /tmp/offboard-profile.XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
BASE=http://127.0.0.1:$PORT
DB_NAME=""
case "$BACKEND" in
  sqlite) export OFFBOARD_DATABASE_URL="sqlite://$WORK/offboard.db" ;;
  postgres)
    DB_NAME="offboard_profile_$$"
    psql -q "$PG_URL/postgres" -c "CREATE DATABASE $DB_NAME" >/dev/null
    export OFFBOARD_DATABASE_URL="$PG_URL/$DB_NAME" ;;
  *) echo "profile.sh: backend is sqlite or postgres" >&2; exit 2 ;;
esac
export OFFBOARD_LISTEN=127.0.0.1:$PORT OFFBOARD_ISSUER=$BASE
SERVER=""
cleanup() {
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null
  [ -n "$DB_NAME" ] && psql -q "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" >/dev/null 2>&1
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
cd "$WORK"

taskset -c 0 "$BIN" serve >"$WORK/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 240); do curl -fs "$BASE/healthz" >/dev/null 2>&1 && break; sleep 0.25; done
curl -fs "$BASE/healthz" >/dev/null || { echo "server did not start:"; tail -20 "$WORK/server.log"; exit 1; }

SCIM=$("$BIN" credentials create --name profile-scim --scopes scim | tail -1)
echo "seeding $USERS users on $BACKEND…" >&2
seq "$USERS" | xargs -P 8 -I{} curl -fs -o /dev/null -H "Authorization: Bearer $SCIM" \
  -H 'Content-Type: application/scim+json' "$BASE/scim/v2/Users" -d \
  '{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"seed{}@example.net","externalId":"seed{}","name":{"givenName":"Seed","familyName":"User {}"},"displayName":"Seed User {}","emails":[{"value":"seed{}@example.net","type":"work","primary":true}],"active":true}'
: >"$WORK/ids"
for start in $(seq 1 100 "$USERS"); do
  curl -fs -H "Authorization: Bearer $SCIM" "$BASE/scim/v2/Users?startIndex=$start&count=100" |
    jq -r '.Resources[] | "\(.id)\t\(.userName)"' >>"$WORK/ids"
done
AUTH="Bearer $SCIM"
if [ "$PHASE" = introspect ]; then
  AUTH="Bearer $("$BIN" credentials create --name profile-introspect --scopes introspect | tail -1)"
  head -50 "$WORK/ids" | cut -f2 | while read -r name; do
    "$BIN" token mint --user "$name" | jq -r .access_token
  done >"$WORK/tokens"
fi

statements() { curl -fs "$BASE/metrics" | awk '/^offboard_db_statements_total/ {s += $2; n++} END {print (n ? s : "")}'; }
S0=$(statements)
PID=$(pgrep -P "$SERVER" -x offboard || echo "$SERVER")
perf record -q -F 997 --call-graph "${CALLGRAPH:-fp}" -p "$PID" -o "$WORK/perf.data" -- sleep "$SECONDS_" >/dev/null 2>&1 &
PERF=$!
perf stat -x, -e 'syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync' -p "$PID" -o "$WORK/fsync.csv" \
  -- sleep "$SECONDS_" >/dev/null 2>&1 &
STAT=$!
PHASE=$PHASE IDS=$WORK/ids TOKENS=$WORK/tokens AUTH=$AUTH taskset -c 1 \
  wrk -t2 -c32 -d"${SECONDS_}s" --latency -s "$ROOT/benches/profile/load.lua" "$BASE" >"$WORK/wrk.txt"
wait "$PERF" "$STAT" || true
S1=$(statements)

REQS=$(awk '/requests in/ {print $1}' "$WORK/wrk.txt")
BAD=$(awk '/^BAD/ {print $2}' "$WORK/wrk.txt")
FSYNCS=$(awk -F, '{s += $1} END {print s + 0}' <(grep -v '^#' "$WORK/fsync.csv" | grep -v '^$'))
echo "== $PHASE on $BACKEND, ${SECONDS_} s, $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
grep -E 'Requests/sec|99%' "$WORK/wrk.txt"
awk -v r="$REQS" -v b="$BAD" -v f="$FSYNCS" -v s0="$S0" -v s1="$S1" 'BEGIN {
  printf "requests %d, unexpected answers %d\n", r, b;
  printf "fsync+fdatasync per request %.3f\n", (r > 0 ? f / r : 0);
  if (s1 == "") print "statements per request: n/a (this build has no offboard_db_statements_total)";
  else printf "statements per request %.2f\n", (r > 0 ? (s1 - s0) / r : 0) }'
echo "-- top symbols (self time, server process)"
perf report -i "$WORK/perf.data" --no-children --stdio --sort symbol -g none --percent-limit 1.2 2>/dev/null |
  grep -v '^#' | grep -v '^$' | sed -E 's/[[:space:]-]+$//' | head -30
[ "$BAD" = 0 ] || { echo "profile.sh: $BAD unexpected answers" >&2; exit 1; }
