// Unit tests of the one child-process launcher (workers/child_process.hpp): what a child gets
// (stdin, fds, working directory, session), how a missing program is reported, and the parent
// death signal. Each case runs on both paths: posix_spawn, and fork + execve (taken when a
// parent death signal is asked for).

#include "workers/child_process.hpp"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>

namespace shoal::workers {
namespace {

namespace fs = std::filesystem;

class ChildProcess : public ::testing::TestWithParam<bool> {
protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("shoal-child-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  // Runs `/bin/sh -c script` to completion through the launcher; returns its output.
  std::string sh(const std::string& script, child_options co = {}) {
    co.argv = {"/bin/sh", "-c", script};
    co.output = dir_ / "out";
    co.truncate_output = true;
    if (GetParam())
      co.parent_death_signal = SIGKILL; // the fork + execve path
    auto rc = run_to_completion(co);
    EXPECT_TRUE(rc) << rc.error().message;
    EXPECT_EQ(rc.value_or(-1), 0);
    std::ifstream in(dir_ / "out");
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }
  fs::path dir_;
};

TEST_P(ChildProcess, StdinIsDevNullWhenAskedAndOursOtherwise) {
  // Our stdin becomes a pipe for the test (CTest may give us /dev/null already).
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  const int saved = ::dup(0);
  ASSERT_GE(saved, 0);
  ASSERT_EQ(::dup2(p[0], 0), 0);
  const std::string ours = fs::read_symlink("/proc/self/fd/0").string();
  child_options co;
  co.stdin_null = true;
  const std::string with_null = sh("readlink /proc/self/fd/0", co);
  const std::string inherited = sh("readlink /proc/self/fd/0");
  ::dup2(saved, 0);
  for (int fd : {saved, p[0], p[1]})
    ::close(fd);
  EXPECT_EQ(with_null, "/dev/null\n");
  EXPECT_EQ(inherited, ours + "\n");
  EXPECT_TRUE(ours.starts_with("pipe:")) << ours;
}

TEST_P(ChildProcess, FdsBeyondTwoAreClosedWhenAsked) {
  // An fd without close-on-exec: inherited unless the launcher closes it.
  const int fd = ::open("/dev/null", O_RDONLY);
  ASSERT_GE(fd, 3);
  const std::string probe = "test -e /proc/self/fd/" + std::to_string(fd) + " && echo open || echo closed";
  EXPECT_EQ(sh(probe), "open\n");
  child_options co;
  co.close_other_fds = true;
  EXPECT_EQ(sh(probe, co), "closed\n");
  ::close(fd);
}

TEST_P(ChildProcess, WorkingDirectorySessionAndEnvironmentAreSet) {
  child_options co;
  co.cwd = dir_;
  co.new_session = true;
  co.env = {{"SHOAL_CHILD_TEST", "x y"}};
  // A session leader's session id is its pid.
  EXPECT_EQ(sh("pwd; echo \"$SHOAL_CHILD_TEST\"; test \"$(cut -d' ' -f6 /proc/$$/stat)\" = $$ && echo leader", co),
            fs::canonical(dir_).string() + "\nx y\nleader\n");
}

TEST_P(ChildProcess, AMissingProgramIsAClearErrorNamingIt) {
  child_options co;
  co.argv = {(dir_ / "no-such-program").string()};
  if (GetParam())
    co.parent_death_signal = SIGKILL;
  auto c = child_process::spawn(co);
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, errc::io);
  EXPECT_NE(c.error().message.find("no-such-program"), std::string::npos) << c.error().message;
  EXPECT_NE(c.error().message.find("No such file"), std::string::npos) << c.error().message;
  // Not in PATH either.
  co.argv = {"shoal-no-such-program-anywhere"};
  c = child_process::spawn(co);
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message.find("shoal-no-such-program-anywhere"), std::string::npos) << c.error().message;
  // A file that is not executable.
  std::ofstream(dir_ / "plain") << "not a program\n";
  co.argv = {(dir_ / "plain").string()};
  c = child_process::spawn(co);
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message.find("Permission denied"), std::string::npos) << c.error().message;
  // No zombie left behind by a failed start: we have no child to wait for.
  EXPECT_EQ(::waitpid(-1, nullptr, WNOHANG), -1);
}

TEST_P(ChildProcess, ProgramsAreFoundInPath) {
  child_options co;
  co.argv = {"sh", "-c", "exit 7"};
  if (GetParam())
    co.parent_death_signal = SIGKILL;
  auto rc = run_to_completion(co);
  ASSERT_TRUE(rc) << rc.error().message;
  EXPECT_EQ(*rc, 7);
}

INSTANTIATE_TEST_SUITE_P(Paths, ChildProcess, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "ForkExec" : "PosixSpawn"; });

// The parent dies → its child gets the parent death signal. An intermediate process (forked
// without exec on purpose: it runs the launcher, our code) starts `sleep`, reports its pid and
// exits when told; the test holds a pidfd of the sleeper and waits for it to become readable.
// Returns whether the sleeper died within `bound` of its parent's exit (if not, it is killed).
bool sleeper_dies_with_its_parent(int signal, std::chrono::milliseconds bound) {
  int report[2], go[2];
  if (::pipe(report) != 0 || ::pipe(go) != 0)
    return false;
  const pid_t mid = ::fork();
  if (mid == 0) {
    ::close(report[0]);
    ::close(go[1]);
    child_options co;
    co.argv = {"/bin/sleep", "1000"};
    co.parent_death_signal = signal;
    co.stdin_null = true;
    co.close_other_fds = true;
    auto c = child_process::spawn(co);
    const pid_t pid = c ? c->release() : -1;
    [[maybe_unused]] auto n = ::write(report[1], &pid, sizeof pid);
    char b;
    n = ::read(go[0], &b, 1); // until the test holds a pidfd of the sleeper
    ::_exit(0);
  }
  ::close(report[1]);
  ::close(go[0]);
  pid_t sleeper = -1;
  const bool got = ::read(report[0], &sleeper, sizeof sleeper) == sizeof sleeper && sleeper > 0;
  ::close(report[0]);
  const int pidfd = got ? open_pidfd(sleeper) : -1;
  EXPECT_GE(pidfd, 0);
  pollfd p{pidfd, POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 0), 0) << "the sleeper must be running before its parent exits";
  ::close(go[1]); // the intermediate exits now
  ::waitpid(mid, nullptr, 0);
  // A bound, not a timing requirement: the kernel signals at the parent's exit, long before.
  const bool died = ::poll(&p, 1, static_cast<int>(bound.count())) == 1;
  if (!died && sleeper > 0)
    ::kill(sleeper, SIGKILL);
  if (pidfd >= 0)
    ::close(pidfd);
  return died;
}

TEST(ChildProcessDeath, TheParentDeathSignalKillsTheChildWhenItsParentDies) {
  EXPECT_TRUE(sleeper_dies_with_its_parent(SIGKILL, std::chrono::seconds(30)));
}

TEST(ChildProcessDeath, WithoutItTheChildOutlivesItsParent) {
  // The control: the same set-up without the signal; the sleeper is alive once its parent has
  // been reaped (then killed by the helper).
  EXPECT_FALSE(sleeper_dies_with_its_parent(0, std::chrono::milliseconds(0)));
}

} // namespace
} // namespace shoal::workers
