#include "workers/child_process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string_view>

extern char** environ;

namespace shoal::workers {
namespace {

int decode_status(int status) {
  if (WIFEXITED(status))
    return WEXITSTATUS(status);
  if (WIFSIGNALED(status))
    return 128 + WTERMSIG(status);
  return 255;
}

// posix_spawn's attribute and file-action objects, destroyed on every way out.
struct spawn_objects {
  posix_spawnattr_t attr;
  posix_spawn_file_actions_t actions;
  bool attr_ok = false, actions_ok = false;
  spawn_objects() {
    attr_ok = ::posix_spawnattr_init(&attr) == 0;
    actions_ok = ::posix_spawn_file_actions_init(&actions) == 0;
  }
  ~spawn_objects() {
    if (attr_ok)
      ::posix_spawnattr_destroy(&attr);
    if (actions_ok)
      ::posix_spawn_file_actions_destroy(&actions);
  }
  spawn_objects(const spawn_objects&) = delete;
  spawn_objects& operator=(const spawn_objects&) = delete;
};

} // namespace

namespace {

// The signals a child gets back at their defaults, whatever the parent did with them.
sigset_t default_signals() {
  sigset_t defaults;
  ::sigemptyset(&defaults);
  for (int s : {SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGCHLD, SIGUSR1, SIGUSR2})
    ::sigaddset(&defaults, s);
  return defaults;
}

// fork + execve for a child that needs prctl(PR_SET_PDEATHSIG), which posix_spawn cannot set.
// Everything (argv, envp, fds, the signal set, the error pipe) is ready before the fork; the
// child makes only async-signal-safe system calls and reports an exec failure's errno through
// a close-on-exec pipe, so the parent can tell "started" from "could not start".
result<pid_t> fork_exec(const spawn_request& req, int null_fd) {
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0)
    return fail(errc::io, std::string("spawn_process: pipe: ") + std::strerror(errno));
  const sigset_t defaults = default_signals();
  sigset_t none;
  ::sigemptyset(&none);
  const pid_t parent = ::getpid();
  const int fds[3] = {null_fd >= 0 ? null_fd : req.stdin_fd, req.stdout_fd, req.stderr_fd};
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int e = errno;
    ::close(report[0]);
    ::close(report[1]);
    return fail(errc::io, std::string("spawn_process: fork: ") + std::strerror(e));
  }
  if (pid == 0) {
    int err = 0;
    if (::prctl(PR_SET_PDEATHSIG, req.parent_death_signal, 0, 0, 0) != 0)
      err = errno;
    else if (::getppid() != parent) // the parent died before the prctl: act as if after
      ::raise(req.parent_death_signal);
    if (err == 0 && req.new_session && ::setsid() < 0)
      err = errno;
    else if (err == 0 && !req.new_session && req.new_process_group && ::setpgid(0, 0) != 0)
      err = errno;
    if (err == 0 && req.cwd && ::chdir(req.cwd) != 0)
      err = errno;
    for (int target = 0; target < 3 && err == 0; ++target)
      if (fds[target] >= 0 && ::dup2(fds[target], target) < 0)
        err = errno;
    for (int s = 1; s < NSIG && err == 0; ++s)
      if (::sigismember(&defaults, s) == 1)
        ::signal(s, SIG_DFL);
    if (err == 0)
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
    if (err == 0 && req.close_other_fds) {
      // keep the report pipe open until the exec (it is close-on-exec)
      if (report[1] > 3)
        ::syscall(SYS_close_range, 3u, static_cast<unsigned>(report[1] - 1), 0u);
      ::syscall(SYS_close_range, static_cast<unsigned>(report[1] + 1), ~0u, 0u);
    }
    if (err == 0) {
      ::execve(req.path, req.argv, req.envp);
      err = errno;
    }
    [[maybe_unused]] auto n = ::write(report[1], &err, sizeof err);
    ::_exit(127);
  }
  ::close(report[1]);
  int err = 0;
  ssize_t n;
  while ((n = ::read(report[0], &err, sizeof err)) < 0 && errno == EINTR) {
  }
  ::close(report[0]);
  if (n == static_cast<ssize_t>(sizeof err)) {
    int st = 0;
    while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    return fail(errc::io, std::string("cannot start ") + req.path + ": " + std::strerror(err));
  }
  return pid;
}

} // namespace

