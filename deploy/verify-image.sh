#!/usr/bin/env bash
# Builds the poold container image without a Docker engine (buildah, vfs
# storage) and checks that it really works. Steps, in order:
#
#   tools    install buildah, runc, debootstrap, python3-yaml if missing
#   base     make local stand-ins for docker.io/library/debian:bookworm and
#            :bookworm-slim from a debootstrap minbase rootfs (skipped when
#            both images exist)
#   build    buildah bud of ./Dockerfile: compiles, runs the unit tests,
#            assembles the runtime image (tagged $POOLD_IMAGE)
#   inspect  the image's config (non-root numeric user, exec-form entrypoint,
#            STOPSIGNAL, EXPOSE, HEALTHCHECK), its size, and ldd of poold and
#            poolctl inside it (no library missing)
#   run      `buildah run` with runc (OCI isolation: namespaces, no network
#            but loopback, the default seccomp profile of containers-common):
#            starts poold with the image's own ENTRYPOINT+CMD, answers
#            `poolctl health` on the Unix socket and on TCP, `poolctl stats`,
#            then SIGTERM: exit 0 and socket removed
#   pod      the sidecar as Kubernetes runs it, from the manifest itself
#            (deploy/kubernetes/poold-sidecar.yaml: args, probes, users,
#            mounts, memory limits): poold as PID 1 of its own namespaces,
#            read-only root, UID/GID 65532, no capabilities, no_new_privs,
#            the emptyDir as a separate mount, a memory cgroup with the
#            container's limit; then the manifest's probe commands, an app
#            container under another UID reaching the socket through the
#            pod's fsGroup (and refused without it), a load past
#            --memory_limit_bytes (RESOURCE_EXHAUSTED, no OOM kill),
#            deploy/defrag-pods.sh through a kubectl stand-in, and SIGTERM
#
# Usage: deploy/verify-image.sh [step...]   (no arguments: every step)
# Environment: POOLD_IMAGE (default localhost/poold:dev); POOLD_VERIFY_WORK
# (scratch folder, default /var/tmp/poold-verify); POOLD_VERIFY_SOURCE=head
# builds the committed tree (git archive HEAD) instead of the working tree;
# POOLD_VERIFY_IGNORE_FLAGS="flag ..." lets the pod step run without manifest
# flags this poold lacks (the step still fails at the end). Needs root
# (buildah with vfs storage, debootstrap, namespaces, cgroups). Re-running is
# cheaper: the rootfs and base images are kept, and ccache (a cache mount of
# the Dockerfile) keeps compiled objects.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly ALL_STEPS=(tools base build inspect run pod)
readonly IMAGE="${POOLD_IMAGE:-localhost/poold:dev}"
readonly WORK="${POOLD_VERIFY_WORK:-/var/tmp/poold-verify}"
readonly MIRROR="http://deb.debian.org/debian"
readonly BASE_NAMES=(docker.io/library/debian:bookworm
                     docker.io/library/debian:bookworm-slim)
readonly MANIFEST=deploy/kubernetes/poold-sidecar.yaml
# The runtime image's user and group.
readonly POOLD_UID=65532

bah() { buildah --storage-driver vfs "$@"; }
log() { echo "verify-image: $*"; }
fail() {
  echo "verify-image: FAIL: $*" >&2
  exit 1
}

# --------------------------------------------------------------------- tools
step_tools() {
  local missing=() package
  for package in buildah runc debootstrap python3-yaml; do
    if ! dpkg-query -W -f='${Status}' "${package}" 2>/dev/null |
        grep -q 'install ok installed'; then
      missing+=("${package}")
    fi
  done
  if ((${#missing[@]} == 0)); then
    log "tools: buildah, runc, debootstrap and python3-yaml are installed"
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
  # No --layers: with vfs storage every committed layer is a full copy of
  # the build stage (1.5 GB), which costs minutes and gigabytes per build;
  # ccache's cache mount is what makes a rebuild cheap.
  if ! bah bud --isolation chroot --network host --pull=never --layers=false \
      --format docker -f "${context}/Dockerfile" -t "${IMAGE}" "${context}" \
      >"${WORK}/build.log" 2>&1; then
    tail -n 60 "${WORK}/build.log"
    fail "buildah bud; whole log: ${WORK}/build.log"
  fi
  # What the build stage's unit tests said (absent when the layer was cached).
  grep -E 'tests passed|Total Test time' "${WORK}/build.log" |
    sed 's/^/verify-image: build:   /' || true
  grep -E '^ *(Hits|Misses):' "${WORK}/build.log" | tail -n 2 |
    sed 's/^ */verify-image: build:   ccache /' || true
  # The previous image of this tag, now untagged.
  bah rmi --prune >/dev/null 2>&1 || true
  log "build: ${IMAGE} built in $((SECONDS - start)) s"
}

# ------------------------------------------------------------------- inspect
# Prints the image config field $1 (JSON), from the Docker-format config.
image_config() {
  bah inspect --type image "${IMAGE}" |
    python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)["Docker"]["config"].get(sys.argv[1])))' "$1"
}

