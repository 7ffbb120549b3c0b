#include "workers/fleet/exec_job.hpp"

#include "workers/child_process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <stop_token>
#include <string_view>
#include <vector>


namespace shoal::workers::fleet {
namespace {

using namespace std::chrono;
using clock_type = steady_clock;

// An fd closed on scope exit.
struct fd_guard {
  int fd = -1;
  fd_guard() = default;
  explicit fd_guard(int f) : fd(f) {}
  fd_guard(const fd_guard&) = delete;
  fd_guard& operator=(const fd_guard&) = delete;
  ~fd_guard() { reset(); }
  void reset() {
    if (fd >= 0)
      ::close(fd);
    fd = -1;
  }
};

// Appends `p[0..n)` to `tail`, keeping about the last `cap` bytes (amortised O(n)).
void append_tail(std::string& tail, const char* p, std::size_t n, std::size_t cap) {
  if (cap == 0)
    return;
  if (n >= cap) {
    tail.assign(p + (n - cap), cap);
    return;
  }
  tail.append(p, n);
  if (tail.size() > 2 * cap)
    tail.erase(0, tail.size() - cap);
}

// The last `cap` bytes of `s` as valid UTF-8: a cut multi-byte character at the front and any
// invalid byte become '?', so the text can go into a table property (which must be UTF-8).
std::string clean_tail(const std::string& s, std::size_t cap) {
  std::string_view v(s);
  if (v.size() > cap)
    v.remove_prefix(v.size() - cap);
  std::string out;
  out.reserve(v.size());
  std::size_t i = 0;
  while (i < v.size()) {
    const auto c = static_cast<unsigned char>(v[i]);
    std::size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    bool ok = len > 0 && i + len <= v.size();
    for (std::size_t k = 1; ok && k < len; ++k)
      ok = (static_cast<unsigned char>(v[i + k]) & 0xc0) == 0x80;
    if (ok && c != 0) {
      out.append(v.substr(i, len));
      i += len;
    } else {
      out.push_back('?');
      ++i;
    }
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r'))
    out.pop_back();
  return out;
}

std::string last_line(const std::string& s) {
  std::string t = clean_tail(s, s.size());
  auto nl = t.find_last_of('\n');
  return nl == std::string::npos ? t : t.substr(nl + 1);
}

std::string signal_name(int sig) {
  const char* d = ::sigdescr_np(sig);
  const char* n = ::sigabbrev_np(sig);
  std::string out = "signal " + std::to_string(sig);
  if (n)
    out += std::string(" (SIG") + n + (d ? std::string(": ") + d : std::string()) + ")";
  return out;
}

void set_nonblocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

// True when `pid` has exited (left as a zombie: not reaped, so its pid and process group id
// stay reserved and killpg cannot hit a recycled group). Used only without a pidfd.
bool has_exited(pid_t pid) {
  siginfo_t info{};
  if (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0)
    return errno == ECHILD; // already reaped by someone else: treat as gone
  return info.si_pid == pid;
}

bool valid_env_name(std::string_view n) {
  if (n.empty() || (n[0] >= '0' && n[0] <= '9'))
    return false;
  for (char c : n)
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
      return false;
  return true;
}

} // namespace

result<std::unique_ptr<exec_job>> exec_job::make(exec_job_options opts) {
  if (opts.command.empty())
    return fail(errc::invalid_argument, "exec job: worker.exec_command is empty");
  if (opts.timeout <= milliseconds::zero())
    return fail(errc::invalid_argument, "exec job: the timeout must be positive");
  if (opts.shell.empty())
    return fail(errc::invalid_argument, "exec job: empty shell path");
  for (const auto& n : opts.pass_env)
    if (!valid_env_name(n))
      return fail(errc::invalid_argument, "exec job: '" + n + "' is not an environment variable name");
  std::unique_ptr<exec_job> j(new exec_job(std::move(opts)));
  // The record variables are set per record; a pass-through of the same name would duplicate them.
  static constexpr std::string_view own[] = {"SHOAL_RECORD_ID", "SHOAL_QUEUE", "SHOAL_ATTEMPT", "SHOAL_GEN"};
  for (const auto& n : j->opts_.pass_env) {
    if (std::find(std::begin(own), std::end(own), n) != std::end(own))
      continue;
    if (const char* v = ::getenv(n.c_str()))
      j->env_.push_back(n + "=" + v);
  }
  j->wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (j->wake_fd_ < 0)
    return fail(errc::io, std::string("exec job: eventfd: ") + std::strerror(errno));
  return j;
}

exec_job::~exec_job() {
  if (wake_fd_ >= 0)
    ::close(wake_fd_);
}

result<exec_job_options> exec_options_from(const config& cfg) {
  if (cfg.worker.exec_command.empty())
    return fail(errc::invalid_argument,
                "the exec job needs a command: set worker.exec_command or pass --exec CMD");
  auto names = exec_env_names(cfg.worker.exec_env);
  if (!names)
    return fail(errc::invalid_argument, "worker.exec_env: '" + cfg.worker.exec_env + "' is not a list of variable names");
  exec_job_options o;
  o.pass_env = std::move(*names);
  o.command = cfg.worker.exec_command;
  o.queue = cfg.worker.queue.empty() ? std::string("exec") : cfg.worker.queue;
  o.timeout = milliseconds(cfg.worker.exec_timeout_ms);
  return o;
}

result<job_result> exec_job::run(claimed_record& record, const job_context& ctx) {
  const auto started = clock_type::now();
  // -- everything the child needs, prepared before the spawn ------------------------------------
  std::string own[] = {
      "SHOAL_RECORD_ID=" + record.id,
      "SHOAL_QUEUE=" + (opts_.queue.empty() ? record.queue : opts_.queue),
      "SHOAL_ATTEMPT=" + std::to_string(record.attempts),
      "SHOAL_GEN=" + std::to_string(record.gen),
  };
  std::vector<char*> envp;
  envp.reserve(env_.size() + std::size(own) + 1);
  for (auto& e : env_)
    envp.push_back(e.data());
  for (auto& o : own)
    envp.push_back(o.data());
  envp.push_back(nullptr);
  std::string sh = opts_.shell, dash_c = "-c", cmd = opts_.command;
  char* argv[] = {sh.data(), dash_c.data(), cmd.data(), nullptr};

  // stdin is a socketpair rather than a pipe so the payload can be written with MSG_NOSIGNAL:
  // a child that exits without reading gives EPIPE, never a process-wide SIGPIPE.
  int in_pair[2], out_pipe[2], err_pipe[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, in_pair) != 0)
    return fail(errc::io, std::string("exec job: socketpair: ") + std::strerror(errno));
  fd_guard in_w(in_pair[0]), in_r(in_pair[1]);
  if (::pipe2(out_pipe, O_CLOEXEC) != 0)
    return fail(errc::io, std::string("exec job: pipe: ") + std::strerror(errno));
  fd_guard out_r(out_pipe[0]), out_w(out_pipe[1]);
  if (::pipe2(err_pipe, O_CLOEXEC) != 0)
    return fail(errc::io, std::string("exec job: pipe: ") + std::strerror(errno));
  fd_guard err_r(err_pipe[0]), err_w(err_pipe[1]);
  set_nonblocking(in_w.fd);

