#!/usr/bin/env bash
# Runs one benchmark against the components it needs, started here on loopback.
#
#   bench/run.sh storage|transport|claim|persistor|etl|e2e|fleet|fuzz [extra args for the bench]
#   bench/run.sh chaos [SCENARIO...]   the chaos scenarios (tests/system/chaos), full size, ~15 min
#   bench/run.sh soak [--minutes 30]   steady load; RSS and descriptors of every process over time
#   (e2e: the naive per-message design vs `shoal run` on flights-2k/20k/200k and a generated
#    1,000,000-event stream over 365 days, same Azurite, its data in memory as `shoal run`
#    keeps it (SHOAL_E2E_AZURITE_DISK=1: on disk); --datasets to pick)
#   (fuzz: [all|envelope|persistor_record|etl_blob] [libFuzzer args], SHOAL_FUZZ_RUNS executions
#    each (default 10,000,000), built with clang-16 in build-fuzz; exits 1 on any finding)
#   (persistor: [records_200B] [records_2KiB], defaults 1000000 500000, ~1 GB per 2 KiB row;
#    `uptime` is printed before and after; PERSISTOR_BENCH_ONLY=persistor|raw for perf record)
#   (fleet: shoal exec/noop vs Celery + Redis vs a raw spawn loop, fresh and with history;
#    [--records N] [--workers W] [--history H]; installs Celery and Redis from Debian first)
#   (scale: 1, 2, 4, 8 hosts in network namespaces (root), sleep:50 and noop jobs, shard
#    assignment on and off, join/leave/failover times; [--hosts 1,2,4,8] [--per-host 400]
#    [--events-only]; writes bench/scale.svg with gnuplot, installed from Debian first; ~15 min;
#    SIGTERM/SIGINT stop it and remove its hosts, Azurite and namespaces)
#
# Builds into ./build (Release figures come from RelWithDebInfo, the default build type).
# Figures are printed; copy them into bench/RESULTS.md with the machine they ran on.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${SHOAL_BUILD_DIR:-$root/build}
what=${1:-}
[ -n "$what" ] || { sed -n '2,22p' "$0"; exit 2; }
shift

with_azurite() {
  local state
  state=$(mktemp -d /tmp/shoal-bench-azurite.XXXXXX)
  # ${azurite_flags}: e.g. --in-memory (e2e: the emulator as `shoal run` starts it)
  "$build/tests/shoal_test_azurite" start --state "$state" \
    --azurite "$root/deploy/local/node_modules/.bin/azurite" ${azurite_flags:-} >&2
  trap '"$build/tests/shoal_test_azurite" stop --state "'"$state"'" >&2; rm -rf "'"$state"'"' EXIT
  export SHOAL_TEST_AZURITE=$state
  export AZURE_STORAGE_CONNECTION_STRING
  AZURE_STORAGE_CONNECTION_STRING=$(head -n1 "$state/connection_string")
  "$@"
}

# Azurite and the fault proxy in front of it (tests/support/fault_proxy.hpp) for the chaos
# scenarios and the soak; both stopped on exit.
with_chaos_storage() {
  local state pstate
  state=$(mktemp -d /tmp/shoal-chaos-azurite.XXXXXX)
  pstate=$(mktemp -d /tmp/shoal-chaos-proxy.XXXXXX)
  trap '"$build/tests/shoal_test_fault_proxy" stop --state "'"$pstate"'" >&2
        "$build/tests/shoal_test_azurite" stop --state "'"$state"'" >&2
        rm -rf "'"$state"'" "'"$pstate"'"' EXIT
  "$build/tests/shoal_test_azurite" start --state "$state" \
    --azurite "$root/deploy/local/node_modules/.bin/azurite" >&2
  "$build/tests/shoal_test_fault_proxy" start --state "$pstate" --upstream-state "$state" >&2
  SHOAL_TEST_AZURITE=$state SHOAL_TEST_FAULT_PROXY=$pstate "$@"
}

