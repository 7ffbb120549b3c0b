#pragma once
// The pid file of a CTest fixture's daemon (state/pid): how its launcher's `stop` ends it.
// Header-only: the launchers are small programs of their own (tests/CMakeLists.txt).

#include "workers/local_azurite.hpp"

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string_view>

namespace shoal::tests {

/// Stops the process whose pid `state`/pid holds (workers::stop_process: SIGINT, SIGKILL after
/// `timeout`), removes the pid file and prints "<who> <pid> stopped". Returns the pid, or 0
/// after saying on stderr that there is no pid file (not started: not an error).
inline pid_t stop_from_pid_file(const std::filesystem::path& state, std::string_view who,
                                std::chrono::milliseconds timeout) {
  std::ifstream in(state / "pid");
  pid_t pid = 0;
  if (!(in >> pid) || pid <= 0) {
    std::cerr << "shoal_test_" << who << ": no pid file in " << state << " (not started?)\n";
    return 0;
  }
  workers::stop_process(pid, timeout);
  std::error_code ec;
  std::filesystem::remove(state / "pid", ec);
  std::cout << who << ' ' << pid << " stopped\n";
  return pid;
}

} // namespace shoal::tests
