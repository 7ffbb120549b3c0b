#pragma once
// The tests' one way to wait for a condition: poll it until it holds or a timeout passes.
// Tests wait for conditions, never for time; this is the loop they wait with.

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <string>
#include <thread>

namespace shoal::tests {

/// Calls `condition` (a callable whose result tests as bool) until it returns true or `timeout`
/// has passed: once at once, then after waits of 1 ms, 2 ms, 4 ms, … up to `every` (a quick
/// condition is seen quickly; an expensive one, a storage query or a log read, runs at most once
/// per `every`), and a last time at the deadline.
/// Returns a gtest assertion result that converts to bool (`if (eventually(…))`) and, in
/// `ASSERT_TRUE(eventually(…)) << more`, reports "the condition did not hold within <timeout> ms
/// (checked <n> times)". `timeout` is where the test gives up, not a requirement; a test whose
/// requirement is a time says so next to the call. Runs `condition` on the calling thread.
template <class Condition>
[[nodiscard]] ::testing::AssertionResult eventually(Condition&& condition,
                                     std::chrono::milliseconds timeout = std::chrono::seconds(20),
                                     std::chrono::milliseconds every = std::chrono::milliseconds(50)) {
  using clock = std::chrono::steady_clock;
  const auto deadline = clock::now() + timeout;
  std::chrono::milliseconds pause(1);
  std::size_t checks = 0;
  for (;;) {
    ++checks;
    if (static_cast<bool>(condition()))
      return ::testing::AssertionSuccess();
    const auto now = clock::now();
    if (now >= deadline)
      break;
    std::this_thread::sleep_for(std::min<clock::duration>(pause, deadline - now));
    pause = std::min(pause * 2, std::max(every, std::chrono::milliseconds(1)));
  }
  return ::testing::AssertionFailure() << "the condition did not hold within " << timeout.count()
                                       << " ms (checked " << checks << " times)";
}

} // namespace shoal::tests
