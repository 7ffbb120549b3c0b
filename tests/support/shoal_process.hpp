#pragma once
// Running the built `shoal` executable from a test: start it with extra environment and its
// output in a log file, wait for it (killing it on timeout), wait for a line in its log.
// workers::child_process SIGKILLs and reaps a child still running when it goes out of scope, so
// a failed assertion never leaves a process behind.

#include "workers/child_process.hpp"

#include <chrono>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace shoal::tests {

/// Starts `shoal args…` with `env` set (name, value) on top of this process's environment (an
/// empty value counts as unset for shoal's variables), its stdout and stderr appended to `log`.
/// Throws std::runtime_error when it cannot start (gtest reports it as the test's failure).
workers::child_process spawn_shoal(const std::vector<std::string>& args,
                                   const std::vector<std::pair<std::string, std::string>>& env,
                                   const std::filesystem::path& log);

/// The exit status of `c` (128 + signal when killed), or -1 after `timeout` (it is then killed).
int wait_exit(workers::child_process& c, std::chrono::milliseconds timeout);

/// The whole file, or "" when it cannot be read (a /proc file whose process exits mid-read
/// included).
std::string slurp(const std::filesystem::path& file);

/// Waits until `file` contains `text`; false after `timeout`.
bool wait_for_text(const std::filesystem::path& file, const std::string& text,
                   std::chrono::milliseconds timeout);

} // namespace shoal::tests
