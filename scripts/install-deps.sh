#!/usr/bin/env bash
# Installs, from Debian's packages, what `make run` and `make test` need and
# the machine lacks: nats-server (JetStream), redis-server, Chromium (browser
# test), promtool (Debian prometheus, /metrics test) and openssl (the Redis
# TLS test's certificates). Node.js and npm for
# the web UI build come from the npm registry (scripts/install_node.py, run
# by `make ui`): Debian 12's nodejs is too old. Does nothing when all are
# there.
# Usage: scripts/install-deps.sh [run|test]
set -euo pipefail
what="${1:-test}"
need=()
command -v nats-server >/dev/null 2>&1 || need+=(nats-server)
if [ "$what" = "test" ]; then
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  [ -x /usr/bin/chromium ] || need+=(chromium)
  command -v promtool >/dev/null 2>&1 || need+=(prometheus)
  command -v openssl >/dev/null 2>&1 || need+=(openssl)
fi
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing: ${need[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${need[@]}"
