#!/usr/bin/env bash
# Forward-auth throughput through nginx with and without auth_request to the offboard-guard sidecar
# (guard/benches/forward_auth.rs; needs nginx, wrk and curl: apt-get install nginx wrk curl).
# Usage: scripts/guard-nginx-bench.sh [--seconds 5] [--connections 16]
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in nginx wrk curl; do
    command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || { echo "$tool is not installed" >&2; exit 1; }
done
exec cargo bench -p offboard-guard --bench forward_auth -- "$@"