case "$what" in
  chaos|soak)
    cmake --build "$build" --target shoal_chaos shoal shoal_test_azurite shoal_test_fault_proxy
    uptime
    if [ "$what" = chaos ]; then
      with_chaos_storage "$build/tests/shoal_chaos" run --size full "$@"
    else
      with_chaos_storage "$build/tests/shoal_chaos" soak "$@"
    fi
    uptime
    ;;
  fuzz)
    # bench/run.sh fuzz [all|envelope|persistor_record|etl_blob] [libFuzzer args]; all by
    # default. Each target runs SHOAL_FUZZ_RUNS executions (default 10,000,000, libFuzzer's
    # -runs), or stops after SHOAL_FUZZ_SECONDS if that is set; a crash, sanitizer report or
    # broken invariant (each target aborts on one) keeps its input under $SHOAL_FUZZ_ARTIFACTS
    # (default /tmp/shoal-fuzz-artifacts) and makes the run exit 1 after the other targets ran.
    # clang 16, installed here (not by deploy/setup.sh: only the fuzzers need it): the workers
    # targets need it (tests/fuzz/CMakeLists.txt).
    targets=(envelope persistor_record etl_blob)
    case "${1:-}" in
      all) shift ;;
      envelope|persistor_record|etl_blob) targets=("$1"); shift ;;
    esac
    runs=${SHOAL_FUZZ_RUNS:-10000000}
    limit=()
    [ -z "${SHOAL_FUZZ_SECONDS:-}" ] || limit=(-max_total_time="$SHOAL_FUZZ_SECONDS")
    artifacts=${SHOAL_FUZZ_ARTIFACTS:-/tmp/shoal-fuzz-artifacts}
    mkdir -p "$artifacts"
    bash "$root/bench/debian_packages.sh" clang-16 libclang-rt-16-dev
    fbuild=${SHOAL_FUZZ_BUILD_DIR:-$root/build-fuzz}
    CC=clang-16 CXX=clang++-16 cmake -S "$root" -B "$fbuild" -G Ninja -DSHOAL_FUZZ=ON \
      -DSHOAL_BUILD_TESTS=OFF -DSHOAL_BUILD_BENCH=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$fbuild" --target "${targets[@]/%/_fuzz}"
    summary=() failed=0
    for target in "${targets[@]}"; do
      corpus=$(mktemp -d /tmp/shoal-fuzz-corpus.XXXXXX)
      if [ "$target" = envelope ]; then
        cp "$root"/transport/fuzz/corpus/* "$corpus"/
        binary="$fbuild/transport/envelope_fuzz"
      else
        cp "$root"/tests/fuzz/corpus/"$target"/* "$corpus"/
        binary="$fbuild/tests/fuzz/${target}_fuzz"
      fi
      log="$artifacts/$target.log"
      echo "== $target: $runs executions ${limit[*]}, log $log; $(uptime)"
      start=$(date +%s)
      rc=0
      "$binary" "$corpus" -runs="$runs" "${limit[@]}" -print_final_stats=1 \
        -artifact_prefix="$artifacts/$target-" "$@" >"$log" 2>&1 || rc=$?
      grep -v '^#' "$log" | tail -n 40 || true
      execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
      line="$target: ${execs:-?} executions in $(( $(date +%s) - start )) s, exit $rc; $(uptime)"
      short=0
      if [ -z "${SHOAL_FUZZ_SECONDS:-}" ] && [ "${execs:-0}" -lt "$runs" ]; then short=1; fi
      if [ "$rc" -ne 0 ] || [ -z "$execs" ] || [ "$short" -eq 1 ]; then
        line="$line  FAILED (input and log under $artifacts)"
        failed=1
      fi
      summary+=("$line")
      rm -rf "$corpus"
    done
    printf '%s\n' "== fuzz summary" "${summary[@]}"
    exit "$failed"
    ;;
  scale)
    # Its own Azurite on the namespaces' bridge (tests/support/netns_fleet.hpp), none here.
    bash "$root/bench/debian_packages.sh" gnuplot-nox
    cmake --build "$build" --target scale_bench shoal
    uptime
    # In the background, so a SIGTERM/SIGINT/SIGHUP to this script reaches the bench, which then
    # tears down its hosts, Azurite and network namespaces (bash would otherwise die alone and
    # leave it running, or a signal to the bench alone would leave all of them behind).
    "$build/bench/scale_bench" --svg "$root/bench/scale.svg" "$@" &
    bench=$!
    trap 'kill -TERM "$bench" 2>/dev/null || true' TERM INT HUP
    rc=0
    while :; do
      wait "$bench" && rc=0 || rc=$?
      kill -0 "$bench" 2>/dev/null || break # wait returned for a signal: the bench is finishing
    done
    trap - TERM INT HUP
    uptime
    exit "$rc"
    ;;
  fleet)
    bash "$root/bench/debian_packages.sh" python3-celery python3-redis redis-server
    cmake --build "$build" --target fleet_bench shoal
    uptime
    with_azurite "$build/bench/fleet_bench" "$@"
    uptime
    ;;
  *)
    cmake --build "$build" --target "${what}_bench"
    case "$what" in
      transport) "$build/bench/${what}_bench" "$@" ;;
      persistor)
        uptime
        with_azurite "$build/bench/${what}_bench" "$@"
        uptime
        ;;
      e2e)
        cmake --build "$build" --target shoal
        uptime
        # The emulator keeps its data in memory, as `shoal run` starts it by default
        # (--emulator-data auto); SHOAL_E2E_AZURITE_DISK=1 measures with its data on disk.
        [ -n "${SHOAL_E2E_AZURITE_DISK:-}" ] || azurite_flags=--in-memory
        with_azurite "$build/bench/${what}_bench" "$@"
        uptime
        ;;
      *) with_azurite "$build/bench/${what}_bench" "$@" ;;
    esac
    ;;
esac