# A throwaway working container of the image; its name in $ctr.
new_container() {
  ctr="$(bah from --pull=never --name "poold-verify-$1" "${IMAGE}" 2>/dev/null ||
    { bah rm "poold-verify-$1" >/dev/null 2>&1
      bah from --pull=never --name "poold-verify-$1" "${IMAGE}"; })"
}

step_inspect() {
  local user entrypoint cmd stop ports health size
  user="$(image_config User)"
  entrypoint="$(image_config Entrypoint)"
  cmd="$(image_config Cmd)"
  stop="$(image_config StopSignal)"
  ports="$(image_config ExposedPorts)"
  health="$(image_config Healthcheck)"
  log "inspect: User=${user} Entrypoint=${entrypoint} Cmd=${cmd}"
  log "inspect: StopSignal=${stop} ExposedPorts=${ports}"
  log "inspect: Healthcheck=${health}"
  [[ "${user}" == "\"${POOLD_UID}:${POOLD_UID}\"" ]] || fail "User is ${user}"
  [[ "${entrypoint}" == '["/usr/local/bin/poold"]' ]] ||
    fail "Entrypoint is ${entrypoint}"
  [[ "${stop}" == '"SIGTERM"' ]] || fail "StopSignal is ${stop}"
  [[ "${ports}" == *'"50051/tcp"'* ]] || fail "port 50051 not exposed"
  [[ "${ports}" == *'"9741/tcp"'* ]] || fail "metrics port 9741 not exposed"
  [[ "${health}" == *poolctl* ]] || fail "no HEALTHCHECK"
  size="$(bah images --format '{{.Size}}' "${IMAGE}")"
  log "inspect: image size ${size} (uncompressed; base bookworm-slim:" \
    "$(bah images --format '{{.Size}}' docker.io/library/debian:bookworm-slim))"
  new_container inspect
  # ldd of both binaries inside the image; no compiler or build tool there.
  # shellcheck disable=SC2016  # expanded inside the container
  bah run --isolation chroot --network host "${ctr}" -- /bin/sh -c '
    set -e
    for b in /usr/local/bin/poold /usr/local/bin/poolctl; do
      ls -l "$b"
      if ldd "$b" | grep "not found"; then echo "MISSING LIBRARY"; exit 1; fi
      echo "  $(ldd "$b" | wc -l) shared libraries, all found"
    done
    for tool in gcc g++ cc cmake ninja make protoc; do
      if command -v "$tool" >/dev/null; then echo "  has $tool"; fi
    done
    dpkg-query -W -f "\${Package} \${Version}\n" libgrpc++1.51 libgrpc29 \
      libprotobuf32 libabsl20220623 libgoogle-glog0v6 libcpp-httplib0.11' |
    sed 's/^/verify-image: inspect:   /'
  bah rm "${ctr}" >/dev/null
}

