#include "workers/local_azurite.hpp"

#include "workers/child_process.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>
#include <utility>
#include <vector>

namespace shoal::workers {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

// Binds all sockets before closing any, so the three ports differ.
std::array<int, 3> pick_free_ports(const std::string& host) {
  std::array<int, 3> fds{-1, -1, -1}, ports{0, 0, 0};
  for (int i = 0; i < 3; ++i) {
    fds[i] = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    ::inet_pton(AF_INET, host.c_str(), &a.sin_addr);
    if (fds[i] >= 0 && ::bind(fds[i], reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
      socklen_t len = sizeof a;
      ::getsockname(fds[i], reinterpret_cast<sockaddr*>(&a), &len);
      ports[i] = ntohs(a.sin_port);
    }
  }
  for (int fd : fds)
    if (fd >= 0)
      ::close(fd);
  return ports;
}

std::string tail_of(const fs::path& file, std::size_t max_bytes = 4000) {
  std::ifstream in(file, std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return all.size() > max_bytes ? all.substr(all.size() - max_bytes) : all;
}

} // namespace

bool port_listening(const std::string& host, int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  ::inet_pton(AF_INET, host.c_str(), &a.sin_addr);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  if (!ok && errno == EINPROGRESS) {
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, 1000) == 1) {
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      ok = err == 0;
    }
  }
  ::close(fd);
  return ok;
}

void stop_process(pid_t pid, std::chrono::milliseconds timeout) {
  if (pid <= 0 || ::kill(pid, 0) != 0)
    return;
  ::kill(pid, SIGINT);
  auto until = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    // Reap it if it is our child; otherwise poll for its disappearance.
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid || ::kill(pid, 0) != 0)
      return;
    if (std::chrono::steady_clock::now() >= until)
      break;
    std::this_thread::sleep_for(20ms);
  }
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
}

result<azurite_process> azurite_process::start(const azurite_options& opts) {
  if (!fs::exists(opts.executable))
    return fail(errc::not_found, opts.executable.string() +
                                     " not found: run deploy/setup.sh (npm ci in deploy/local)");
  std::error_code ec;
  fs::create_directories(opts.workspace, ec);
  if (ec)
    return fail(errc::io, "cannot create Azurite workspace " + opts.workspace.string() + ": " +
                              ec.message());
  const fs::path log = opts.log_file.empty() ? opts.workspace / "azurite.log" : opts.log_file;

  std::vector<std::string> argv{opts.executable.string(), "--silent", "--disableTelemetry",
                                "--skipApiVersionCheck"};
  if (opts.in_memory)
    argv.push_back("--inMemoryPersistence"); // Azurite refuses it together with --location
  else
    argv.insert(argv.end(), {"--location", opts.workspace.string()});
  if (opts.tls) {
    const fs::path cert = opts.workspace / "cert.pem", key = opts.workspace / "key.pem";
    child_options openssl;
    openssl.argv = {"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", key.string(), "-out", cert.string(), "-days", "3",
                    "-subj", "/CN=127.0.0.1", "-addext",
                    "subjectAltName=IP:127.0.0.1,DNS:localhost"};
    openssl.output = opts.workspace / "openssl.log";
    openssl.stdin_null = true;
    auto done = run_to_completion(openssl);
    if (!done)
      return fail(errc::io, "openssl could not make a certificate: " + done.error().message);
    if (const int rc = *done; rc != 0)
      return fail(errc::io, "openssl could not make a certificate (exit " + std::to_string(rc) +
                                "): " + tail_of(opts.workspace / "openssl.log"));
    argv.insert(argv.end(), {"--cert", cert.string(), "--key", key.string()});
  }
  std::array<int, 3> ports = opts.ports;
  if (ports[0] == 0 || ports[1] == 0 || ports[2] == 0) {
    auto free = pick_free_ports(opts.host);
    for (int i = 0; i < 3; ++i)
      if (ports[i] == 0)
        ports[i] = free[i];
  }
  const char* flags[] = {"--blobPort", "--queuePort", "--tablePort"};
  const char* hosts[] = {"--blobHost", "--queueHost", "--tableHost"};
  for (int i = 0; i < 3; ++i)
    argv.insert(argv.end(), {flags[i], std::to_string(ports[i]), hosts[i], opts.host});

  child_options co;
  co.argv = std::move(argv);
  co.output = log;
  co.truncate_output = true;
  co.stdin_null = true;
  co.close_other_fds = true;
  co.new_session = opts.detach; // a detached Azurite outlives our session and terminal
  auto child = child_process::spawn(co);
  if (!child)
    return fail(errc::io, "cannot start Azurite: " + child.error().message);
  const pid_t pid = child->release(); // stop() and the destructor below stop it by pid

  azurite_process p;
  p.pid_ = pid;
  p.ports_ = ports;
  p.stop_timeout_ = opts.stop_timeout;
  auto until = std::chrono::steady_clock::now() + opts.start_timeout;
  for (;;) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      p.pid_ = -1;
      return fail(errc::io, "Azurite exited during start-up; its log says: " + tail_of(log));
    }
    if (port_listening(opts.host, ports[0]) && port_listening(opts.host, ports[1]) &&
        port_listening(opts.host, ports[2]))
      break;
    if (std::chrono::steady_clock::now() > until)
      return fail(errc::timeout, "Azurite did not listen within " +
                                     std::to_string(opts.start_timeout.count()) +
                                     " ms; its log says: " + tail_of(log));
    std::this_thread::sleep_for(50ms);
  }
  const std::string scheme = opts.tls ? "https" : "http";
  std::ostringstream cs;
  cs << "DefaultEndpointsProtocol=" << scheme
     << ";AccountName=devstoreaccount1;AccountKey=" << devstore_account_key;
  const char* names[] = {"BlobEndpoint", "QueueEndpoint", "TableEndpoint"};
  for (int i = 0; i < 3; ++i)
    cs << ';' << names[i] << '=' << scheme << "://" << opts.host << ':' << ports[i]
       << "/devstoreaccount1";
  cs << ';';
  p.connection_string_ = cs.str();
  return p;
}

azurite_process::azurite_process(azurite_process&& o) noexcept
    : pid_(std::exchange(o.pid_, -1)), ports_(o.ports_),
      connection_string_(std::move(o.connection_string_)), stop_timeout_(o.stop_timeout_) {}

azurite_process& azurite_process::operator=(azurite_process&& o) noexcept {
  if (this != &o) {
    stop();
    pid_ = std::exchange(o.pid_, -1);
    ports_ = o.ports_;
    connection_string_ = std::move(o.connection_string_);
    stop_timeout_ = o.stop_timeout_;
  }
  return *this;
}

azurite_process::~azurite_process() { stop(); }

void azurite_process::stop() {
  if (pid_ > 0)
    stop_process(std::exchange(pid_, -1), stop_timeout_);
}

pid_t azurite_process::release() noexcept { return std::exchange(pid_, -1); }

} // namespace shoal::workers
