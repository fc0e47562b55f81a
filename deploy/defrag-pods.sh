#!/usr/bin/env bash
# Defragments poold in every pod of a selection, one pod at a time: for each
# running pod, `kubectl exec` runs `poolctl defrag` (or `analyze` with
# --analyze) in the poold sidecar container against its Unix socket and
# prints the report. Exit code: 0 every pod done, 1 a pod failed (the others
# are still attempted), 2 usage, 3 no running pod matched.
#
# Usage: deploy/defrag-pods.sh [-n NAMESPACE | -A] [-l SELECTOR]
#          [-c CONTAINER] [-s SOCKET] [--analyze] [--pause SECONDS]
#          [-- POOLCTL_FLAGS...]
#   -n NAMESPACE   namespace (default: kubectl's current one)
#   -A             every namespace
#   -l SELECTOR    label selector (default: poold-sidecar=true)
#   -c CONTAINER   poold's container name (default: poold)
#   -s SOCKET      poold's socket in that container
#                  (default: /run/poold/poold.sock)
#   --analyze      only show what a defragmentation would do (poolctl analyze)
#   --pause N      wait N seconds between two pods (default: 0)
#   -- FLAGS       more poolctl flags, e.g. -- --pools=small,medium
#                  --timeout=5m --output=json
# KUBECTL names the kubectl binary (default: kubectl); KUBECONFIG and the
# current context choose the cluster as usual. RBAC: list pods and create
# pods/exec in the namespaces concerned.
set -uo pipefail

usage() {
  sed -n '/^# Usage:/,/^# KUBECTL/{/^# KUBECTL/!p;}' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

kubectl_cmd="${KUBECTL:-kubectl}"
namespace_args=()
selector="poold-sidecar=true"
container="poold"
socket="/run/poold/poold.sock"
subcommand="defrag"
pause=0
poolctl_flags=()

while (($# > 0)); do
  case "$1" in
    -n) (($# >= 2)) || usage; namespace_args=(-n "$2"); shift 2 ;;
    -A) namespace_args=(-A); shift ;;
    -l) (($# >= 2)) || usage; selector="$2"; shift 2 ;;
    -c) (($# >= 2)) || usage; container="$2"; shift 2 ;;
    -s) (($# >= 2)) || usage; socket="$2"; shift 2 ;;
    --analyze) subcommand="analyze"; shift ;;
    --pause)
      if (($# < 2)) || ! [[ "$2" =~ ^[0-9]+$ ]]; then usage; fi
      pause="$2"; shift 2 ;;
    --) shift; poolctl_flags=("$@"); break ;;
    -h | --help) usage ;;
    *) echo "defrag-pods: unknown argument '$1'" >&2; usage ;;
  esac
done

# "namespace name" per running pod that matches.
if ! pods="$("${kubectl_cmd}" get pods "${namespace_args[@]}" -l "${selector}" \
    --field-selector=status.phase=Running \
    -o 'jsonpath={range .items[*]}{.metadata.namespace}{" "}{.metadata.name}{"\n"}{end}')"; then
  echo "defrag-pods: kubectl get pods failed" >&2
  exit 1
fi
if [[ -z "${pods}" ]]; then
  echo "defrag-pods: no running pod matches -l ${selector}" >&2
  exit 3
fi

done_pods=()
failed_pods=()
first=1
while read -r pod_namespace pod_name; do
  [[ -n "${pod_name}" ]] || continue
  if ((!first && pause > 0)); then sleep "${pause}"; fi
  first=0
  echo "==== ${pod_namespace}/${pod_name}: poolctl ${subcommand}"
  # </dev/null: kubectl exec must not eat the rest of the pod list.
  "${kubectl_cmd}" exec -n "${pod_namespace}" "${pod_name}" -c "${container}" \
    -- /usr/local/bin/poolctl "${subcommand}" "--target=unix:${socket}" \
    "${poolctl_flags[@]}" </dev/null
  code=$?
  if ((code == 0)); then
    done_pods+=("${pod_namespace}/${pod_name}")
  else
    echo "==== ${pod_namespace}/${pod_name}: FAILED (exit code ${code})" >&2
    failed_pods+=("${pod_namespace}/${pod_name}")
  fi
done <<<"${pods}"

echo "defrag-pods: ${subcommand}: ${#done_pods[@]} pods done, ${#failed_pods[@]} failed${failed_pods[*]:+: ${failed_pods[*]}}"
((${#failed_pods[@]} == 0))