result<pid_t> spawn_process(const spawn_request& req) {
  if (!req.path || !req.argv || !req.envp)
    return fail(errc::invalid_argument, "spawn_process: path, argv and envp are required");
  int null_fd = -1;
  if (req.stdin_null) {
    null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null_fd < 0)
      return fail(errc::io, std::string("spawn_process: /dev/null: ") + std::strerror(errno));
  }
  struct fd_closer {
    int fd;
    ~fd_closer() {
      if (fd >= 0)
        ::close(fd);
    }
  } null_guard{null_fd};
  if (req.parent_death_signal != 0)
    return fork_exec(req, null_fd);
  spawn_objects o;
  if (!o.attr_ok || !o.actions_ok)
    return fail(errc::io, "spawn_process: posix_spawn attributes could not be initialised");
  sigset_t none;
  ::sigemptyset(&none);
  const sigset_t defaults = default_signals();
  short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
  if (req.new_session) {
    flags |= POSIX_SPAWN_SETSID;
  } else if (req.new_process_group) {
    flags |= POSIX_SPAWN_SETPGROUP;
    ::posix_spawnattr_setpgroup(&o.attr, 0);
  }
  ::posix_spawnattr_setsigmask(&o.attr, &none);
  ::posix_spawnattr_setsigdefault(&o.attr, &defaults);
  ::posix_spawnattr_setflags(&o.attr, flags);
  int rc = 0;
  const int fds[3] = {null_fd >= 0 ? null_fd : req.stdin_fd, req.stdout_fd, req.stderr_fd};
  for (int target = 0; target < 3 && rc == 0; ++target)
    if (fds[target] >= 0)
      rc = ::posix_spawn_file_actions_adddup2(&o.actions, fds[target], target);
  if (rc == 0 && req.close_other_fds)
    rc = ::posix_spawn_file_actions_addclosefrom_np(&o.actions, 3);
  if (rc == 0 && req.cwd)
    rc = ::posix_spawn_file_actions_addchdir_np(&o.actions, req.cwd);
  if (rc != 0)
    return fail(errc::io, std::string("spawn_process: file actions: ") + std::strerror(rc));
  pid_t pid = -1;
  rc = ::posix_spawn(&pid, req.path, &o.actions, &o.attr, req.argv, req.envp);
  if (rc != 0)
    return fail(errc::io, std::string("cannot start ") + req.path + ": " + std::strerror(rc));
  return pid;
}

int open_pidfd(pid_t pid) noexcept {
#ifdef SYS_pidfd_open
  long r = ::syscall(SYS_pidfd_open, pid, 0);
  if (r >= 0) {
    ::fcntl(static_cast<int>(r), F_SETFD, FD_CLOEXEC);
    return static_cast<int>(r);
  }
#endif
  (void)pid;
  return -1;
}

result<child_process> child_process::spawn(const child_options& opts) {
  if (opts.argv.empty())
    return fail(errc::invalid_argument, "child_process: empty argv");
  // argv, the program's path and the environment (ours, with opts.env set over it) are built
  // before the spawn.
  auto program = find_program(opts.argv[0]);
  if (!program)
    return fail(errc::io, "cannot start " + opts.argv[0] + ": " + program.error().message);
  const std::string path = program->string();
  std::vector<char*> args;
  for (const auto& a : opts.argv)
    args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<std::string> own;
  for (const auto& [k, v] : opts.env)
    own.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (char** e = environ; e && *e; ++e) {
    std::string_view kv(*e);
    const auto name = kv.substr(0, kv.find('='));
    bool overridden = false;
    for (const auto& [k, v] : opts.env)
      overridden = overridden || name == k;
    if (!overridden)
      envp.push_back(*e);
  }
  for (auto& s : own)
    envp.push_back(s.data());
  envp.push_back(nullptr);
  int out = -1;
  if (!opts.output.empty()) {
    out = ::open(opts.output.c_str(),
                 O_WRONLY | O_CREAT | O_CLOEXEC | (opts.truncate_output ? O_TRUNC : O_APPEND), 0644);
    if (out < 0)
      return fail(errc::io, "child_process: cannot open " + opts.output.string() + ": " + std::strerror(errno));
  }
  spawn_request req;
  req.path = path.c_str();
  req.argv = args.data();
  req.envp = envp.data();
  req.stdout_fd = out;
  req.stderr_fd = out;
  req.stdin_null = opts.stdin_null;
  req.cwd = opts.cwd.empty() ? nullptr : opts.cwd.c_str();
  req.new_process_group = opts.new_process_group;
  req.new_session = opts.new_session;
  req.close_other_fds = opts.close_other_fds;
  req.parent_death_signal = opts.parent_death_signal;
  auto pid = spawn_process(req);
  if (out >= 0)
    ::close(out);
  if (!pid)
    return std::unexpected(pid.error());
  child_process c;
  c.pid_ = *pid;
  c.pidfd_ = open_pidfd(*pid);
  return c;
}