  // The payload goes into the socket buffer before the start (and its end with it) whenever it
  // fits, so a command that reads its stdin never waits on us.
  const std::string& payload = record.payload;
  std::size_t written = 0;
  while (written < payload.size()) {
    ssize_t n = ::send(in_w.fd, payload.data() + written, payload.size() - written, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0)
      written += static_cast<std::size_t>(n);
    else if (n < 0 && errno == EINTR)
      continue;
    else
      break; // EAGAIN: the rest goes in the poll loop
  }
  if (written == payload.size())
    in_w.reset();

  { // a stale wake-up of an earlier record must not stop this one
    std::uint64_t v;
    [[maybe_unused]] auto n = ::read(wake_fd_, &v, sizeof v);
  }
  if (ctx.stop.stop_requested()) {
    job_result res;
    res.verdict = job_verdict::release;
    res.detail = "stopped before it started";
    return res;
  }

  spawn_request req;
  req.path = argv[0];
  req.argv = argv;
  req.envp = envp.data();
  req.stdin_fd = in_r.fd;
  req.stdout_fd = out_w.fd;
  req.stderr_fd = err_w.fd;
  req.new_process_group = true; // its own group: a timeout kills the command and everything it started
  req.close_other_fds = true;   // fds of other lanes, sockets, files: none leak into the command
  auto spawned = spawn_process(req);
  if (!spawned)
    return fail(errc::io, "exec job: " + spawned.error().message);
  const pid_t pid = *spawned;
  in_r.reset();
  out_w.reset();
  err_w.reset();
  fd_guard pidfd(open_pidfd(pid));
  set_nonblocking(out_r.fd);
  set_nonblocking(err_r.fd);

