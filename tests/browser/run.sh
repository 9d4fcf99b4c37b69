#!/usr/bin/env bash
# Browser test of the operator console (console.test.mjs) in headless Chromium, against the offboard binary that
# `cargo test` built (target/debug/offboard; set OFFBOARD_BIN for another), on SQLite and, with --postgres, on a
# fresh PostgreSQL database too. Installs what is missing: Chromium (apt-get; Debian packages chromium and
# chromium-driver) and the pinned npm packages (npm ci, from package-lock.json).
#
# Usage: tests/browser/run.sh [--postgres]
#   PG_ADMIN_URL  server for --postgres (default postgres://postgres@127.0.0.1:5432/test); needs psql
# Artifacts: target/browser-artifacts/ (live-view.png, serve.log); with UPDATE_SCREENSHOT=1 the
# screenshot is also copied to docs/console.png (the README's picture).
set -euo pipefail
cd "$(dirname "$0")"
ROOT="$(cd ../.. && pwd)"
export OFFBOARD_BIN="${OFFBOARD_BIN:-$ROOT/target/debug/offboard}"

postgres=0
for arg in "$@"; do
  case "$arg" in
    --postgres) postgres=1 ;;
    -h | --help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $arg (see --help)" >&2; exit 2 ;;
  esac
done

if [ ! -x "$OFFBOARD_BIN" ]; then
  echo "no offboard binary at $OFFBOARD_BIN: run cargo test (or cargo build) first, or set OFFBOARD_BIN" >&2
  exit 1
fi
if [ ! -x /usr/bin/chromium ]; then
  echo "== installing chromium (apt-get)"
  apt-get -y -q install chromium chromium-driver >/dev/null || { apt-get -q update >/dev/null && apt-get -y -q install chromium chromium-driver >/dev/null; }
fi
if ! command -v sqlite3 >/dev/null; then
  echo "== installing sqlite3 (apt-get)"
  apt-get -y -q install sqlite3 >/dev/null || { apt-get -q update >/dev/null && apt-get -y -q install sqlite3 >/dev/null; }
fi
if [ ! -d node_modules/playwright-core ] || ! npm ls --silent >/dev/null 2>&1; then
  echo "== npm ci (playwright-core, pinned in package-lock.json)"
  npm ci --no-audit --no-fund --silent
fi

echo "== browser test on SQLite"
node console.test.mjs

if [ "$postgres" = 1 ]; then
  PG_ADMIN_URL="${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/test}"
  db="offboard_browser_$(date +%s)_$$"
  psql "$PG_ADMIN_URL" -v ON_ERROR_STOP=1 -q -c "CREATE DATABASE $db"
  trap 'psql "$PG_ADMIN_URL" -q -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true' EXIT
  echo "== browser test on PostgreSQL"
  OFFBOARD_TEST_DATABASE_URL="${PG_ADMIN_URL%/*}/$db" node console.test.mjs
fi
