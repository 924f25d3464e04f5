#!/usr/bin/env bash
# The whole test suite, as CI runs it:
#   1. installs what is missing (scripts/setup.sh),
#   2. builds onboard and every test, runs ctest (unit, sandbox, e2e and docker labels),
#   3. builds the engine/state unit tests again with -fsanitize=address,undefined and runs them,
#   4. runs the manifest loader's libFuzzer target for 60 seconds (clang 14).
# Build trees go to build/ (override with BUILD_DIR). Set ONBOARD_QUICK=1 to skip steps 3 and 4.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bash scripts/setup.sh
jobs=$(nproc 2>/dev/null || echo 2)
build=${BUILD_DIR:-$root/build}

echo "== build ($build)"
cmake -S "$root" -B "$build/main" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build/main" -j"$jobs"

echo "== ctest"
(cd "$build/main" && ctest --output-on-failure -j"$jobs" --timeout 900) | tee "$build/ctest.log"
# The closing line reports the main suite (the fuzz run below ends with its own one-test ctest line).
summary() {
  awk '/tests passed, [0-9]+ tests? failed out of/ { f = $4; t = $NF } END { if (t != "") printf "tests: %d passed, %d failed\n", t - f, f }' "$build/ctest.log"
}

if [ "${ONBOARD_QUICK:-0}" = 1 ]; then summary; exit 0; fi

echo "== unit tests under AddressSanitizer + UndefinedBehaviorSanitizer"
cmake -S "$root" -B "$build/asan" -DCMAKE_BUILD_TYPE=Debug -DONBOARD_SANITIZE=ON >/dev/null
asan_targets=(engine_tests bootstrap_tests manifest_tests state_tests)
cmake --build "$build/asan" -j"$jobs" --target "${asan_targets[@]}"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
for t in "${asan_targets[@]}"; do
  bin=$(find "$build/asan/tests" -type f -name "$t" -perm -u+x | head -n 1)
  echo "-- $t"
  "$bin" --gtest_brief=1
done

echo "== fuzz the manifest loader for 60 s"
CC=clang-14 CXX=clang++-14 cmake -S "$root" -B "$build/fuzz" -DCMAKE_BUILD_TYPE=Debug -DONBOARD_FUZZ=ON \
  -DONBOARD_TESTS=ON >/dev/null
cmake --build "$build/fuzz" -j"$jobs" --target manifest_fuzz
(cd "$build/fuzz" && ctest --output-on-failure -R manifest_fuzz_smoke --timeout 300)
echo "== all tests passed"
summary
