#pragma once
// Helpers of the supervisor tests (tests/workers/fleet) and the fleet system tests
// (tests/system): a supervisor process, its status over ctl.status (waits: tests/support/eventually.hpp).

#include "actors/message.hpp"
#include "storage/blob_client.hpp"
#include "storage/connection_string.hpp"
#include "storage/pipeline.hpp"
#include "storage/table_client.hpp"
#include "tests/support/azurite.hpp"
#include "tests/support/eventually.hpp"
#include "tests/support/free_port.hpp"
#include "transport/socket.hpp"
#include "workers/child_process.hpp"
#include "workers/fleet/ctl_protocol.hpp"
#include "workers/fleet/status.hpp"
#include "workers/claim/work_table.hpp"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace shoal::tests::fleet {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

using shoal::tests::free_port; // tests/support/free_port.hpp

/// GET http://127.0.0.1:port/path with a plain socket; the whole response ("" on failure).
inline std::string http_get(int port, const std::string& path) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return "";
  }
  const std::string req = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  (void)::write(fd, req.data(), req.size());
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0)
    out.append(buf, static_cast<std::size_t>(n));
  ::close(fd);
  return out;
}

/// Asks the supervisor at `endpoint` for its status. nullopt when it does not answer in time.
inline std::optional<workers::fleet::fleet_status> ask_status(const std::string& endpoint,
                                                              milliseconds timeout = milliseconds(1000),
                                                              std::uint64_t* answered_unix_ns = nullptr) {
  static zmq::context_t ctx{1};
  transport::socket_options so;
  so.linger = milliseconds(0);
  auto s = transport::envelope_socket::make(ctx, zmq::socket_type::dealer, so);
  if (!s || !s->connect(endpoint))
    return std::nullopt;
  transport::envelope req;
  req.id = transport::new_message_id();
  req.kind = std::string(workers::fleet::status_request::kind);
  req.from = "test@" + std::to_string(::getpid()) + "@local";
  req.ts_ns = 1;
  actors::encode_body(workers::fleet::status_request{}, req.body);
  if (!s->send(req, timeout))
    return std::nullopt;
  const auto until = std::chrono::steady_clock::now() + timeout;
  msgpack::zone zone;
  while (std::chrono::steady_clock::now() < until) {
    auto in = s->receive(milliseconds(50));
    if (!in || in->env.corr != req.id)
      continue;
    auto body = actors::decode_body<workers::fleet::status_reply>(in->env.body, zone);
    if (!body)
      return std::nullopt;
    auto st = workers::fleet::parse_status(body->json);
    if (!st)
      return std::nullopt;
    if (answered_unix_ns) // the supervisor's clock when it sent the answer (envelope ts_ns)
      *answered_unix_ns = in->env.ts_ns;
    return *st;
  }
  return std::nullopt;
}

/// The status entry of `slot`, if listed.
inline std::optional<workers::fleet::worker_status> slot_of(const workers::fleet::fleet_status& s,
                                                            const std::string& slot) {
  for (const auto& w : s.workers)
    if (w.slot == slot)
      return w;
  return std::nullopt;
}

/// Number of workers whose process said hello (state idle, working or draining).
inline std::size_t live_workers(const workers::fleet::fleet_status& s) {
  std::size_t n = 0;
  for (const auto& w : s.workers)
    if (w.state == "idle" || w.state == "working")
      ++n;
  return n;
}

/// A work table on the fixture's Azurite, with `lease_ms`.
inline workers::work_table make_table(const std::string& name, std::uint32_t lease_ms = 60'000) {
  auto account = storage::parse_connection_string(azurite_connection_string());
  EXPECT_TRUE(account);
  auto pipe = storage::pipeline::make(*account);
  EXPECT_TRUE(pipe);
  auto t = storage::table_client::make(*pipe, name);
  EXPECT_TRUE(t);
  workers::work_table_options wo;
  wo.work.lease_ms = lease_ms;
  wo.work.lease_renew_ms = lease_ms / 3;
  auto w = workers::work_table::make(*t, storage::blob_client(*pipe), wo);
  EXPECT_TRUE(w);
  EXPECT_TRUE(w->create_if_missing());
  return *std::move(w);
}

/// Count of `status` in `queue` (0 on a read error).
inline std::size_t count_of(const workers::work_table& t, const std::string& queue, workers::record_status status) {
  auto c = t.counts(queue);
  if (!c)
    return 0;
  auto it = c->by_status.find(status);
  return it == c->by_status.end() ? 0 : it->second;
}

/// A `shoal supervisor` process with its own folder, config file and log.
class supervisor_process {
public:
  /// `toml` is the whole configuration file; `extra_args` follow "supervisor";
  /// `env` is added to the child's environment; `connection_string` is its storage (empty =
  /// the fixture's Azurite; e.g. a fault proxy's).
  supervisor_process(fs::path dir, const std::string& toml, std::vector<std::string> extra_args,
                     std::vector<std::pair<std::string, std::string>> env = {},
                     const std::string& connection_string = "")
      : dir_(std::move(dir)) {
    fs::create_directories(dir_);
    std::ofstream(dir_ / "shoal.toml") << toml;
    endpoint_ = "ipc://" + (dir_ / "sup.sock").string();
    workers::child_options co;
    co.argv = {shoal_binary(), "--config", (dir_ / "shoal.toml").string(), "--connection-string",
               connection_string.empty() ? azurite_connection_string() : connection_string, "supervisor",
               "--endpoint", endpoint_};
    co.argv.insert(co.argv.end(), extra_args.begin(), extra_args.end());
    co.env = std::move(env);
    co.env.emplace_back("AZURE_STORAGE_CONNECTION_STRING", azurite_connection_string());
    co.output = dir_ / "supervisor.log";
    auto c = workers::child_process::spawn(co);
    EXPECT_TRUE(c) << c.error().describe();
    if (c)
      proc_.emplace(*std::move(c));
  }
  ~supervisor_process() {
    if (proc_ && !proc_->wait(milliseconds(0))) {
      proc_->signal(SIGTERM);
      if (!proc_->wait(milliseconds(15'000)))
        proc_->signal(SIGKILL);
    }
  }
  const std::string& endpoint() const { return endpoint_; }
  const fs::path& dir() const { return dir_; }
  workers::child_process& proc() { return *proc_; }
  void rewrite_config(const std::string& toml) { std::ofstream(dir_ / "shoal.toml") << toml; }
  std::string log() const {
    std::ifstream f(dir_ / "supervisor.log");
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }
  /// Status, polled until `pred` holds or `limit` passes; the last status seen (or nullopt).
  std::optional<workers::fleet::fleet_status> status_when(
      const std::function<bool(const workers::fleet::fleet_status&)>& pred, milliseconds limit) {
    std::optional<workers::fleet::fleet_status> last;
    (void)eventually( // the caller judges `last`
        [&] {
          auto s = ask_status(endpoint_, milliseconds(500));
          if (!s)
            return false;
          last = s;
          return pred(*s);
        },
        limit);
    return last;
  }

private:
  fs::path dir_;
  std::string endpoint_;
  std::optional<workers::child_process> proc_;
};

} // namespace shoal::tests::fleet
