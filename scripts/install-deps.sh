#!/usr/bin/env bash
# Installs, from Debian's packages, what `make run` and `make test` need and
# the machine lacks: nats-server (JetStream), redis-server, Chromium (browser
# test), promtool (Debian prometheus, /metrics test) and Node.js with npm (web
# UI build). Does nothing when all are there.
# Usage: scripts/install-deps.sh [run|test]
set -euo pipefail
what="${1:-test}"
need=()
command -v nats-server >/dev/null 2>&1 || need+=(nats-server)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
if [ "$what" = "test" ]; then
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  [ -x /usr/bin/chromium ] || need+=(chromium)
  command -v promtool >/dev/null 2>&1 || need+=(prometheus)
fi
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing: ${need[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${need[@]}"
