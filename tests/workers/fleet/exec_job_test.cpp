// The exec job of `shoal worker` (workers/fleet/exec_job.hpp): a real /bin/sh per record, no
// storage. Exit codes, signals, timeouts, stdin and stderr handling, stop requests, no zombies.

#include "workers/fleet/exec_job.hpp"
#include "workers/cmd/jobs.hpp"

#include "tests/support/eventually.hpp"

#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <thread>

#include <stdlib.h>

namespace shoal::workers::fleet {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;
using shoal::tests::eventually; // tests/support/eventually.hpp

// Whether thread `tid` of this process sleeps in the kernel (state S in /proc/<pid>/task/<tid>/stat:
// waiting on a futex, a timer or I/O), as a thread blocked in a job's wait does.
bool sleeping(pid_t tid) {
  std::ifstream in("/proc/self/task/" + std::to_string(tid) + "/stat");
  const std::string stat{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  const auto name_end = stat.rfind(')'); // the state follows the command name and a space
  return name_end != std::string::npos && name_end + 2 < stat.size() && stat[name_end + 2] == 'S';
}

class ExecJobTest : public ::testing::Test {
protected:
  fs::path dir = fs::temp_directory_path() / ("shoal-exec-" + std::to_string(::getpid()) + "-" +
                                              ::testing::UnitTest::GetInstance()->current_test_info()->name());
  void SetUp() override { fs::create_directories(dir); }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir, ec);
    // Every child was reaped: this process has no child left, zombie or running.
    int st = 0;
    EXPECT_EQ(::waitpid(-1, &st, WNOHANG), -1);
    EXPECT_EQ(errno, ECHILD);
  }

  static claimed_record record(std::string id, std::string payload) {
    claimed_record r;
    r.queue = "exec";
    r.id = std::move(id);
    r.payload = std::move(payload);
    r.attempts = 2;
    r.gen = 7;
    return r;
  }

  result<job_result> run(const std::string& command, claimed_record rec,
                         exec_job_options opts = {}, std::stop_token stop = {}) {
    opts.command = command;
    auto j = exec_job::make(opts);
    if (!j)
      return std::unexpected(j.error());
    job_context ctx;
    ctx.stop = stop;
    return (*j)->run(rec, ctx);
  }

  std::string read(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
};

TEST_F(ExecJobTest, ExitZeroIsDoneWithPayloadOnStdinAndRecordEnvironment) {
  const auto out = dir / "out";
  auto r = run("cat > '" + out.string() + "'; printf '%s|%s|%s|%s' \"$SHOAL_RECORD_ID\" "
               "\"$SHOAL_QUEUE\" \"$SHOAL_ATTEMPT\" \"$SHOAL_GEN\" > '" + out.string() + ".env'; "
               "echo all good",
               record("rec-1", "hello payload"));
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->verdict, job_verdict::done) << r->error;
  EXPECT_NE(r->detail.find("exit 0"), std::string::npos) << r->detail;
  EXPECT_NE(r->detail.find("all good"), std::string::npos) << r->detail;
  EXPECT_EQ(read(out), "hello payload");
  EXPECT_EQ(read(dir / "out.env"), "rec-1|exec|2|7");
}

TEST_F(ExecJobTest, NonZeroExitIsFailedNamingTheCodeAndStderr) {
  auto r = run("echo 'something broke' >&2; exit 3", record("r", ""));
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->verdict, job_verdict::failed);
  EXPECT_NE(r->error.find("exit code 3"), std::string::npos) << r->error;
  EXPECT_NE(r->error.find("something broke"), std::string::npos) << r->error;
}

TEST_F(ExecJobTest, StderrTailKeepsOnlyTheLastBytes) {
  exec_job_options o;
  o.stderr_tail_bytes = 2048;
  // 100 KiB of 'x' on stderr, then a last line that must survive.
  auto r = run("head -c 102400 /dev/zero | tr '\\0' x >&2; echo >&2; echo 'the last words' >&2; exit 1",
               record("r", ""), o);
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->verdict, job_verdict::failed);
  EXPECT_NE(r->error.find("the last words"), std::string::npos);
  EXPECT_LE(r->error.size(), 2048u + 200u);
}

TEST_F(ExecJobTest, InvalidUtf8OnStderrIsCleaned) {
  auto r = run("printf 'bad \\377\\376 bytes' >&2; exit 1", record("r", ""));
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->verdict, job_verdict::failed);
  EXPECT_NE(r->error.find("bad ?? bytes"), std::string::npos) << r->error;
}

TEST_F(ExecJobTest, DeathBySignalIsFailedNamingTheSignal) {
  auto r = run("kill -KILL $$", record("r", ""));
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->verdict, job_verdict::failed);
  EXPECT_NE(r->error.find("signal 9"), std::string::npos) << r->error;
}

TEST_F(ExecJobTest, TimeoutSendsSigtermAndFails) {
  exec_job_options o;
  o.timeout = 200ms;
  auto r = run("echo started >&2; sleep 30", record("r", ""), o);
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->verdict, job_verdict::failed);
  EXPECT_NE(r->error.find("timed out after 200 ms"), std::string::npos) << r->error;
  EXPECT_NE(r->error.find("started"), std::string::npos) << r->error;
}

