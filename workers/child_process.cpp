#include "workers/child_process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <thread>

namespace shoal::workers {
namespace {

int decode_status(int status) {
  if (WIFEXITED(status))
    return WEXITSTATUS(status);
  if (WIFSIGNALED(status))
    return 128 + WTERMSIG(status);
  return 255;
}

} // namespace

result<child_process> child_process::spawn(const child_options& opts) {
  if (opts.argv.empty())
    return fail(errc::invalid_argument, "child_process: empty argv");
  // Everything the child needs is prepared before fork: after it only async-signal-safe calls.
  std::vector<char*> args;
  for (const auto& a : opts.argv)
    args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const std::string out = opts.output.string();
  pid_t pid = ::fork();
  if (pid < 0)
    return fail(errc::io, std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    if (opts.new_process_group)
      ::setpgid(0, 0);
    for (const auto& [k, v] : opts.env)
      ::setenv(k.c_str(), v.c_str(), 1);
    if (!out.empty()) {
      int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
    }
    ::execv(args[0], args.data());
    _exit(127);
  }
  child_process c;
  c.pid_ = pid;
  return c;
}

child_process& child_process::operator=(child_process&& o) noexcept {
  if (this != &o) {
    if (pid_ > 0 && !status_)
      terminate(std::chrono::milliseconds(0));
    pid_ = std::exchange(o.pid_, -1);
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
}

void child_process::signal(int sig) const noexcept {
  if (pid_ > 0 && !status_)
    ::kill(pid_, sig);
}

std::optional<int> child_process::wait(std::optional<std::chrono::milliseconds> timeout) {
  if (status_ || pid_ <= 0)
    return status_;
  if (!timeout) {
    int st = 0;
    while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
    }
    status_ = decode_status(st);
    return status_;
  }
  const auto until = std::chrono::steady_clock::now() + *timeout;
  for (;;) {
    int st = 0;
    pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
      status_ = decode_status(st);
      return status_;
    }
    if (std::chrono::steady_clock::now() >= until)
      return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
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

std::filesystem::path self_executable() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::filesystem::path("shoal") : p;
}

} // namespace shoal::workers
