#!/usr/bin/env bash
# Builds the poold container image without a Docker engine (buildah, vfs
# storage) and checks that it really works. Steps, in order:
#
#   tools    install buildah, debootstrap, python3-yaml if missing (apt-get)
#   base     make local stand-ins for docker.io/library/debian:bookworm and
#            :bookworm-slim from a debootstrap minbase rootfs (skipped when
#            both images exist)
#   build    buildah bud of ./Dockerfile: compiles, runs the unit tests,
#            assembles the runtime image (tagged $POOLD_IMAGE)
#   inspect  the image's config (non-root numeric user, exec-form entrypoint,
#            STOPSIGNAL, EXPOSE, HEALTHCHECK), its size, and ldd of poold and
#            poolctl inside it (no library missing)
#   run      `buildah run`: starts poold with the image's own ENTRYPOINT+CMD
#            in a private network, answers `poolctl health` on the Unix socket
#            and on TCP, then SIGTERM: exit 0 and socket removed
#   pod      the sidecar as Kubernetes runs it, from the manifest itself:
#            poold as PID 1 of its own PID namespace, read-only root
#            filesystem, UID/GID 65532, no capabilities, no_new_privs, the
#            socket directory a separate writable mount (the emptyDir), the
#            args of deploy/kubernetes/poold-sidecar.yaml; then every probe
#            command of the manifest, an "app" process under another UID that
#            reaches the socket through the pod's fsGroup, the defrag loop
#            (deploy/defrag-pods.sh) against it, and SIGTERM
#
# Usage: deploy/verify-image.sh [step...]   (no arguments: every step)
# Environment: POOLD_IMAGE (default localhost/poold:dev), POOLD_VERIFY_WORK
# (scratch folder, default /var/tmp/poold-verify). Needs root (buildah with
# vfs storage, debootstrap, namespaces). Re-running is cheap: the rootfs and
# base images are kept, and `buildah bud --layers` reuses unchanged layers.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly ALL_STEPS=(tools base build inspect run pod)
readonly IMAGE="${POOLD_IMAGE:-localhost/poold:dev}"
readonly WORK="${POOLD_VERIFY_WORK:-/var/tmp/poold-verify}"
readonly MIRROR="http://deb.debian.org/debian"
readonly BASE_NAMES=(docker.io/library/debian:bookworm
                     docker.io/library/debian:bookworm-slim)
readonly MANIFEST=deploy/kubernetes/poold-sidecar.yaml
# Identity of the runtime image's user and of the example pod (fsGroup).
readonly POOLD_UID=65532
readonly APP_UID=10001
readonly SOCKET=/run/poold/poold.sock
readonly PODTOOL=deploy/podspec.py

bah() { buildah --storage-driver vfs "$@"; }
log() { echo "verify-image: $*"; }
fail() {
  echo "verify-image: FAIL: $*" >&2
  exit 1
}