TEST_F(ExecJobTest, TimeoutEscalatesToSigkillWhenSigtermIsIgnored) {
  exec_job_options o;
  o.timeout = 200ms;
  o.kill_grace = 200ms;
  auto r = run("trap '' TERM; while :; do sleep 0.05; done", record("r", ""), o);
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->verdict, job_verdict::failed);
  EXPECT_NE(r->error.find("SIGKILL"), std::string::npos) << r->error;
}

TEST_F(ExecJobTest, BigPayloadGoesThroughStdinWhileOutputFlows) {
  // 8 MiB through `cat` back to our stdout pipe and into a file: neither side may block the
  // other (poll services stdin and stdout together).
  std::string payload(8 << 20, 'p');
  for (std::size_t i = 0; i < payload.size(); i += 4096)
    payload[i] = '\n';
  const auto out = dir / "copy";
  auto r = run("tee '" + out.string() + "'", record("big", payload));
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->verdict, job_verdict::done) << r->error;
  EXPECT_EQ(fs::file_size(out), payload.size());
  EXPECT_EQ(read(out), payload);
}

TEST_F(ExecJobTest, CommandThatDoesNotReadStdinStillSucceeds) {
  std::string payload(4 << 20, 'z'); // far more than a socket buffer: the write meets EPIPE
  auto r = run("exit 0", record("r", payload));
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->verdict, job_verdict::done) << r->error;
  auto r2 = run("sleep 0.1; exit 4", record("r", payload));
  ASSERT_TRUE(r2) << r2.error().describe();
  EXPECT_EQ(r2->verdict, job_verdict::failed);
  EXPECT_NE(r2->error.find("exit code 4"), std::string::npos) << r2->error;
}

TEST_F(ExecJobTest, BackgroundChildHoldingThePipesDoesNotHoldTheRecord) {
  // The command exits at once but leaves `sleep` holding stdout and stderr open.
  auto r = run("sleep 2 & exit 0", record("r", ""));
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->verdict, job_verdict::done) << r->error;
}

TEST_F(ExecJobTest, StopRequestTerminatesTheCommandAndReleases) {
  std::stop_source stop;
  const auto started = dir / "started";
  const auto marker = dir / "after";
  std::thread t([&] { // stops the command once it runs
    EXPECT_TRUE(eventually([&] { return fs::exists(started); }, 30s)) << "the command never started";
    stop.request_stop();
  });
  auto r = run("touch '" + started.string() + "'; sleep 30; touch '" + marker.string() + "'", record("r", ""), {},
               stop.get_token());
  t.join();
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->verdict, job_verdict::release);
  EXPECT_FALSE(fs::exists(marker));
}

TEST_F(ExecJobTest, StopAlreadyRequestedReleasesWithoutRunningToTheEnd) {
  std::stop_source stop;
  stop.request_stop();
  auto r = run("sleep 30", record("r", ""), {}, stop.get_token());
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->verdict, job_verdict::release);
}

TEST_F(ExecJobTest, UnknownCommandFailsWith127) {
  auto r = run("/nonexistent/shoal-no-such-command", record("r", ""));
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->verdict, job_verdict::failed);
  EXPECT_NE(r->error.find("exit code 127"), std::string::npos) << r->error;
}

TEST_F(ExecJobTest, MakeRefusesAnEmptyCommand) {
  auto j = exec_job::make({});
  ASSERT_FALSE(j);
  EXPECT_EQ(j.error().code, errc::invalid_argument);
}

TEST_F(ExecJobTest, RegistryKnowsExecEtlNoopSleepAndRefusesOthers) {
  config cfg;
  cfg.worker.exec_command = "true";
  auto f = cmd::find_job_factory("exec");
  ASSERT_TRUE(f);
  auto j = f(cfg);
  ASSERT_TRUE(j) << j.error().describe();
  EXPECT_EQ((*j)->name(), "exec");
  cfg.worker.exec_command.clear();
  auto none = f(cfg);
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, errc::invalid_argument);
  EXPECT_TRUE(cmd::find_job_factory("etl"));
  EXPECT_FALSE(cmd::find_job_factory("nope"));
  EXPECT_FALSE(cmd::find_job_factory("sleep:"));
  EXPECT_FALSE(cmd::find_job_factory("sleep:abc"));
  EXPECT_FALSE(cmd::find_job_factory("sleep:600001"));

  auto noop = cmd::find_job_factory("noop");
  ASSERT_TRUE(noop);
  auto n = noop(cfg);
  ASSERT_TRUE(n) << n.error().describe();
  EXPECT_EQ((*n)->name(), "noop");
  auto rec = record("r", "p");
  auto done = (*n)->run(rec, {});
  ASSERT_TRUE(done);
  EXPECT_EQ(done->verdict, job_verdict::done);

  auto sleep = cmd::find_job_factory("sleep:20");
  ASSERT_TRUE(sleep);
  auto sj = sleep(cfg);
  ASSERT_TRUE(sj) << sj.error().describe();
  EXPECT_EQ((*sj)->name(), "sleep");
  auto slept = (*sj)->run(rec, {});
  ASSERT_TRUE(slept);
  EXPECT_EQ(slept->verdict, job_verdict::done);
  EXPECT_NE(slept->detail.find("20 ms"), std::string::npos) << slept->detail;
  // A stop ends the sleep at once with release (a long sleep would hang the test otherwise).
  auto long_sleep = cmd::find_job_factory("sleep:600000")(cfg);
  ASSERT_TRUE(long_sleep);
  std::stop_source stop;
  const pid_t runner = ::gettid();
  std::thread t([&] { // stops the job once this thread waits in it
    EXPECT_TRUE(eventually([&] { return sleeping(runner); }, 30s)) << "the job never began to wait";
    stop.request_stop();
  });
  job_context ctx;
  ctx.stop = stop.get_token();
  auto stopped = (*long_sleep)->run(rec, ctx);
  t.join();
  ASSERT_TRUE(stopped);
  EXPECT_EQ(stopped->verdict, job_verdict::release);
}