# ----------------------------------------------------------------------- run
# `buildah run` of the image's own ENTRYPOINT + CMD, as the image's user,
# with runc: its own namespaces, only loopback (0.0.0.0:50051 may be taken on
# the host), the default seccomp profile (/usr/share/containers/seccomp.json).
step_run() {
  local argv=()
  mapfile -t argv < <({ image_config Entrypoint; image_config Cmd; } |
    python3 -c 'import json, sys; [print(a) for l in sys.stdin for a in json.loads(l) or []]')
  log "run: ${argv[*]}"
  new_container run
  # shellcheck disable=SC2016  # expanded inside the container
  if ! bah run --isolation oci --runtime runc --network none "${ctr}" -- \
      /bin/sh -c '
    set -u
    echo "user: $(id)"
    "$@" 2>/tmp/poold.log &
    pid=$!
    i=0
    until poolctl health --target=unix:/run/poold/poold.sock \
        --connect_timeout=200ms --timeout=1s >/dev/null 2>&1; do
      i=$((i + 1))
      if [ "$i" -ge 50 ]; then cat /tmp/poold.log; exit 1; fi
      sleep 0.1
    done
    echo "poold: $(grep -E "^(Seccomp|CapEff):" /proc/$pid/status | tr -s "\t\n" "  ")"
    ok=1
    check() {
      "$@"; code=$?
      echo "  -> exit code $code"
      [ "$code" -eq 0 ] || ok=0
    }
    echo "$ poolctl health --target=unix:/run/poold/poold.sock"
    check poolctl health --target=unix:/run/poold/poold.sock
    echo "$ poolctl health --target=127.0.0.1:50051 --service=poold.v1.PoolService"
    check poolctl health --target=127.0.0.1:50051 --service=poold.v1.PoolService
    echo "$ poolctl stats --target=unix:/run/poold/poold.sock"
    check poolctl stats --target=unix:/run/poold/poold.sock
    # Fragment, then compact: every engine path, under seccomp.
    echo "$ poolctl load --count=3000 --sizes=100:150,4KiB:8KiB,256KiB --free_fraction=0.7"
    check poolctl load --target=unix:/run/poold/poold.sock --count=3000 \
      --sizes=100:150,4KiB:8KiB,256KiB --free_fraction=0.7
    echo "$ poolctl defrag --target=unix:/run/poold/poold.sock"
    check poolctl defrag --target=unix:/run/poold/poold.sock
    ls -l /run/poold
    kill -TERM "$pid"
    wait "$pid"
    code=$?
    echo "poold exit code after SIGTERM: $code"
    [ "$code" -eq 0 ] || ok=0
    if [ -e /run/poold/poold.sock ]; then echo "socket left behind"; ok=0; fi
    echo "poold log:"
    sed "s/^/  /" /tmp/poold.log
    [ "$ok" -eq 1 ]' sh "${argv[@]}" 2>&1 |
      sed 's/^/verify-image: run:   /'; then
    bah rm "${ctr}" >/dev/null
    fail "run: see above"
  fi
  bah rm "${ctr}" >/dev/null
}

# ----------------------------------------------------------------------- pod
# The example Deployment's pod, as shell assignments M_* (arrays for argv).
manifest_vars() {
  python3 - "${MANIFEST}" <<'PY'
import re, shlex, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1], encoding="utf-8")) if d]
pod = next(d for d in docs if d.get("kind") == "Deployment")
pod = pod["spec"]["template"]["spec"]
poold = next(c for c in pod["initContainers"] if c["name"] == "poold")
app = pod["containers"][0]


def out(name, value):
    if isinstance(value, list):
        value = " ".join(shlex.quote(str(v)) for v in value)
        print(f"{name}=({value})")
    else:
        print(f"{name}={shlex.quote(str(value))}")


def memory(quantity):
    number, suffix = re.fullmatch(r"([0-9]+)([KMG]i)?", quantity).groups()
    return int(number) << {None: 0, "Ki": 10, "Mi": 20, "Gi": 30}[suffix]


out("M_ARGS", poold.get("args", []))
for kind in ("startup", "liveness", "readiness"):
    probe = poold[kind + "Probe"]
    out(f"M_{kind.upper()}", probe["exec"]["command"])
    out(f"M_{kind.upper()}_PERIOD", probe.get("periodSeconds", 10))
    out(f"M_{kind.upper()}_FAILURES", probe.get("failureThreshold", 3))
    out(f"M_{kind.upper()}_TIMEOUT", probe.get("timeoutSeconds", 1))
out("M_FSGROUP", pod["securityContext"]["fsGroup"])
for prefix, container in (("POOLD", poold), ("APP", app)):
    out(f"M_{prefix}_USER", container["securityContext"]["runAsUser"])
    out(f"M_{prefix}_GROUP", container["securityContext"]["runAsGroup"])
    out(f"M_{prefix}_MEMORY",
        memory(container["resources"]["limits"]["memory"]))
    mount = next(m for m in container["volumeMounts"]
                 if "emptyDir" in next(v for v in pod["volumes"]
                                       if v["name"] == m["name"]))
    out(f"M_{prefix}_MOUNT", mount["mountPath"])
    out(f"M_{prefix}_MOUNT_MODE", "ro" if mount.get("readOnly") else "rw")
