#!/usr/bin/env bash
# Quick start, part 2: installs what is missing, builds everything and runs
# the whole test suite (unit and end-to-end) with ctest.
#   BUILD_DIR   build folder (default: build)
#   arguments   extra CMake arguments, e.g. -DPOOLD_SANITIZE=address,undefined
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
scripts/build.sh "$@"
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure \
  -j "$(nproc)" --timeout 600
