#include "tests/support/private_queue_service.hpp"

#include "tests/support/azurite.hpp"
#include "tests/support/eventually.hpp"
#include "workers/child_process.hpp"
#include "workers/local_azurite.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <thread>
#include <utility>
#include <vector>

namespace shoal::tests {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

int free_loopback_port() {
  int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0)
    return 0;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int port = 0;
  if (::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) == 0)
    port = ntohs(a.sin_port);
  ::close(s);
  return port;
}

std::string lower_name(std::string s) {
  for (auto& c : s)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string tail_of(const fs::path& file, std::size_t max_bytes = 2000) {
  std::ifstream in(file, std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return all.size() > max_bytes ? all.substr(all.size() - max_bytes) : all;
}

} // namespace

workers::result<private_queue_service> private_queue_service::start(const fs::path& dir,
                                                                     std::chrono::milliseconds start_timeout) {
  const fs::path exe = fs::path(source_dir()) / "deploy/local/node_modules/.bin/azurite-queue";
  if (!fs::exists(exe))
    return workers::fail(workers::errc::not_found,
                         exe.string() + " not found: run deploy/setup.sh (npm ci in deploy/local)");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec)
    return workers::fail(workers::errc::io, "cannot create " + dir.string() + ": " + ec.message());
  const fs::path log = dir / "azurite-queue.log";
  const fs::path shm = "/dev/shm";
  const fs::path workspace =
      (fs::is_directory(shm, ec) && ::access(shm.c_str(), W_OK) == 0 ? shm : dir) /
      lower_name(unique_name("shoalqueue"));
  fs::create_directories(workspace, ec);
  if (ec)
    return workers::fail(workers::errc::io, "cannot create " + workspace.string() + ": " + ec.message());
  std::string last_error;
  for (int attempt = 0; attempt < 3; ++attempt) {
    const int port = free_loopback_port();
    if (port == 0)
      return workers::fail(workers::errc::io, "no free loopback port");
    std::vector<std::string> argv{exe.string(), "--loose", "--skipApiVersionCheck", "--silent",
                                  "--disableTelemetry", "--location", workspace.string(),
                                  "--queueHost", "127.0.0.1", "--queuePort", std::to_string(port)};
    workers::child_options co;
    co.argv = std::move(argv);
    co.cwd = workspace;
    co.output = log;
    co.stdin_null = true;
    co.close_other_fds = true;
    co.parent_death_signal = SIGKILL; // a crashed test leaves no queue service behind
    auto child = workers::child_process::spawn(co);
    if (!child)
      return workers::fail(workers::errc::io, "cannot start azurite-queue: " + child.error().message);
    const pid_t pid = child->release(); // the service's destructor stops it by pid
    private_queue_service q;
    q.pid_ = pid;
    q.port_ = port;
    q.workspace_ = workspace;
    bool exited = false;
    const bool listening = eventually(
        [&] {
          int status = 0;
          exited = ::waitpid(pid, &status, WNOHANG) == pid;
          return exited || workers::port_listening("127.0.0.1", port);
        },
        start_timeout, 50ms);
    if (exited) {
      q.pid_ = -1;
      q.workspace_.clear(); // kept for the next attempt
      last_error = "azurite-queue exited during start-up; its log says: " + tail_of(log);
      continue; // most likely the port was taken meanwhile: another one
    }
    if (listening)
      return q;
    return workers::fail(workers::errc::timeout, "azurite-queue did not listen within " +
                                                     std::to_string(start_timeout.count()) +
                                                     " ms; its log says: " + tail_of(log));
  }
  fs::remove_all(workspace, ec);
  return workers::fail(workers::errc::io, last_error);
}

private_queue_service::private_queue_service(private_queue_service&& o) noexcept
    : pid_(std::exchange(o.pid_, -1)), port_(o.port_), workspace_(std::exchange(o.workspace_, {})) {}

private_queue_service& private_queue_service::operator=(private_queue_service&& o) noexcept {
  if (this != &o) {
    stop();
    pid_ = std::exchange(o.pid_, -1);
    port_ = o.port_;
    workspace_ = std::exchange(o.workspace_, {});
  }
  return *this;
}

private_queue_service::~private_queue_service() { stop(); }

void private_queue_service::stop() {
  if (pid_ > 0)
    workers::stop_process(std::exchange(pid_, -1), 5s);
  if (!workspace_.empty()) {
    std::error_code ec;
    fs::remove_all(std::exchange(workspace_, {}), ec);
  }
}

std::string private_queue_service::endpoint() const {
  return "http://127.0.0.1:" + std::to_string(port_) + "/devstoreaccount1";
}

std::string private_queue_service::connection_string_with(const std::string& base) const {
  std::string out;
  std::size_t pos = 0;
  while (pos < base.size()) {
    std::size_t end = base.find(';', pos);
    if (end == std::string::npos)
      end = base.size();
    const std::string part = base.substr(pos, end - pos);
    if (!part.empty() && !part.starts_with("QueueEndpoint="))
      out += part + ';';
    pos = end + 1;
  }
  return out + "QueueEndpoint=" + endpoint() + ';';
}

} // namespace shoal::tests