out("M_APP_TARGET",
    next(e["value"] for e in app["env"] if e["name"] == "POOLD_TARGET"))
out("M_GRACE", pod.get("terminationGracePeriodSeconds", 30))
PY
}

# Runs in a new mount (and PID) namespace: sets up a container's filesystem
# as the kubelet would (image root read-only, the emptyDir at its mount path,
# /proc, a minimal /dev, read-only /sys), joins memory cgroup $5, then
# chroots and runs "$@" (setpriv ... program args).
# shellcheck disable=SC2016  # expanded by the inner bash
readonly CONTAINER_SETUP='
  set -e
  root=$1 emptydir=$2 mountpoint=$3 mode=$4 cgroup=$5
  shift 5
  echo 0 >"${cgroup}/cgroup.procs"
  mount --bind "${root}" "${root}"
  mount -o remount,bind,ro "${root}"
  mount --bind "${emptydir}" "${root}${mountpoint}"
  if [[ "${mode}" == ro ]]; then
    mount -o remount,bind,ro "${root}${mountpoint}"
  fi
  mount -t proc -o nosuid,nodev,noexec proc "${root}/proc"
  mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "${root}/sys"
  mount -t tmpfs -o nosuid,mode=0755,size=64k tmpfs "${root}/dev"
  for node in null zero full random urandom tty; do
    touch "${root}/dev/${node}"
    mount --bind "/dev/${node}" "${root}/dev/${node}"
  done
  ln -s /proc/self/fd "${root}/dev/fd"
  exec chroot "${root}" "$@"
'
readonly IMAGE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# setpriv arguments: user $1, group $2, supplementary groups $3 ("" for
# none); no capabilities, no_new_privs (allowPrivilegeEscalation: false).
as_user() {
  local groups=(--clear-groups)
  if [[ -n "$3" ]]; then groups=(--groups "$3"); fi
  echo /usr/bin/setpriv --reuid="$1" --regid="$2" "${groups[@]}" \
    --inh-caps=-all --bounding-set=-all --no-new-privs --
}

# Writes ${POD_DIR}/exec-in-poold: runs its arguments in the running poold
# container as an exec probe or `kubectl exec` does (the container's
# namespaces, root, cgroup, user and groups, no capabilities).
make_exec_in_poold() {
  {
    echo '#!/bin/bash'
    echo '# Written by deploy/verify-image.sh (pod step): run a command in the'
    echo '# emulated poold container.'
    # shellcheck disable=SC2016  # expanded by the script written here
    printf 'exec env -i PATH=%q /bin/bash -c %q _ %q \\\n' "${IMAGE_PATH}" \
      'echo 0 >"$1/cgroup.procs" && shift && exec "$@"' "${POD_CGROUP}/poold"
    printf '  nsenter --target %q --mount --net --pid --root --wd --' \
      "${poold_pid}"
    # shellcheck disable=SC2046  # as_user's words
    printf ' %q' $(as_user "${M_POOLD_USER}" "${M_POOLD_GROUP}" "${M_FSGROUP}")
    printf ' "$@"\n'
  } >"${POD_DIR}/exec-in-poold"
  chmod +x "${POD_DIR}/exec-in-poold"
}

# A command in a new app container: the pod's network, the emptyDir mounted
# as the manifest mounts it for the app, the app's user; memory cgroup $1
# (app: the app container's limit; client: none, for the load generator);
# supplementary groups $2 (the pod's fsGroup, or "" to see what happens
# without it).
run_in_app() {
  local cgroup="$1" extra_groups="$2"
  shift 2
  # shellcheck disable=SC2046  # as_user's words
  env -i PATH="${IMAGE_PATH}" POOLD_TARGET="${M_APP_TARGET}" \
    nsenter --net="/proc/${poold_pid}/ns/net" -- \
    unshare --mount --pid --fork --kill-child -- \
    /bin/bash -c "${CONTAINER_SETUP}" _ "${rootfs}" "${POD_DIR}/emptydir" \
    "${M_APP_MOUNT}" "${M_APP_MOUNT_MODE}" "${POD_CGROUP}/${cgroup}" \
    $(as_user "${M_APP_USER}" "${M_APP_GROUP}" "${extra_groups}") "$@"
}