  // A stop request wakes poll() at once through the eventfd.
  std::stop_callback on_stop(ctx.stop, [fd = wake_fd_] {
    const std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(fd, &one, sizeof one);
  });

  std::string out_tail, err_tail;
  const auto timeout_at = started + opts_.timeout;
  std::optional<clock_type::time_point> term_sent; // SIGTERM sent to the group
  bool timed_out = false, stopped = false, killed = false;
  std::optional<clock_type::time_point> exited_at;
  int status = 0;
  bool reaped = false;

  auto terminate = [&](bool by_stop) {
    if (term_sent)
      return;
    (by_stop ? stopped : timed_out) = true;
    ::killpg(pid, SIGTERM);
    term_sent = clock_type::now();
  };
  auto reap = [&] {
    if (reaped)
      return;
    // Still a zombie here, so the group id cannot have been recycled: clear what is left of a
    // terminated command's group, then reap.
    if (term_sent)
      ::killpg(pid, SIGKILL);
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    reaped = true;
  };

  char buf[16 * 1024];
  bool exit_seen = false; // the pidfd became readable (or, without one, waitid said so)
  for (;;) {
    const auto now = clock_type::now();
    if (!exited_at && (exit_seen || (pidfd.fd < 0 && has_exited(pid)))) {
      exited_at = now;
      reap();
    }
    if (exited_at) {
      // Read what the command left in the pipes; a grandchild that keeps them open is not
      // waited for beyond 100 ms.
      if ((out_r.fd < 0 && err_r.fd < 0) || now - *exited_at > milliseconds(100))
        break;
    } else {
      if (ctx.stop.stop_requested())
        terminate(true);
      else if (now >= timeout_at)
        terminate(false);
      if (term_sent && !killed && now >= *term_sent + opts_.kill_grace) {
        ::killpg(pid, SIGKILL);
        killed = true;
      }
    }

    pollfd fds[5];
    int nfds = 0;
    int i_in = -1, i_out = -1, i_err = -1, i_wake = -1, i_pid = -1;
    if (in_w.fd >= 0 && !exited_at) {
      i_in = nfds;
      fds[nfds++] = {in_w.fd, POLLOUT, 0};
    }
    if (out_r.fd >= 0) {
      i_out = nfds;
      fds[nfds++] = {out_r.fd, POLLIN, 0};
    }
    if (err_r.fd >= 0) {
      i_err = nfds;
      fds[nfds++] = {err_r.fd, POLLIN, 0};
    }
    if (pidfd.fd >= 0 && !exited_at) { // readable once the command exits
      i_pid = nfds;
      fds[nfds++] = {pidfd.fd, POLLIN, 0};
    }
    if (!term_sent) {
      i_wake = nfds;
      fds[nfds++] = {wake_fd_, POLLIN, 0};
    }
    // Next time-driven event: the timeout, the SIGKILL, the end of the post-exit grace. Without
    // a pidfd the exit is only seen by polling waitid, every 5 ms.
    auto next = exited_at ? *exited_at + milliseconds(100)
                          : term_sent ? (killed ? now + milliseconds(50) : *term_sent + opts_.kill_grace)
                                      : timeout_at;
    if (pidfd.fd < 0 && !exited_at)
      next = std::min(next, now + milliseconds(5));
    auto wait_ms = duration_cast<milliseconds>(next - now).count() + 1;
    wait_ms = std::clamp<long long>(wait_ms, 0, 1000);
    int pr = ::poll(fds, static_cast<nfds_t>(nfds), static_cast<int>(wait_ms));
    if (pr < 0 && errno != EINTR) {
      terminate(false);
      continue;
    }
    if (pr <= 0)
      continue;
    if (i_pid >= 0 && fds[i_pid].revents)
      exit_seen = true;
    if (i_in >= 0 && fds[i_in].revents) {
      if (fds[i_in].revents & (POLLERR | POLLHUP)) {
        in_w.reset(); // the command closed its stdin
      } else {
        ssize_t n = ::send(in_w.fd, payload.data() + written, payload.size() - written, MSG_NOSIGNAL);
        if (n > 0) {
          written += static_cast<std::size_t>(n);
          if (written == payload.size())
            in_w.reset(); // EOF for the command
        } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
          in_w.reset(); // EPIPE / ECONNRESET: it does not read stdin; the exit code decides
        }
      }
    }
    auto drain_fd = [&](int idx, fd_guard& fd, std::string& tail, std::size_t cap) {
      if (idx < 0 || !fds[idx].revents)
        return;
      for (;;) {
        ssize_t n = ::read(fd.fd, buf, sizeof buf);
        if (n > 0) {
          append_tail(tail, buf, static_cast<std::size_t>(n), cap);
          continue;
        }
        if (n < 0 && errno == EINTR)
          continue;
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
          fd.reset();
        return;
      }
    };
    drain_fd(i_out, out_r, out_tail, opts_.stdout_tail_bytes);
    drain_fd(i_err, err_r, err_tail, opts_.stderr_tail_bytes);
    if (i_wake >= 0 && fds[i_wake].revents) {
      std::uint64_t v;
      [[maybe_unused]] auto n = ::read(wake_fd_, &v, sizeof v);
    }
  }
  reap();

