#!/usr/bin/env bash
# Runs poold's whole benchmark suite (issue 7, docs/PERFORMANCE.md) and
# writes every table into one folder, printing them as well:
#
#   1. fragmentation workloads W1..W8: run_fragmentation.py (engine, glibc,
#      jemalloc)                        -> fragmentation.md/.json/.png
#   2. engine fast path + compaction: engine_bench (Google Benchmark)
#                                       -> engine_bench.txt/.json
#   3. service cost: service_bench      -> service.md/.json
#   4. pause: pause_bench               -> pause.md/.json
#   5. whole-process memory on a mixed-size sequence: mixed_bench (poold
#      over gRPC, glibc, jemalloc, Redis) -> mixed.md/.json/.png
#   6. automatic defragmentation off and on under churn: churn_bench, at
#      each of CHURN_RATES allocations per second -> churn-RATE.md/.json/.png
#   9. small values, unary calls and batches against Redis pipelines:
#      pipeline_bench                  -> pipeline.md/.json/.png
#  10. small reads beside a client of 64 MiB blocks: stall_bench
#                                       -> stall.md
#   plus machine.txt (nproc, CPU model, kernel, load before and after).
#
#   tests/bench/run_all.sh [--build DIR] [--out DIR] [--only LIST]
#
# --build: a build folder with the benchmarks built (default build; e.g.
#   cmake -S . -B build -G Ninja && ninja -C build engine_bench frag_bench
#   service_bench pause_bench). --out: where the results go (default
#   bench-results). --only: a comma-separated subset of frag,engine,service,
#   pause,mixed,churn,pipeline,stall.
#
# Scales (environment variables; with the defaults the suite took 12 minutes
# on 2 quiet cores, half of it the fragmentation workloads; FRAG_SCALE=0.25
# takes about 7):
#   FRAG_SCALE=1.0            run_fragmentation.py --scale (1.0 = the issue's
#                             2 GiB per phase, 400 MiB live)
#   ENGINE_MIN_TIME=0.5       engine_bench --benchmark_min_time (seconds)
#   SERVICE_ROUNDS=5          service_bench --rounds
#   SERVICE_SECONDS=1         service_bench --seconds (per phase)
#   SERVICE_STREAMS=1,8,64    service_bench --streams
#   PAUSE_FILL_MIB=1024       pause_bench --fill_mib (per round)
#   PAUSE_ROUNDS=5            pause_bench --rounds
#   PAUSE_BASELINE_SECONDS=3  pause_bench --baseline_seconds (per round)
#   MIXED_LIVE_MIB=16,64,256,1024  mixed_bench --live_mib (about 8 minutes
#                             in all; the 1024 MiB row needs ~8 GiB free)
#   CHURN_RATES=500,2000      churn_bench --allocs_per_second, one run of
#                             both modes per rate (about 6 minutes each)
#   CHURN_SECONDS=150         churn_bench --seconds (per mode)
#   PIPELINE_DEPTHS=1,4,16,64,256  pipeline_bench --depths (about 1 minute)
#   STALL_SECONDS=5           stall_bench --seconds (per phase; 4 phases)
#   PYTHON=/usr/bin/python3   Debian's Python, which has python3-matplotlib
#                             for the plot (a pyenv python3 may not)
set -euo pipefail

build=build
out=bench-results
only=frag,engine,service,pause,mixed,churn,pipeline,stall
while (($# > 0)); do
  case "$1" in
    --build) build="$2"; shift 2 ;;
    --build=*) build="${1#*=}"; shift ;;
    --out) out="$2"; shift 2 ;;
    --out=*) out="${1#*=}"; shift ;;
    --only) only="$2"; shift 2 ;;
    --only=*) only="${1#*=}"; shift ;;
    -h|--help)
      awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
      exit 0 ;;
    *) echo "run_all.sh: unknown argument $1 (see --help)" >&2; exit 1 ;;
  esac
done

: "${FRAG_SCALE:=1.0}"
: "${ENGINE_MIN_TIME:=0.5}"
: "${SERVICE_ROUNDS:=5}"
: "${SERVICE_SECONDS:=1}"
: "${SERVICE_STREAMS:=1,8,64}"
: "${PAUSE_FILL_MIB:=1024}"
: "${PAUSE_ROUNDS:=5}"
: "${PAUSE_BASELINE_SECONDS:=3}"
: "${MIXED_LIVE_MIB:=16,64,256,1024}"
: "${CHURN_RATES:=500,2000}"
: "${CHURN_SECONDS:=150}"
: "${PIPELINE_DEPTHS:=1,4,16,64,256}"
: "${STALL_SECONDS:=5}"
: "${PYTHON:=/usr/bin/python3}"

here="$(cd "$(dirname "$0")" && pwd)"
bench="${build}/tests/bench"
wanted() { [[ ",${only}," == *",$1,"* ]]; }

missing=()
wanted frag && [[ ! -x "${bench}/frag_bench" ]] && missing+=(frag_bench)
wanted engine && [[ ! -x "${bench}/engine_bench" ]] && missing+=(engine_bench)
wanted service && [[ ! -x "${bench}/service_bench" ]] && missing+=(service_bench)
wanted pause && [[ ! -x "${bench}/pause_bench" ]] && missing+=(pause_bench)
wanted mixed && [[ ! -x "${bench}/mixed_bench" ]] && missing+=(mixed_bench)
wanted churn && [[ ! -x "${bench}/churn_bench" ]] && missing+=(churn_bench)
wanted pipeline && [[ ! -x "${bench}/pipeline_bench" ]] &&
  missing+=(pipeline_bench)
