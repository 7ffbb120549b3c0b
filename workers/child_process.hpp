#pragma once
// Child processes: fork/exec with optional output redirection, bounded waits, signals.
// Used by `shoal run` to drive the persistor, sender and ETL processes (and by supervisors).

#include "workers/error.hpp"

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace shoal::workers {

/// How to start a child.
struct child_options {
  std::vector<std::string> argv;                           ///< argv[0] is the program path
  std::vector<std::pair<std::string, std::string>> env;    ///< set (overriding) in the child
  std::filesystem::path output;  ///< stdout+stderr appended here; empty = inherit ours
  bool new_process_group = false; ///< setpgid(0,0): a terminal's Ctrl-C does not reach it
};

/// A started child. Move-only; the destructor SIGKILLs and reaps a child still running.
/// Owner only.
class child_process {
public:
  /// fork + execv. Errors: io (fork failed; exec failure shows as exit status 127).
  [[nodiscard]] static result<child_process> spawn(const child_options& opts);

  child_process(child_process&& o) noexcept : pid_(std::exchange(o.pid_, -1)), status_(o.status_) {}
  child_process& operator=(child_process&& o) noexcept;
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;
  ~child_process();

  pid_t pid() const noexcept { return pid_; }
  /// Sends `sig` if the child has not been reaped yet.
  void signal(int sig) const noexcept;
  /// Waits up to `timeout` (nullopt = forever) and returns the exit status (128 + signal number
  /// for a killed child), or nullopt if it is still running.
  std::optional<int> wait(std::optional<std::chrono::milliseconds> timeout = std::nullopt);
  /// SIGTERM, wait up to `grace`, then SIGKILL; returns the exit status.
  int terminate(std::chrono::milliseconds grace);

private:
  child_process() = default;
  pid_t pid_ = -1;
  std::optional<int> status_;
};

/// Path of the running executable (/proc/self/exe).
std::filesystem::path self_executable();

} // namespace shoal::workers
