#!/usr/bin/env bash
# Configures and builds poold with CMake and Ninja.
#   BUILD_DIR   build folder (default: build)
#   arguments   extra CMake arguments, e.g. -DPOOLD_SANITIZE=address,undefined
# With TARGETS set (e.g. TARGETS=poold), builds only those targets.
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir="${BUILD_DIR:-build}"
cmake -S . -B "${build_dir}" -G Ninja "$@"
# shellcheck disable=SC2086  # TARGETS is a list of target names
ninja -C "${build_dir}" ${TARGETS:-}