  const auto ms = duration_cast<milliseconds>(clock_type::now() - started).count();
  job_result res;
  std::string how;
  if (WIFEXITED(status))
    how = "exit code " + std::to_string(WEXITSTATUS(status));
  else if (WIFSIGNALED(status))
    how = "killed by " + signal_name(WTERMSIG(status));
  else
    how = "status " + std::to_string(status);
  if (stopped) {
    res.verdict = job_verdict::release;
    res.detail = "stopped after " + std::to_string(ms) + " ms (" + how + ")";
    return res;
  }
  if (!timed_out && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
    res.verdict = job_verdict::done;
    res.detail = "exit 0 in " + std::to_string(ms) + " ms";
    if (auto line = last_line(out_tail); !line.empty())
      res.detail += ": " + line;
    return res;
  }
  res.verdict = job_verdict::failed;
  if (timed_out)
    res.error = "timed out after " + std::to_string(opts_.timeout.count()) + " ms (" +
                (killed ? "SIGTERM, then SIGKILL" : "SIGTERM") + "; " + how + ")";
  else if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
    res.error = how + " (command not found?)";
  else
    res.error = how;
  if (auto tail = clean_tail(err_tail, opts_.stderr_tail_bytes); !tail.empty())
    res.error += "; stderr: " + tail;
  res.detail = res.error.substr(0, res.error.find('\n')) + " after " + std::to_string(ms) + " ms";
  return res;
}

} // namespace shoal::workers::fleet