wanted stall && [[ ! -x "${bench}/stall_bench" ]] && missing+=(stall_bench)
if ((${#missing[@]} > 0)); then
  echo "run_all.sh: not built in ${build}: ${missing[*]}" >&2
  echo "  build them: ninja -C ${build} ${missing[*]}" >&2
  exit 1
fi

mkdir -p "${out}"
started=$(date +%s)

# Prints a heading, runs the command with its stdout into the file and on
# the terminal, and says how long it took.
step() {
  local title="$1" file="$2"
  shift 2
  local t0
  t0=$(date +%s)
  printf '\n## %s\n\n' "${title}"
  "$@" | tee "${out}/${file}"
  printf '\n(%s: %d s, load average now %s)\n' "${title}" \
    $(($(date +%s) - t0)) "$(cut -d' ' -f1-3 /proc/loadavg)"
}

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git -C "${here}" rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "nproc: $(nproc)"
  echo "cpu: $(lscpu | sed -n 's/^Model name: *//p')"
  echo "kernel: $(uname -sr)"
  echo "build: ${build} ($(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "${build}/CMakeCache.txt" 2>/dev/null))"
  echo "uptime before: $(uptime)"
  echo "scales: FRAG_SCALE=${FRAG_SCALE} ENGINE_MIN_TIME=${ENGINE_MIN_TIME}" \
    "SERVICE_ROUNDS=${SERVICE_ROUNDS} SERVICE_SECONDS=${SERVICE_SECONDS}" \
    "SERVICE_STREAMS=${SERVICE_STREAMS} PAUSE_FILL_MIB=${PAUSE_FILL_MIB}" \
    "PAUSE_ROUNDS=${PAUSE_ROUNDS} PAUSE_BASELINE_SECONDS=${PAUSE_BASELINE_SECONDS}" \
    "MIXED_LIVE_MIB=${MIXED_LIVE_MIB}" "CHURN_RATES=${CHURN_RATES}" \
    "CHURN_SECONDS=${CHURN_SECONDS}"
} > "${out}/machine.txt"
cat "${out}/machine.txt"

if wanted frag; then
  plot=(--plot "${out}/fragmentation.png")
  if ! "${PYTHON}" -c 'import matplotlib' 2>/dev/null; then
    echo "run_all.sh: ${PYTHON} has no matplotlib (Debian: python3-matplotlib);" \
      "no plot" >&2
    plot=()
  fi
  step "1. Fragmentation workloads (scale ${FRAG_SCALE})" fragmentation.md \
    "${PYTHON}" "${here}/run_fragmentation.py" --build "${build}" \
    --scale "${FRAG_SCALE}" --json "${out}/fragmentation.json" "${plot[@]}"
fi

if wanted engine; then
  step "2. Engine fast path and compaction" engine_bench.txt \
    "${bench}/engine_bench" --benchmark_min_time="${ENGINE_MIN_TIME}" \
    --benchmark_out="${out}/engine_bench.json" --benchmark_out_format=json
fi

if wanted service; then
  step "3. Service cost" service.md \
    "${bench}/service_bench" --rounds="${SERVICE_ROUNDS}" \
    --seconds="${SERVICE_SECONDS}" --streams="${SERVICE_STREAMS}" \
    --json="${out}/service.json"
fi

if wanted pause; then
  step "4. Pause" pause.md \
    "${bench}/pause_bench" --fill_mib="${PAUSE_FILL_MIB}" \
    --rounds="${PAUSE_ROUNDS}" --baseline_seconds="${PAUSE_BASELINE_SECONDS}" \
    --json="${out}/pause.json" --samples_csv="${out}/pause_samples.csv"
fi

if wanted mixed; then
  step "5. Whole-process memory, mixed sizes" mixed.md \
    "${bench}/mixed_bench" --live_mib="${MIXED_LIVE_MIB}" \
    --json="${out}/mixed.json"
  if "${PYTHON}" -c 'import matplotlib' 2>/dev/null; then
    "${PYTHON}" "${here}/plot_mixed.py" "${out}/mixed.json" "${out}/mixed.png"
  fi
fi

if wanted churn; then
  IFS=, read -r -a rates <<< "${CHURN_RATES}"
  for rate in "${rates[@]}"; do
    step "6. Automatic defragmentation under churn, ${rate} allocations/s" \
      "churn-${rate}.md" "${bench}/churn_bench" --allocs_per_second="${rate}" \
      --seconds="${CHURN_SECONDS}" --json="${out}/churn-${rate}.json"
    if "${PYTHON}" -c 'import matplotlib' 2>/dev/null; then
      "${PYTHON}" "${here}/plot_churn.py" "${out}/churn-${rate}.json" \
        "${out}/churn-${rate}.png"
    fi
  done
fi

if wanted pipeline; then
  step "9. Small values: batches against Redis pipelines" pipeline.md \
    "${bench}/pipeline_bench" --depths="${PIPELINE_DEPTHS}" \
    --json="${out}/pipeline.json"
  if "${PYTHON}" -c 'import matplotlib' 2>/dev/null; then
    "${PYTHON}" "${here}/plot_pipeline.py" "${out}/pipeline.json" \
      "${out}/pipeline.png"
  fi
fi

if wanted stall; then
  step "10. Small reads beside a client of 64 MiB blocks" stall.md \
    "${bench}/stall_bench" --seconds="${STALL_SECONDS}"
fi

echo "uptime after: $(uptime)" >> "${out}/machine.txt"
printf '\nrun_all.sh: %d s in all; results in %s\n' \
  $(($(date +%s) - started)) "${out}"
