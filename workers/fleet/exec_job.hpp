#pragma once
// The `exec` job of `shoal worker` (issue 5 item 1): runs a shell command per record, so any
// existing script can be fleet-processed.
//
// For each record: `/bin/sh -c <command>` in its own process group, started with posix_spawn
// (no copy of the worker's page tables; see workers/child_process.hpp), the payload on its
// stdin (written into the socket buffer before the start when it fits, then closed), and a
// CLEAN environment: SHOAL_RECORD_ID, SHOAL_QUEUE, SHOAL_ATTEMPT and SHOAL_GEN plus only the
// worker's variables named in [worker] exec_env (default PATH, HOME, LANG, LC_ALL, TZ, TMPDIR,
// USER, LOGNAME) — never AZURE_STORAGE_CONNECTION_STRING or another secret unless listed.
// Exit 0 = done. A non-zero exit, a death by signal or the timeout
// (SIGTERM to the group, SIGKILL `kill_grace` later) = failed, with an error naming the exit
// code or signal and the last `stderr_tail_bytes` of stderr. A stop request (drain timeout,
// lease lost) terminates the group the same way and returns `release`.
//
// Never blocks forever and never sleeps: stdin, stdout, stderr, the child's exit (a pidfd) and a
// stop request (an eventfd) are waited for with one poll(2), so a child that writes a lot before
// reading, or never reads its stdin at all (EPIPE is expected, not an error), cannot deadlock the
// worker; the child is always reaped (no zombie), and the pipes are abandoned shortly after it
// exits even if a grandchild keeps them open.

#include "workers/fleet/job.hpp"

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

namespace shoal::workers::fleet {

/// Settings of an exec_job. Every field but `command` has a safe default.
struct exec_job_options {
  std::string command;                          ///< run by /bin/sh -c; must not be empty
  std::string queue;                            ///< exported as SHOAL_QUEUE (record.queue if empty)
  std::chrono::milliseconds timeout{60'000};    ///< wall time per record, then SIGTERM
  std::chrono::milliseconds kill_grace{2'000};  ///< SIGTERM → SIGKILL delay (timeout and stop)
  std::size_t stderr_tail_bytes = 2048;         ///< stderr kept for the failure message
  std::size_t stdout_tail_bytes = 512;          ///< stdout kept for the log line (last line shown)
  std::string shell = "/bin/sh";                ///< the shell; tests may point elsewhere
  /// Variables of the worker's environment (read at make()) passed to the command; everything
  /// else is left out. [worker] exec_env.
  std::vector<std::string> pass_env = {"PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER", "LOGNAME"};
};

/// Runs a command per record. One instance per lane: run() is not thread-safe, but several
/// instances may run concurrently in one process.
class exec_job final : public job {
public:
  /// Captures the passed-through environment variables now. Errors: invalid_argument (empty
  /// command or shell, zero timeout, a pass_env entry that is not a variable name), io (no
  /// eventfd).
  [[nodiscard]] static result<std::unique_ptr<exec_job>> make(exec_job_options opts);
  ~exec_job() override;

  std::string_view name() const noexcept override { return "exec"; }

  /// Runs the command on `record`. Returns verdict done (exit 0), failed (exit ≠ 0, signal,
  /// timeout; `error` says which, plus the stderr tail) or release (ctx.stop requested).
  /// A result<> error only when the process cannot be started at all (pipe/spawn failed:
  /// errc::io), which the worker treats as a broken job.
  result<job_result> run(claimed_record& record, const job_context& ctx) override;

  /// The options in use.
  const exec_job_options& options() const noexcept { return opts_; }

  /// The environment the command gets besides the SHOAL_* record variables ("NAME=value"),
  /// fixed at make().
  const std::vector<std::string>& environment() const noexcept { return env_; }

private:
  explicit exec_job(exec_job_options opts) : opts_(std::move(opts)) {}
  exec_job_options opts_;
  std::vector<std::string> env_; // "NAME=value" of the pass_env variables present at make()
  int wake_fd_ = -1;             // eventfd: a stop request wakes poll(); reused for every record
};

/// exec_job_options from configuration: worker.exec_command, worker.exec_timeout_ms,
/// worker.exec_env and the worker's queue (worker.queue or "exec"). Errors: invalid_argument (no
/// exec_command, a bad exec_env).
[[nodiscard]] result<exec_job_options> exec_options_from(const config& cfg);

} // namespace shoal::workers::fleet
