// shoal_test_fault_proxy: starts and stops the storage fault proxy (tests/support/fault_proxy.hpp)
// for the CTest fixture `fault_proxy`, the chaos scenarios and bench/run.sh chaos|soak.
//
//   shoal_test_fault_proxy start --state DIR (--upstream-state AZURITE_STATE | --upstream CS) [--host H]
//   shoal_test_fault_proxy run   --state DIR (--upstream-state AZURITE_STATE | --upstream CS) [--host H]
//   shoal_test_fault_proxy stop  --state DIR
//
// start: binds four free ports on H (default 127.0.0.1), writes DIR/connection_string (Azurite's
// account with its endpoints on the proxy's ports) and DIR/control_port, then serves from a
// detached child in its own session (DIR/pid, output in DIR/proxy.log) and returns; the plan is
// empty (everything relayed untouched) until one is PUT on the control port. run: the same in the
// foreground until SIGINT or SIGTERM. stop: SIGINT to the pid, SIGKILL after 5 s.

#include "tests/support/fault_proxy.hpp"
#include "tests/support/pid_file.hpp"
#include "workers/local_azurite.hpp"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>

namespace fs = std::filesystem;

namespace {

int usage() {
  std::cerr << "usage: shoal_test_fault_proxy start|run --state DIR (--upstream-state DIR | --upstream CS) [--host H]\n"
               "       shoal_test_fault_proxy stop --state DIR\n";
  return 2;
}

int stop(const fs::path& state) {
  shoal::tests::stop_from_pid_file(state, "fault_proxy", std::chrono::seconds(5));
  return 0;
}

// Blocks SIGINT and SIGTERM (inherited by every thread started after), serves until one comes.
void serve_until_signalled(shoal::tests::fault_proxy& proxy) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  proxy.start();
  int sig = 0;
  sigwait(&set, &sig);
  proxy.stop();
}

int start(const fs::path& state, const std::string& upstream, const std::string& host, bool detach) {
  if (fs::exists(state / "pid"))
    stop(state); // a leftover of an interrupted run
  fs::create_directories(state);
  shoal::tests::fault_proxy_options o;
  o.upstream_connection_string = upstream;
  o.listen_host = host;
  auto p = shoal::tests::fault_proxy::listen(o);
  if (!p) {
    std::cerr << "shoal_test_fault_proxy: " << p.error().describe() << '\n';
    return 1;
  }
  std::ofstream(state / "connection_string") << p->connection_string() << '\n';
  std::ofstream(state / "control_port") << p->control_port() << '\n';
  const auto ports = p->ports();
  std::cout << "fault proxy on " << host << ':' << ports[0] << ',' << ports[1] << ',' << ports[2] << ", control "
            << p->control_port() << "; state " << state << std::endl;
  if (!detach) {
    std::ofstream(state / "pid") << ::getpid() << '\n';
    serve_until_signalled(*p);
    return 0;
  }
  // fork without exec on purpose (not the launcher): the child keeps serving on the sockets
  // already listening, so the parent can exit knowing the ports are ready.
  const pid_t pid = ::fork();
  if (pid < 0) {
    std::cerr << "shoal_test_fault_proxy: fork failed\n";
    return 1;
  }
  if (pid > 0) {
    std::ofstream(state / "pid") << pid << '\n';
    std::cout.flush();
    // The child owns the listening sockets now: leave without closing them (no destructors).
    ::_exit(0);
  }
  ::setsid();
  const int log = ::open((state / "proxy.log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  const int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null >= 0) ::dup2(null, STDIN_FILENO);
  if (log >= 0) ::dup2(log, STDOUT_FILENO), ::dup2(log, STDERR_FILENO);
  serve_until_signalled(*p);
  return 0;
}

std::string first_line(const fs::path& p) {
  std::ifstream in(p);
  std::string s;
  std::getline(in, s);
  return s;
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 2)
    return usage();
  const std::string cmd = argv[1];
  fs::path state;
  std::string upstream, host = "127.0.0.1";
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--state" && i + 1 < argc)
      state = argv[++i];
    else if (a == "--upstream-state" && i + 1 < argc)
      upstream = first_line(fs::path(argv[++i]) / "connection_string");
    else if (a == "--upstream" && i + 1 < argc)
      upstream = argv[++i];
    else if (a == "--host" && i + 1 < argc)
      host = argv[++i];
    else
      return usage();
  }
  if (state.empty())
    return usage();
  if (cmd == "stop")
    return stop(state);
  if (cmd != "start" && cmd != "run")
    return usage();
  if (upstream.empty()) {
    std::cerr << "shoal_test_fault_proxy: no upstream connection string (is the azurite fixture up?)\n";
    return 1;
  }
  return start(state, upstream, host, cmd == "start");
}