child_process& child_process::operator=(child_process&& o) noexcept {
  if (this != &o) {
    if (pid_ > 0 && !status_)
      terminate(std::chrono::milliseconds(0));
    if (pidfd_ >= 0)
      ::close(pidfd_);
    pid_ = std::exchange(o.pid_, -1);
    pidfd_ = std::exchange(o.pidfd_, -1);
    status_ = o.status_;
  }
  return *this;
}

child_process::~child_process() {
  if (pid_ > 0 && !status_) {
    ::kill(pid_, SIGKILL);
    int st = 0;
    ::waitpid(pid_, &st, 0);
  }
  if (pidfd_ >= 0)
    ::close(pidfd_);
}

void child_process::signal(int sig) const noexcept {
  if (pid_ > 0 && !status_)
    ::kill(pid_, sig);
}

std::optional<int> child_process::wait(std::optional<std::chrono::milliseconds> timeout) {
  if (status_ || pid_ <= 0)
    return status_;
  const auto until = timeout ? std::chrono::steady_clock::now() + *timeout : std::chrono::steady_clock::time_point::max();
  for (;;) {
    int st = 0;
    pid_t r = ::waitpid(pid_, &st, timeout ? WNOHANG : 0);
    if (r == pid_) {
      status_ = decode_status(st);
      if (pidfd_ >= 0)
        ::close(std::exchange(pidfd_, -1));
      return status_;
    }
    if (r < 0 && errno != EINTR) {
      status_ = 255; // not our child any more (reaped elsewhere)
      return status_;
    }
    if (!timeout)
      continue; // EINTR
    const auto now = std::chrono::steady_clock::now();
    if (now >= until)
      return std::nullopt;
    // Sleep until the exit (pidfd readable) or the timeout; without a pidfd, poll every 10 ms.
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - now).count() + 1;
    if (pidfd_ >= 0) {
      pollfd p{pidfd_, POLLIN, 0};
      ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 60'000)));
    } else {
      ::poll(nullptr, 0, static_cast<int>(std::min<long long>(left, 10)));
    }
  }
}

int child_process::terminate(std::chrono::milliseconds grace) {
  if (status_ || pid_ <= 0)
    return status_.value_or(0);
  ::kill(pid_, SIGTERM);
  if (auto s = wait(grace))
    return *s;
  ::kill(pid_, SIGKILL);
  return *wait();
}

pid_t child_process::release() noexcept {
  if (pidfd_ >= 0)
    ::close(std::exchange(pidfd_, -1));
  return status_ ? -1 : std::exchange(pid_, -1);
}

result<int> run_to_completion(const child_options& opts) {
  auto c = child_process::spawn(opts);
  if (!c)
    return std::unexpected(c.error());
  return *c->wait();
}

result<std::filesystem::path> find_program(const std::string& name) {
  if (name.find('/') != std::string::npos)
    return std::filesystem::path(name);
  const char* path_env = std::getenv("PATH");
  std::string_view dirs = path_env ? path_env : "/usr/local/bin:/usr/bin:/bin";
  while (true) {
    const auto colon = dirs.find(':');
    const std::string_view dir = dirs.substr(0, colon);
    std::filesystem::path candidate = std::filesystem::path(dir.empty() ? "." : std::string(dir)) / name;
    std::error_code ec;
    if (::access(candidate.c_str(), X_OK) == 0 && !std::filesystem::is_directory(candidate, ec))
      return candidate;
    if (colon == std::string_view::npos)
      break;
    dirs.remove_prefix(colon + 1);
  }
  return fail(errc::not_found, "no executable " + name + " in PATH");
}

bool make_process_non_dumpable() noexcept { return ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0; }

std::filesystem::path self_executable() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::filesystem::path("shoal") : p;
}

} // namespace shoal::workers