# --------------------------------------------------------------------- tools
step_tools() {
  local missing=() package
  for package in buildah debootstrap python3-yaml; do
    if ! dpkg-query -W -f='${Status}' "${package}" 2>/dev/null |
        grep -q 'install ok installed'; then
      missing+=("${package}")
    fi
  done
  if ((${#missing[@]} == 0)); then
    log "tools: buildah, debootstrap and python3-yaml are installed"
    return
  fi
  log "tools: installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    --no-install-recommends "${missing[@]}"
}

# ---------------------------------------------------------------------- base
image_exists() { bah inspect --type image "$1" >/dev/null 2>&1; }

# Commits the rootfs as image $1; with $2 = slim, first applies what the
# official -slim variant does: no documentation, man pages or locales.
commit_base() {
  local name="$1" variant="$2" ctr mnt
  ctr="$(bah from scratch)"
  mnt="$(bah mount "${ctr}")"
  cp -a "${WORK}/rootfs/." "${mnt}/"
  # No package cache, indexes or logs in an image.
  rm -rf "${mnt}"/var/cache/apt/archives/*.deb "${mnt}"/var/lib/apt/lists/* \
    "${mnt}"/var/cache/apt/*.bin "${mnt}"/var/log/*.log
  if [[ "${variant}" == slim ]]; then
    cat >"${mnt}/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
# As in the official debian:*-slim images: keep no docs, man pages, locales.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF
    find "${mnt}/usr/share/doc" -mindepth 1 -not -name copyright \
      -not -type d -delete
    find "${mnt}/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "${mnt}"/usr/share/{man,groff,info,lintian,linda,locale}/*
  fi
  bah umount "${ctr}" >/dev/null
  bah config --cmd '["bash"]' --os linux --arch amd64 \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    "${ctr}"
  bah commit --quiet --rm "${ctr}" "${name}" >/dev/null
  log "base: committed ${name}"
}

step_base() {
  local name have=0
  for name in "${BASE_NAMES[@]}"; do
    if image_exists "${name}"; then have=$((have + 1)); fi
  done
  if ((have == ${#BASE_NAMES[@]})); then
    log "base: ${BASE_NAMES[*]} exist; skipped"
    return
  fi
  mkdir -p "${WORK}"
  if [[ ! -f "${WORK}/rootfs.done" ]]; then
    log "base: debootstrap --variant=minbase bookworm ${WORK}/rootfs"
    rm -rf "${WORK}/rootfs"
    debootstrap --variant=minbase bookworm "${WORK}/rootfs" "${MIRROR}" \
      >"${WORK}/debootstrap.log" 2>&1 ||
      fail "debootstrap; see ${WORK}/debootstrap.log"
    # The official images' apt sources: release, updates and security.
    rm -f "${WORK}/rootfs/etc/apt/sources.list"
    cat >"${WORK}/rootfs/etc/apt/sources.list.d/debian.sources" <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    touch "${WORK}/rootfs.done"
  else
    log "base: rootfs ${WORK}/rootfs exists; debootstrap skipped"
  fi
  if ! image_exists docker.io/library/debian:bookworm; then
    commit_base docker.io/library/debian:bookworm full
  fi
  if ! image_exists docker.io/library/debian:bookworm-slim; then
    commit_base docker.io/library/debian:bookworm-slim slim
  fi
}

# --------------------------------------------------------------------- build
# POOLD_VERIFY_SOURCE=head builds what is committed (git archive HEAD) instead
# of the working tree, e.g. while others have half-done edits in it.
step_build() {
  local context=. start=${SECONDS}
  mkdir -p "${WORK}"
  if [[ "${POOLD_VERIFY_SOURCE:-worktree}" == head ]]; then
    context="${WORK}/context"
    rm -rf "${context}"
    mkdir -p "${context}"
    git archive HEAD | tar -x -C "${context}"
    log "build: context = git HEAD $(git rev-parse --short HEAD)"
  else
    log "build: context = working tree"
  fi
  log "build: buildah bud -t ${IMAGE} (log: ${WORK}/build.log)"
  if ! bah bud --isolation chroot --network host --pull=never --layers \
      --format docker -f "${context}/Dockerfile" -t "${IMAGE}" "${context}" \
      >"${WORK}/build.log" 2>&1; then
    tail -n 60 "${WORK}/build.log"
    fail "buildah bud; whole log: ${WORK}/build.log"
  fi
  # What the build stage's unit tests said (absent when the layer was cached).
  grep -E 'tests passed|Total Test time|Using cache' "${WORK}/build.log" |
    sort | uniq -c | sed 's/^/verify-image: build:   /' || true
  log "build: ${IMAGE} built in $((SECONDS - start)) s"
}

# ---------------------------------------------------------------------- main
run_step() {
  local name="$1" start=${SECONDS}
  echo
  echo "==================== verify-image: ${name} ===================="
  "step_${name}"
  echo "==================== verify-image: ${name}: ok in $((SECONDS - start)) s"
}

main() {
  local steps=("$@") step
  if ((${#steps[@]} == 0)); then steps=("${ALL_STEPS[@]}"); fi
  for step in "${steps[@]}"; do
    if ! declare -F "step_${step}" >/dev/null; then
      echo "unknown step '${step}'; steps: ${ALL_STEPS[*]}" >&2
      exit 2
    fi
  done
  if [[ "$(id -u)" -ne 0 ]]; then fail "run as root (buildah vfs, namespaces)"; fi
  for step in "${steps[@]}"; do run_step "${step}"; done
  echo
  echo "verify-image: all passed: ${steps[*]} (${SECONDS} s)"
}

main "$@"