# Runs "$@" (a check), indents its output and prints its exit code; $1 is
# the exit code wanted. A wrong one marks the pod step failed.
expect_code() {
  local expect="$1" code
  shift
  set +e
  "$@" 2>&1 | sed 's/^/    /'
  code="${PIPESTATUS[0]}"
  set -e
  if [[ "${code}" == "${expect}" ]]; then
    log "pod:   -> exit code ${code} (wanted)"
  else
    log "pod:   -> exit code ${code}, WANTED ${expect}"
    pod_failed=1
  fi
}

pod_cleanup() {
  # Only the processes this step started: poold, else its unshare (which
  # takes poold with it: --kill-child).
  if [[ -n "${poold_pid:-}" ]] && kill -0 "${poold_pid}" 2>/dev/null; then
    kill -KILL "${poold_pid}" 2>/dev/null || true
  elif [[ -n "${unshare_pid:-}" ]]; then
    kill -KILL "${unshare_pid}" 2>/dev/null || true
  fi
  if [[ -n "${unshare_pid:-}" ]]; then
    wait "${unshare_pid}" 2>/dev/null || true
    unshare_pid=""
  fi
  rmdir "${POD_CGROUP}"/{poold,app,client} "${POD_CGROUP}" \
    2>/dev/null || true
  if [[ -n "${ctr:-}" ]]; then
    bah umount "${ctr}" >/dev/null 2>&1 || true
    bah rm "${ctr}" >/dev/null 2>&1 || true
  fi
}

