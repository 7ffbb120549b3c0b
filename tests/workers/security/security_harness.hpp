#pragma once
// What the issue-15 integration tests share: a scratch folder, the fixture's storage, a real
// `shoal persistor` process (its bound endpoint read from its output), CURVE key pairs on disk,
// and a raw DEALER producer that sends persist.record envelopes and collects acks and rejects.

#include "storage/blob_client.hpp"
#include "storage/connection_string.hpp"
#include "tests/support/azurite.hpp"
#include "tests/support/shoal_process.hpp"
#include "transport/curve.hpp"
#include "transport/socket.hpp"
#include "workers/persistor/sources.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace shoal::tests::security {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

/// A scratch folder removed at the end, and the fixture's storage.
class security_test : public ::testing::Test {
protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / unique_name("shoalsec");
    fs::create_directories(dir_);
    ::chmod(dir_.c_str(), 0755);
    cs_ = azurite_connection_string();
    auto account = storage::parse_connection_string(cs_);
    ASSERT_TRUE(account);
    auto pipe = storage::pipeline::make(*account);
    ASSERT_TRUE(pipe);
    blobs_.emplace(*pipe);
    pipe_.emplace(*pipe);
  }
  void TearDown() override {
    std::error_code ec;
    if (!::testing::Test::HasFailure())
      fs::remove_all(dir_, ec);
  }

  /// A key pair written as NAME.key (0600) and NAME.pub in `folder` (default: the scratch one).
  transport::curve_key_pair keys(const std::string& name, const fs::path& folder = {}) {
    const fs::path f = folder.empty() ? dir_ : folder;
    fs::create_directories(f);
    auto k = transport::generate_curve_key_pair();
    EXPECT_TRUE(k);
    EXPECT_TRUE(transport::save_curve_key_pair(*k, f / (name + ".pub"), f / (name + ".key")));
    return *k;
  }

  /// The environment of a shoal process using the fixture's storage.
  std::vector<std::pair<std::string, std::string>> storage_env() const {
    return {{"AZURE_STORAGE_CONNECTION_STRING", cs_}};
  }

  /// Starts `shoal persistor` with `args` (after "persistor") and `env`, waits for "listening".
  /// Returns the process and the bound endpoint; the endpoint is "" when it did not start.
  std::pair<workers::child_process, std::string> start_persistor(
      const std::vector<std::string>& args, std::vector<std::pair<std::string, std::string>> env,
      const fs::path& log) {
    std::vector<std::string> all{"persistor"};
    all.insert(all.end(), args.begin(), args.end());
    auto e = storage_env();
    e.insert(e.end(), env.begin(), env.end());
    auto p = spawn_shoal(all, e, log);
    // stdout says "listening ENDPOINT" on a line of its own (the log line says "listening on").
    std::string endpoint;
    if (wait_for_text(log, "\nlistening ", 60s) || slurp(log).starts_with("listening ")) {
      const std::string text = "\n" + slurp(log);
      const auto at = text.find("\nlistening ") + 11;
      endpoint = text.substr(at, text.find('\n', at) - at);
    }
    return {std::move(p), endpoint};
  }

  /// Every data blob's body in `container` (not `_shoal/…`), concatenated.
  std::string stored(const std::string& container) {
    std::string out;
    auto pager = blobs_->list_blobs_pager(container);
    while (true) {
      auto page = pager.next();
      if (!page || !*page)
        break;
      for (const auto& item : (*page)->blobs) {
        if (item.name.starts_with("_shoal/"))
          continue;
        auto got = blobs_->get_blob(container, item.name);
        EXPECT_TRUE(got) << item.name;
        if (got)
          out += got->body;
      }
    }
    return out;
  }

  fs::path dir_;
  std::string cs_;
  std::optional<storage::pipeline> pipe_;
  std::optional<storage::blob_client> blobs_;
};

/// A producer speaking the persist.* protocol on one DEALER (transport/ENVELOPE.md).
class raw_producer {
public:
  /// Connects to `endpoint`, as a CURVE client when `keys` and `server_key` are given.
  raw_producer(const std::string& endpoint, const std::optional<transport::curve_key_pair>& keys = {},
               const std::string& server_key = {}) {
    transport::socket_options so;
    so.linger = 0ms;
    auto s = transport::envelope_socket::make(ctx_, zmq::socket_type::dealer, so);
    EXPECT_TRUE(s);
    sock_.emplace(std::move(*s));
    if (keys) {
      EXPECT_TRUE(transport::configure_curve_client(sock_->raw(), *keys, server_key));
    }
    EXPECT_TRUE(sock_->connect(endpoint));
  }

  /// Sends one record to `dest`; returns its id.
  transport::message_id send(const std::string& dest, const std::string& payload) {
    transport::envelope e;
    e.id = transport::new_message_id();
    e.kind = std::string(workers::persistor::kind_record);
    e.from = "securitytest@1@host";
    e.ts_ns = 1;
    e.hdr["dest"] = dest;
    e.body.assign(payload.begin(), payload.end());
    EXPECT_TRUE(sock_->send(e, 2000ms));
    return e.id;
  }

  /// Collects acks and rejects until every id in `ids` has one or `timeout` passes. (Waits in
  /// the socket's receive, consuming as it goes, so not with tests/support/eventually.hpp.)
  void await(const std::vector<transport::message_id>& ids, std::chrono::milliseconds timeout) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    auto answered = [&] {
      for (const auto& id : ids)
        if (!acked.contains(id) && !rejected.contains(id))
          return false;
      return true;
    };
    transport::envelope in;
    while (!answered() && std::chrono::steady_clock::now() < end) {
      if (!sock_->receive(in, 100ms))
        continue;
      if (in.kind == workers::persistor::kind_ack) {
        for (std::size_t off = 0; off + 16 <= in.body.size(); off += 16) {
          transport::message_id id{};
          std::copy_n(in.body.begin() + static_cast<std::ptrdiff_t>(off), 16, id.begin());
          acked.insert(id);
        }
      } else if (in.kind == workers::persistor::kind_reject && in.corr) {
        rejected[*in.corr] = std::string(in.body.begin(), in.body.end());
      }
    }
  }

  std::set<transport::message_id> acked;
  std::map<transport::message_id, std::string> rejected;

private:
  zmq::context_t ctx_{1};
  std::optional<transport::envelope_socket> sock_;
};

} // namespace shoal::tests::security
