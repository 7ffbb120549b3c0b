#pragma once
// Child processes, the one launcher of shoal: spawn_process (posix_spawn, which glibc runs as
// clone(CLONE_VM | CLONE_VFORK): the parent's page tables are not copied, so starting a child
// costs the same whatever the parent's size and thread count; fork + execve only for a parent
// death signal, which posix_spawn cannot set), and child_process on top of it with optional
// output redirection, bounded waits (pidfd + poll, no sleep loop) and signals. Used by `shoal
// run` to drive the persistor, sender and ETL processes, by supervisors for their workers, by
// the exec job for the command of every record, by local Azurite, and by tests and benches.

#include "workers/error.hpp"

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace shoal::workers {

/// What spawn_process starts. Everything is prepared by the caller before the call, so nothing
/// is allocated or computed between the clone and the exec.
struct spawn_request {
  const char* path = nullptr;      ///< the program, run as is (no PATH search)
  char* const* argv = nullptr;     ///< null-terminated, argv[0] included
  char* const* envp = nullptr;     ///< null-terminated: the child's whole environment
  const char* cwd = nullptr;       ///< the child's working directory; null = ours
  int stdin_fd = -1;               ///< becomes the child's fd 0; -1 = inherit ours
  int stdout_fd = -1;              ///< becomes fd 1; -1 = inherit ours
  int stderr_fd = -1;              ///< becomes fd 2; -1 = inherit ours
  bool stdin_null = false;         ///< fd 0 is /dev/null (read-only); wins over stdin_fd
  bool new_process_group = false;  ///< the child leads a new process group (pgid = its pid)
  bool new_session = false;        ///< setsid(2): a new session and group, no controlling tty;
                                   ///< wins over new_process_group
  bool close_other_fds = false;    ///< close every fd ≥ 3 in the child, close-on-exec or not
  /// Signal the kernel sends the child when the thread that spawned it exits (prctl(2)
  /// PR_SET_PDEATHSIG; 0 = none). Set from a thread that outlives the child (the main thread).
  /// If the parent is already gone when the child starts, the child gets it at once.
  int parent_death_signal = 0;
};

/// Starts `req`: posix_spawn, or fork + execve when a parent death signal is asked for (the
/// child then runs only async-signal-safe system calls: prctl, setsid/setpgid, chdir, dup2,
/// close_range, sigprocmask, execve). In the child the signal mask is emptied and SIGPIPE,
/// SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGCHLD, SIGUSR1 and SIGUSR2 are reset to their defaults
/// (a worker blocks or handles some of them). Returns the child's pid; the caller must reap it.
/// Errors: invalid_argument (path, argv or envp null), io (the program cannot be executed —
/// the message names it and says why, e.g. ENOENT/EACCES — or the clone failed).
/// Thread-safe.
[[nodiscard]] result<pid_t> spawn_process(const spawn_request& req);

/// A pidfd of child `pid` (pidfd_open(2), close-on-exec): readable once the child exits, so
/// poll(2) can wait for the exit together with pipes. -1 when the kernel has none (before 5.3).
/// Open it before reaping the child. Thread-safe.
int open_pidfd(pid_t pid) noexcept;

/// How to start a child.
struct child_options {
  std::vector<std::string> argv;                           ///< argv[0] is the program path
  std::vector<std::pair<std::string, std::string>> env;    ///< set (overriding) in the child
  std::filesystem::path output;  ///< stdout+stderr appended here; empty = inherit ours
  bool new_process_group = false; ///< setpgid(0,0): a terminal's Ctrl-C does not reach it
  bool truncate_output = false;   ///< truncate `output` first instead of appending
  std::filesystem::path cwd = {}; ///< the child's working directory; empty = ours
  bool stdin_null = false;        ///< stdin is /dev/null instead of ours
  bool new_session = false;       ///< setsid(2) in the child (see spawn_request)
  bool close_other_fds = false;   ///< close every fd ≥ 3 in the child
  int parent_death_signal = 0;    ///< see spawn_request::parent_death_signal; 0 = none
};

/// A started child. Move-only; the destructor SIGKILLs and reaps a child still running.
/// Owner only.
class child_process {
public:
  /// spawn_process of argv with our environment plus `env`. argv[0] without a '/' is looked up
  /// in PATH (before the spawn, like execvp(3)). Errors: invalid_argument (empty argv),
  /// io (the program cannot be executed or found, or the output file cannot be opened).
  [[nodiscard]] static result<child_process> spawn(const child_options& opts);

  child_process(child_process&& o) noexcept
      : pid_(std::exchange(o.pid_, -1)), pidfd_(std::exchange(o.pidfd_, -1)), status_(o.status_) {}
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
  /// Gives up ownership: the destructor no longer kills or reaps the child, the caller must
  /// (e.g. a detached daemon). Returns the pid (-1 if already reaped).
  pid_t release() noexcept;

private:
  child_process() = default;
  pid_t pid_ = -1;
  int pidfd_ = -1;  // open_pidfd(pid_) or -1; closed when the child is reaped
  std::optional<int> status_;
};

/// Marks this process non-dumpable (prctl(2) PR_SET_DUMPABLE 0): its /proc/PID/environ, mem,
/// maps and fd entries become readable only with CAP_SYS_PTRACE, it cannot be ptraced by its
/// own user, and it leaves no core dump. Every shoal process calls it at start, because each may
/// hold the storage connection string in its environment: the exec job's command runs as the
/// worker's user and could otherwise read /proc/PPID/environ. A child regains the default at
/// execve, so commands are unaffected. Returns false if the kernel refused (errno kept).
/// Thread-safe (process-wide).
bool make_process_non_dumpable() noexcept;

/// Runs `opts` to completion and returns its exit status (128 + signal for a killed child).
/// Errors: those of child_process::spawn. Thread-safe.
[[nodiscard]] result<int> run_to_completion(const child_options& opts);

/// `name` looked up like execvp(3): as is if it contains a '/', else the first executable
/// PATH entry holding it. Errors: not_found (no such executable in PATH). Thread-safe.
[[nodiscard]] result<std::filesystem::path> find_program(const std::string& name);

/// Path of the running executable (/proc/self/exe).
std::filesystem::path self_executable();

} // namespace shoal::workers
