// shoal_test_azurite: starts and stops the pinned Azurite for CTest fixtures and benchmarks.
//
//   shoal_test_azurite start --state DIR --azurite PATH [--tls]
//   shoal_test_azurite stop  --state DIR
//
// start: picks three free loopback ports, makes a fresh workspace DIR/workspace, optionally a
// self-signed certificate for 127.0.0.1 (DIR/cert.pem is then the CA file), launches Azurite
// detached (its output goes to DIR/azurite.log so CTest does not wait on our pipes), waits until
// all three ports accept connections, then writes DIR/pid and DIR/connection_string.
// stop: SIGINT to the pid (Azurite saves and exits on SIGINT), SIGKILL after 15 s.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

constexpr const char* dev_key =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

int usage() {
  std::cerr << "usage: shoal_test_azurite start --state DIR --azurite PATH [--tls]\n"
               "       shoal_test_azurite stop --state DIR\n";
  return 2;
}

// Binds all three sockets before closing any, so the ports are distinct.
std::array<int, 3> free_ports() {
  std::array<int, 3> fds{}, ports{};
  for (int i = 0; i < 3; ++i) {
    fds[i] = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    if (::bind(fds[i], reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      std::perror("bind");
      std::exit(1);
    }
    socklen_t len = sizeof a;
    ::getsockname(fds[i], reinterpret_cast<sockaddr*>(&a), &len);
    ports[i] = ntohs(a.sin_port);
  }
  for (int fd : fds)
    ::close(fd);
  return ports;
}

bool listening(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

bool alive(pid_t pid) { return ::kill(pid, 0) == 0; }

void dump_log(const fs::path& log) {
  std::ifstream in(log);
  std::cerr << "---- " << log << " ----\n" << in.rdbuf() << "\n----\n";
}

int run_checked(const std::vector<std::string>& argv, const fs::path& log) {
  pid_t pid = ::fork();
  if (pid == 0) {
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    std::vector<char*> args;
    for (auto& a : argv)
      args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    _exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

int stop(const fs::path& state) {
  std::ifstream in(state / "pid");
  pid_t pid = 0;
  if (!(in >> pid) || pid <= 0) {
    std::cerr << "shoal_test_azurite: no pid file in " << state << " (not started?)\n";
    return 0;
  }
  if (alive(pid)) {
    ::kill(pid, SIGINT);
    auto until = std::chrono::steady_clock::now() + 15s;
    while (alive(pid) && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(50ms);
    if (alive(pid)) {
      std::cerr << "shoal_test_azurite: Azurite " << pid << " ignored SIGINT for 15 s; SIGKILL\n";
      ::kill(pid, SIGKILL);
    }
  }
  fs::remove(state / "pid");
  std::error_code ec;
  fs::remove_all(state / "workspace", ec);
  std::cout << "azurite " << pid << " stopped\n";
  return 0;
}

int start(const fs::path& state, const std::string& azurite, bool tls) {
  if (fs::exists(state / "pid"))
    stop(state); // a leftover from an interrupted run
  if (!fs::exists(azurite)) {
    std::cerr << "shoal_test_azurite: " << azurite
              << " not found; run deploy/setup.sh (it runs npm ci in deploy/local)\n";
    return 1;
  }
  std::error_code ec;
  fs::create_directories(state);
  fs::remove_all(state / "workspace", ec);
  fs::create_directories(state / "workspace");
  const fs::path log = state / "azurite.log";
  fs::remove(log, ec);

  std::vector<std::string> argv{azurite,
                                "--silent",
                                "--disableTelemetry",
                                "--skipApiVersionCheck",
                                "--location",
                                (state / "workspace").string()};
  if (tls) {
    const fs::path cert = state / "cert.pem", key = state / "key.pem";
    if (run_checked({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                     key.string(), "-out", cert.string(), "-days", "3", "-subj", "/CN=127.0.0.1",
                     "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"},
                    state / "openssl.log") != 0) {
      dump_log(state / "openssl.log");
      return 1;
    }
    argv.insert(argv.end(), {"--cert", cert.string(), "--key", key.string()});
  }
  auto ports = free_ports();
  const char* names[] = {"--blobPort", "--queuePort", "--tablePort"};
  for (int i = 0; i < 3; ++i)
    argv.insert(argv.end(), {names[i], std::to_string(ports[i])});
  argv.insert(argv.end(), {"--blobHost", "127.0.0.1", "--queueHost", "127.0.0.1", "--tableHost",
                           "127.0.0.1"});

  pid_t pid = ::fork();
  if (pid < 0) {
    std::perror("fork");
    return 1;
  }
  if (pid == 0) {
    ::setsid(); // own session: CTest's kill of the fixture process group does not reach it
    int null = ::open("/dev/null", O_RDONLY);
    ::dup2(null, 0);
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    for (int f = 3; f < 256; ++f)
      ::close(f);
    std::vector<char*> args;
    for (auto& a : argv)
      args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    std::perror("execv azurite");
    _exit(127);
  }
  auto until = std::chrono::steady_clock::now() + 60s;
  for (;;) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      std::cerr << "shoal_test_azurite: Azurite exited during start-up\n";
      dump_log(log);
      return 1;
    }
    if (listening(ports[0]) && listening(ports[1]) && listening(ports[2]))
      break;
    if (std::chrono::steady_clock::now() > until) {
      std::cerr << "shoal_test_azurite: Azurite did not listen within 60 s\n";
      ::kill(pid, SIGKILL);
      dump_log(log);
      return 1;
    }
    std::this_thread::sleep_for(50ms);
  }
  const std::string scheme = tls ? "https" : "http";
  std::ostringstream cs;
  cs << "DefaultEndpointsProtocol=" << scheme << ";AccountName=devstoreaccount1;AccountKey="
     << dev_key;
  const char* svc[] = {"BlobEndpoint", "QueueEndpoint", "TableEndpoint"};
  for (int i = 0; i < 3; ++i)
    cs << ';' << svc[i] << '=' << scheme << "://127.0.0.1:" << ports[i] << "/devstoreaccount1";
  cs << ';';
  std::ofstream(state / "pid") << pid << '\n';
  std::ofstream(state / "connection_string") << cs.str() << '\n';
  std::cout << "azurite " << pid << " listening on 127.0.0.1:" << ports[0] << "," << ports[1]
            << "," << ports[2] << (tls ? " (https)" : "") << "; state " << state << '\n';
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 2)
    return usage();
  std::string cmd = argv[1], azurite;
  fs::path state;
  bool tls = false;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--state" && i + 1 < argc)
      state = argv[++i];
    else if (a == "--azurite" && i + 1 < argc)
      azurite = argv[++i];
    else if (a == "--tls")
      tls = true;
    else
      return usage();
  }
  if (state.empty())
    return usage();
  if (cmd == "start")
    return azurite.empty() ? usage() : start(state, azurite, tls);
  if (cmd == "stop")
    return stop(state);
  return usage();
}
