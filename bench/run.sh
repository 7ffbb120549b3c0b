#!/usr/bin/env bash
# Runs one benchmark against the components it needs, started here on loopback.
#
#   bench/run.sh storage|transport|claim|persistor|etl|e2e|fleet|fuzz [extra args for the bench]
#   (e2e: the naive per-message design vs `shoal run` on flights-2k/20k/200k and a generated
#    1,000,000-event stream over 365 days, same Azurite; --datasets to pick)
#   (fuzz: [envelope|persistor_record|etl_blob] [libFuzzer args], built with clang-16 in build-fuzz)
#   (persistor: [records_200B] [records_2KiB], defaults 1000000 500000, ~1 GB per 2 KiB row;
#    `uptime` is printed before and after; PERSISTOR_BENCH_ONLY=persistor|raw for perf record)
#   (fleet: shoal exec/noop vs Celery + Redis vs a raw spawn loop, fresh and with history;
#    [--records N] [--workers W] [--history H]; installs Celery and Redis from Debian first)
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

case "$what" in
  fuzz)
    # bench/run.sh fuzz [envelope|persistor_record|etl_blob] [libFuzzer args]; envelope by
    # default. clang 16 (deploy/setup.sh): the workers targets need it (tests/fuzz/CMakeLists.txt).
    target=envelope
    case "${1:-}" in envelope|persistor_record|etl_blob) target=$1; shift ;; esac
    fbuild=${SHOAL_FUZZ_BUILD_DIR:-$root/build-fuzz}
    CC=clang-16 CXX=clang++-16 cmake -S "$root" -B "$fbuild" -G Ninja -DSHOAL_FUZZ=ON \
      -DSHOAL_BUILD_TESTS=OFF -DSHOAL_BUILD_BENCH=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$fbuild" --target "${target}_fuzz"
    corpus=$(mktemp -d /tmp/shoal-fuzz-corpus.XXXXXX)
    if [ "$target" = envelope ]; then
      cp "$root"/transport/fuzz/corpus/* "$corpus"/
      binary="$fbuild/transport/envelope_fuzz"
    else
      cp "$root"/tests/fuzz/corpus/"$target"/* "$corpus"/
      binary="$fbuild/tests/fuzz/${target}_fuzz"
    fi
    uptime
    "$binary" "$corpus" -max_total_time="${SHOAL_FUZZ_SECONDS:-300}" -print_final_stats=1 "$@"
    uptime
    rm -rf "$corpus"
    ;;
  fleet)
    bash "$root/bench/fleet_setup.sh"
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
        with_azurite "$build/bench/${what}_bench" "$@"
        uptime
        ;;
      *) with_azurite "$build/bench/${what}_bench" "$@" ;;
    esac
    ;;
esac