step_pod() {
  local known args=() flag name ignored=() start code i
  pod_failed=0
  eval "$(manifest_vars)"
  POD_DIR="${WORK}/pod"
  POD_CGROUP=/sys/fs/cgroup/memory/poold-verify
  new_container pod
  rootfs="$(bah mount "${ctr}")"
  trap pod_cleanup EXIT

  # The flags of the manifest that this image's poold knows.
  # (--helpfull exits with code 1.)
  known="$({ chroot "${rootfs}" /usr/local/bin/poold --helpfull 2>&1 || true; } |
    sed -n 's/^ *--\([a-z0-9_]*\) (.*/\1/p')"
  for flag in "${M_ARGS[@]}"; do
    name="${flag#--}"
    name="${name%%=*}"
    if grep -qx "${name}" <<<"${known}"; then
      args+=("${flag}")
    elif [[ " ${POOLD_VERIFY_IGNORE_FLAGS:-} " == *" ${name} "* ]]; then
      ignored+=("${flag}")
    else
      fail "pod: this poold has no --${name}, which ${MANIFEST} passes it" \
        "(POOLD_VERIFY_IGNORE_FLAGS=${name} runs without it)"
    fi
  done
  if ((${#ignored[@]} > 0)); then
    log "pod: WARNING: left out, unknown to this poold: ${ignored[*]}"
  fi

  # The emptyDir as the kubelet makes it with fsGroup: mode 2777 (setgid),
  # group fsGroup. The memory cgroups hold the containers' limits.
  rm -rf "${POD_DIR}"
  mkdir -p "${POD_DIR}/emptydir"
  chown "0:${M_FSGROUP}" "${POD_DIR}/emptydir"
  chmod 2777 "${POD_DIR}/emptydir"
  rmdir "${POD_CGROUP}"/{poold,app,client} "${POD_CGROUP}" \
    2>/dev/null || true
  mkdir -p "${POD_CGROUP}"/{poold,app,client}
  echo "${M_POOLD_MEMORY}" >"${POD_CGROUP}/poold/memory.limit_in_bytes"
  echo "${M_APP_MEMORY}" >"${POD_CGROUP}/app/memory.limit_in_bytes"

  log "pod: poold ${args[*]}"
  log "pod:   as PID 1 of its own namespaces, root read-only, user" \
    "${M_POOLD_USER}:${M_POOLD_GROUP} groups ${M_FSGROUP}, no capabilities," \
    "no_new_privs, memory limit ${M_POOLD_MEMORY}"
  # shellcheck disable=SC2046  # as_user's words
  env -i PATH="${IMAGE_PATH}" \
    unshare --mount --pid --net --fork --kill-child -- /bin/bash -c \
    'ip link set lo up && exec /bin/bash -c "$@"' _ "${CONTAINER_SETUP}" _ \
    "${rootfs}" "${POD_DIR}/emptydir" "${M_POOLD_MOUNT}" \
    "${M_POOLD_MOUNT_MODE}" "${POD_CGROUP}/poold" \
    $(as_user "${M_POOLD_USER}" "${M_POOLD_GROUP}" "${M_FSGROUP}") \
    /usr/local/bin/poold "${args[@]}" >"${POD_DIR}/poold.log" 2>&1 &
  unshare_pid=$!
  poold_pid=""
  for ((i = 0; i < 100; i++)); do
    poold_pid="$(awk '{print $1}' \
      "/proc/${unshare_pid}/task/${unshare_pid}/children" 2>/dev/null)" || true
    [[ -z "${poold_pid}" ]] || break
    sleep 0.05
  done
  [[ -n "${poold_pid}" ]] || fail "pod: poold did not start"
  make_exec_in_poold
  exec_in_poold="${POD_DIR}/exec-in-poold"

  # startupProbe, on the manifest's schedule.
  start=${SECONDS}
  for ((i = 1; i <= M_STARTUP_FAILURES; i++)); do
    if timeout "${M_STARTUP_TIMEOUT}" "${exec_in_poold}" "${M_STARTUP[@]}" \
        >/dev/null 2>&1; then
      break
    fi
    if ! kill -0 "${poold_pid}" 2>/dev/null; then
      i=$((M_STARTUP_FAILURES + 1))
      break
    fi
    sleep "${M_STARTUP_PERIOD}"
  done
  if ((i > M_STARTUP_FAILURES)); then
    cat "${POD_DIR}/poold.log"
    fail "pod: startupProbe never succeeded"
  fi
  log "pod: startupProbe succeeded at attempt ${i} ($((SECONDS - start)) s)"
  # shellcheck disable=SC2016  # expanded in the container
  log "pod: in the container, PID 1 is:" \
    "$("${exec_in_poold}" /bin/sh -c 'tr "\0" " " </proc/1/cmdline; grep -E "^(Uid|Gid|Groups|CapEff|CapBnd|NoNewPrivs|Seccomp):" /proc/1/status' | tr -s '\t\n' '  ')"
  log "pod: in the container: $("${exec_in_poold}" /bin/sh -c \
    'touch /probe 2>&1; touch /tmp/probe 2>&1; ls -ln /run/poold | tail -n +2' |
    tr '\n' ';')"

  log "pod: livenessProbe (timeoutSeconds ${M_LIVENESS_TIMEOUT}): ${M_LIVENESS[*]}"
  expect_code 0 /usr/bin/time -f '    %e s, max RSS %M KiB' \
    timeout "${M_LIVENESS_TIMEOUT}" "${exec_in_poold}" "${M_LIVENESS[@]}"
  log "pod: readinessProbe (timeoutSeconds ${M_READINESS_TIMEOUT}): ${M_READINESS[*]}"
  expect_code 0 /usr/bin/time -f '    %e s, max RSS %M KiB' \
    timeout "${M_READINESS_TIMEOUT}" "${exec_in_poold}" "${M_READINESS[@]}"

  log "pod: app ${M_APP_USER}:${M_APP_GROUP} + fsGroup ${M_FSGROUP}:" \
    "poolctl --target=${M_APP_TARGET} stats"
  expect_code 0 run_in_app app "${M_FSGROUP}" \
    /usr/local/bin/poolctl --target="${M_APP_TARGET}" stats
  log "pod: app without the fsGroup may not open the socket (exit code 2):"
  expect_code 2 run_in_app app "" /usr/local/bin/poolctl \
    --target="${M_APP_TARGET}" --connect_timeout=1s health
  log "pod: app cannot remove the socket (its mount is ${M_APP_MOUNT_MODE}):"
  expect_code 1 run_in_app app "${M_FSGROUP}" /bin/rm "${M_APP_TARGET#unix:}"

  if [[ " ${args[*]} " == *" --memory_limit_bytes="* ]]; then
    pod_memory_load
  else
    log "pod: memory-limit load SKIPPED: poold runs without --memory_limit_bytes"
    pod_failed=1
  fi

  log "pod: deploy/defrag-pods.sh with a stand-in kubectl (exec = the above)"
  make_fake_kubectl
  expect_code 0 env KUBECTL="${POD_DIR}/kubectl" deploy/defrag-pods.sh \
    -n poold-example

  # Pod deletion: the app is gone; the runtime sends poold SIGTERM.
  log "pod: SIGTERM to poold (terminationGracePeriodSeconds ${M_GRACE})"
  start=${SECONDS}
  kill -TERM "${poold_pid}"
  code=0
  wait "${unshare_pid}" || code=$?
  unshare_pid=""
  log "pod: poold exited with code ${code} after $((SECONDS - start)) s"
  sed 's/^/    poold: /' "${POD_DIR}/poold.log"
  [[ "${code}" == 0 ]] || pod_failed=1
  if [[ -e "${POD_DIR}/emptydir/${M_APP_TARGET##*/}" ]]; then
    log "pod: socket left behind"
    pod_failed=1
  fi
  log "pod: poold container peak memory" \
    "$(($(cat "${POD_CGROUP}/poold/memory.max_usage_in_bytes") >> 20)) MiB" \
    "of $((M_POOLD_MEMORY >> 20)) MiB;" \
    "$(grep oom_kill "${POD_CGROUP}/poold/memory.oom_control" | tr -s ' \n' ' ')"
  if grep -q '^oom_kill [1-9]' "${POD_CGROUP}/poold/memory.oom_control"; then
    pod_failed=1
  fi
  pod_cleanup
  trap - EXIT
  ((pod_failed == 0)) || fail "pod: see the checks above"
  if ((${#ignored[@]} > 0)); then
    fail "pod: passed, but without ${ignored[*]}, unknown to this poold"
  fi
}

# Fills poold past --memory_limit_bytes from the app: allocations must fail
# with RESOURCE_EXHAUSTED, not get poold OOM-killed.
pod_memory_load() {
  local pool_limit count
  pool_limit="$(printf '%s\n' "${args[@]}" |
    sed -n 's/^--memory_limit_bytes=//p')"
  # Blocks of 1..4 MiB (2.5 MiB on average) for 1.25 x the pool limit.
  count=$((pool_limit * 5 / 4 / (5 << 19) + 1))
  log "pod: app fills poold: poolctl load --count=${count}" \
    "--sizes=1MiB:4MiB --free_fraction=0 --concurrency=32 (wants" \
    "RESOURCE_EXHAUSTED past --memory_limit_bytes=${pool_limit}; exit code 3)"
  expect_code 3 run_in_app client "${M_FSGROUP}" /usr/local/bin/poolctl \
    --target="${M_APP_TARGET}" load --count="${count}" --sizes=1MiB:4MiB \
    --free_fraction=0 --concurrency=32
  log "pod: poold still serves after that:"
  expect_code 0 "${exec_in_poold}" "${M_LIVENESS[@]}"
  expect_code 0 run_in_app app "${M_FSGROUP}" /usr/local/bin/poolctl \
    --target="${M_APP_TARGET}" stats
}

# kubectl stand-in for defrag-pods.sh: `get pods` names one pod, `exec -c
# poold -- CMD` runs CMD in the running poold container.
make_fake_kubectl() {
  {
    echo '#!/bin/bash'
    echo '# kubectl stand-in written by deploy/verify-image.sh (pod step).'
    cat <<'EOF'
case "$1" in
  get) echo "poold-example pool-app-verify" ;;
  exec)
    [[ "$*" == "exec -n poold-example pool-app-verify -c poold -- "* ]] ||
      { echo "unexpected: kubectl $*" >&2; exit 1; }
    shift 7
    exec "$(dirname "$0")/exec-in-poold" "$@" ;;
  *) echo "unexpected: kubectl $*" >&2; exit 1 ;;
esac
EOF
  } >"${POD_DIR}/kubectl"
  chmod +x "${POD_DIR}/kubectl"
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
  # One run at a time: runs share the working containers, cgroups and WORK.
  mkdir -p "${WORK}"
  exec 9>"${WORK}/lock"
  flock -n 9 || fail "another verify-image.sh is running (${WORK}/lock)"
  for step in "${steps[@]}"; do run_step "${step}"; done
  echo
  echo "verify-image: all passed: ${steps[*]} (${SECONDS} s)"
}

# (exit here: bash reads a script as it runs, so an edit made meanwhile must
# not be executed.)
main "$@"; exit
