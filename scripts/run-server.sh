#!/usr/bin/env bash
# Quick start, part 1: installs what is missing, builds poold and starts it
# with its default flags (gRPC on 127.0.0.1:50051). Arguments are passed to
# poold, e.g. scripts/run-server.sh --unix_socket=/tmp/poold.sock
# Stop it with Ctrl-C (SIGINT) or SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
TARGETS=poold scripts/build.sh
exec "${BUILD_DIR:-build}/server/poold" "$@"