TEST_F(ExecJobTest, CommandGetsACleanEnvironmentWithoutTheConnectionString) {
  // The worker holds the storage secret in its environment; the command must not see it, nor
  // anything else not listed in worker.exec_env.
  ::setenv("AZURE_STORAGE_CONNECTION_STRING", "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=c2VjcmV0", 1);
  ::setenv("SHOAL_TEST_UNLISTED", "unlisted", 1);
  ::setenv("LANG", "C.UTF-8", 1);
  config cfg;
  cfg.worker.exec_command = "env > '" + (dir / "env").string() + "'";
  auto f = cmd::find_job_factory("exec");
  auto j = f(cfg);
  ASSERT_TRUE(j) << j.error().describe();
  auto rec = record("rec-env", "");
  auto r = (*j)->run(rec, {});
  ASSERT_TRUE(r) << r.error().describe();
  ASSERT_EQ(r->verdict, job_verdict::done) << r->error;
  const auto env = read(dir / "env");
  EXPECT_EQ(env.find("AZURE_STORAGE_CONNECTION_STRING"), std::string::npos) << env;
  EXPECT_EQ(env.find("AccountKey"), std::string::npos) << env;
  EXPECT_EQ(env.find("SHOAL_TEST_UNLISTED"), std::string::npos) << env;
  EXPECT_NE(env.find("PATH="), std::string::npos) << env;
  EXPECT_NE(env.find("LANG=C.UTF-8"), std::string::npos) << env;
  EXPECT_NE(env.find("SHOAL_RECORD_ID=rec-env"), std::string::npos) << env;
  EXPECT_NE(env.find("SHOAL_GEN=7"), std::string::npos) << env;

  // Listed explicitly, it is passed (an operator's choice, e.g. a script that calls shoal).
  cfg.worker.exec_env = "PATH AZURE_STORAGE_CONNECTION_STRING";
  auto listed = f(cfg);
  ASSERT_TRUE(listed) << listed.error().describe();
  ASSERT_TRUE((*listed)->run(rec, {}));
  const auto env2 = read(dir / "env");
  EXPECT_NE(env2.find("AZURE_STORAGE_CONNECTION_STRING="), std::string::npos) << env2;
  EXPECT_EQ(env2.find("LANG="), std::string::npos) << env2;

  cfg.worker.exec_env = "PATH,not-a-name";
  auto bad = f(cfg);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, errc::invalid_argument);
  EXPECT_FALSE(validate(cfg));
  ::unsetenv("AZURE_STORAGE_CONNECTION_STRING");
  ::unsetenv("SHOAL_TEST_UNLISTED");
}

TEST_F(ExecJobTest, CommandInheritsNoOtherDescriptorOfTheWorker) {
  // A descriptor of the worker opened without close-on-exec (a library's socket, say) must not
  // reach the command.
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  const auto out = dir / "fds";
  auto r = run("for f in " + std::to_string(p[0]) + " " + std::to_string(p[1]) + "; do [ -e /proc/$$/fd/$f ] && echo leaked $f; done > '" +
                   out.string() + "'; true",
               record("r", ""));
  ::close(p[0]);
  ::close(p[1]);
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->verdict, job_verdict::done) << r->error;
  EXPECT_EQ(read(out), "");
}

TEST_F(ExecJobTest, ManyRecordsInARowLeakNoDescriptor) {
  exec_job_options o;
  o.command = "cat > /dev/null";
  auto j = exec_job::make(o);
  ASSERT_TRUE(j) << j.error().describe();
  auto fds = [] {
    std::size_t n = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator("/proc/self/fd")) ++n;
    return n;
  };
  auto rec = record("r", "some payload");
  ASSERT_TRUE((*j)->run(rec, {}));
  const auto before = fds();
  for (int i = 0; i < 100; ++i) {
    auto r = (*j)->run(rec, {});
    ASSERT_TRUE(r) << r.error().describe();
    ASSERT_EQ(r->verdict, job_verdict::done) << r->error;
  }
  EXPECT_EQ(fds(), before);
}

} // namespace
} // namespace shoal::workers::fleet
