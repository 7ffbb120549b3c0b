#!/usr/bin/env bash
# Runs one benchmark against the components it needs, started here on loopback.
#
#   bench/run.sh storage|transport|claim|persistor|etl|e2e|fuzz [extra args for the bench]
#   bench/run.sh chaos [SCENARIO...]   the chaos scenarios (tests/system/chaos), full size, ~15 min
#   bench/run.sh soak [--minutes 30]   steady load; RSS and descriptors of every process over time
#   (e2e: the naive per-message design vs `shoal run --dataset flights-200k`, same Azurite)
#   (persistor: [records_200B] [records_2KiB], defaults 1000000 500000, ~1 GB per 2 KiB row;
#    `uptime` is printed before and after; PERSISTOR_BENCH_ONLY=persistor|raw for perf record)
#
# Builds into ./build (Release figures come from RelWithDebInfo, the default build type).
# Figures are printed; copy them into bench/RESULTS.md with the machine they ran on.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${SHOAL_BUILD_DIR:-$root/build}
what=${1:-}
[ -n "$what" ] || { sed -n '2,12p' "$0"; exit 2; }
shift

with_azurite() {
  local state
  state=$(mktemp -d /tmp/shoal-bench-azurite.XXXXXX)
  "$build/tests/shoal_test_azurite" start --state "$state" \
    --azurite "$root/deploy/local/node_modules/.bin/azurite" >&2
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
    fbuild=${SHOAL_FUZZ_BUILD_DIR:-$root/build-fuzz}
    CC=clang CXX=clang++ cmake -S "$root" -B "$fbuild" -G Ninja -DSHOAL_FUZZ=ON \
      -DSHOAL_BUILD_TESTS=OFF -DSHOAL_BUILD_BENCH=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$fbuild" --target envelope_fuzz
    corpus=$(mktemp -d /tmp/shoal-fuzz-corpus.XXXXXX)
    cp "$root"/transport/fuzz/corpus/* "$corpus"/
    "$fbuild/transport/envelope_fuzz" "$corpus" -max_total_time="${SHOAL_FUZZ_SECONDS:-300}" \
      -print_final_stats=1 "$@"
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
      *) with_azurite "$build/bench/${what}_bench" "$@" ;;
    esac
    ;;
esac
