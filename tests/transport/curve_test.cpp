#include "transport/curve.hpp"

#include "tests/support/eventually.hpp"
#include "transport/socket.hpp"

#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

namespace shoal::transport {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

// A fresh directory per test, removed afterwards.
class temp_dir {
public:
  temp_dir() {
    static std::atomic<int> n{0};
    path_ = fs::temp_directory_path() /
            ("shoal-curve-test-" + std::to_string(::getpid()) + "-" + std::to_string(n++));
    fs::create_directories(path_);
  }
  ~temp_dir() { std::error_code ec; fs::remove_all(path_, ec); }
  const fs::path& path() const { return path_; }

private:
  fs::path path_;
};

// Replaces `file` atomically (new inode), as an operator's editor or config tool would.
void write_text(const fs::path& file, const std::string& text) {
  const fs::path tmp = file.string() + ".new";
  { std::ofstream(tmp) << text; }
  fs::rename(tmp, file);
}

using shoal::tests::eventually; // tests/support/eventually.hpp

envelope hello_sample() {
  envelope e;
  e.id = new_message_id();
  e.kind = "ctl.hello";
  e.from = "client@curve_test@localhost";
  e.ts_ns = 1;
  return e;
}

curve_key_pair keys() {
  auto k = generate_curve_key_pair();
  EXPECT_TRUE(k) << k.error().describe();
  return k ? *k : curve_key_pair{};
}

TEST(CurveKeysTest, SavesAndLoadsKeyPairsWithAPrivateSecretFile) {
  ASSERT_TRUE(curve_available());
  temp_dir dir;
  const curve_key_pair k = keys();
  EXPECT_EQ(k.public_key.size(), curve_key_z85_chars);
  EXPECT_TRUE(valid_curve_key(k.secret_key));
  const fs::path pub = dir.path() / "node.key", sec = dir.path() / "node.key_secret";
  auto saved = save_curve_key_pair(k, pub, sec);
  ASSERT_TRUE(saved) << saved.error().describe();
  struct stat st {};
  ASSERT_EQ(::stat(sec.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto loaded = load_curve_secret_key(sec);
  ASSERT_TRUE(loaded) << loaded.error().describe();
  EXPECT_EQ(*loaded, k);
  auto loaded_pub = load_curve_public_key(pub);
  ASSERT_TRUE(loaded_pub) << loaded_pub.error().describe();
  EXPECT_EQ(*loaded_pub, k.public_key);
  auto derived = curve_public_key(k.secret_key);
  ASSERT_TRUE(derived);
  EXPECT_EQ(*derived, k.public_key);
}

TEST(CurveKeysTest, RefusesSecretFilesOthersCanRead) {
  temp_dir dir;
  const fs::path pub = dir.path() / "a.key", sec = dir.path() / "a.key_secret";
  ASSERT_TRUE(save_curve_key_pair(keys(), pub, sec));
  ASSERT_EQ(::chmod(sec.c_str(), 0644), 0);
  auto r = load_curve_secret_key(sec);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::security);
  EXPECT_NE(r.error().message.find("0644"), std::string::npos) << r.error().message;
}

TEST(CurveKeysTest, ReportsMissingAndMalformedKeyFiles) {
  temp_dir dir;
  auto missing = load_curve_public_key(dir.path() / "absent.key");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, errc::io);
  EXPECT_EQ(missing.error().sys_errno, ENOENT);
  write_text(dir.path() / "bad.key", "# comment\nnot-a-key\n");
  auto bad = load_curve_public_key(dir.path() / "bad.key");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, errc::invalid_argument);
  EXPECT_NE(bad.error().message.find(":2:"), std::string::npos) << bad.error().message;
  EXPECT_FALSE(curve_public_key("short"));
}

// A CURVE server (PULL) with a ZAP allow-list, and clients (PUSH) that try to reach it.
class ZapTest : public ::testing::Test {
protected:
  void SetUp() override {
    server_keys = keys();
    listed = keys();
    unlisted = keys();
    allow_list = dir.path() / "clients.keys";
    write_text(allow_list, "# admitted clients\n\n" + listed.public_key + "  host-a\n");
    zap_options opts;
    opts.allow_list = allow_list;
    opts.check_interval = 50ms;
    opts.on_refusal = [this](const zap_refusal& r) {
      std::lock_guard lock(mu);
      refusals.push_back(r);
    };
    auto z = zap_authenticator::start(ctx, opts);
    ASSERT_TRUE(z) << z.error().describe();
    zap = std::move(*z);
    auto s = envelope_socket::make(ctx, zmq::socket_type::pull);
    ASSERT_TRUE(s);
    server.emplace(std::move(*s));
    ASSERT_TRUE(configure_curve_server(server->raw(), server_keys));
    ASSERT_TRUE(server->bind("tcp://127.0.0.1:*"));
  }
  void TearDown() override {
    clients.clear();
    server.reset();
    if (zap) zap->stop();
  }

  envelope_socket& client(const curve_key_pair& k) {
    socket_options o;
    o.linger = 0ms;
    auto s = envelope_socket::make(ctx, zmq::socket_type::push, o);
    EXPECT_TRUE(s);
    EXPECT_TRUE(configure_curve_client(s->raw(), k, server_keys.public_key));
    EXPECT_TRUE(s->connect(server->last_endpoint()));
    clients.push_back(std::make_unique<envelope_socket>(std::move(*s)));
    return *clients.back();
  }

  temp_dir dir;
  zmq::context_t ctx;
  curve_key_pair server_keys, listed, unlisted;
  fs::path allow_list;
  std::unique_ptr<zap_authenticator> zap;
  std::optional<envelope_socket> server;
  std::vector<std::unique_ptr<envelope_socket>> clients;
  std::mutex mu;
  std::vector<zap_refusal> refusals;
};

TEST_F(ZapTest, AdmitsAListedClientAndExchangesAnEnvelope) {
  EXPECT_EQ(zap->size(), 1u);
  EXPECT_TRUE(zap->allows(listed.public_key));
  auto& c = client(listed);
  const envelope out = hello_sample();
  ASSERT_TRUE(c.send(out));
  auto in = server->receive(5s);
  ASSERT_TRUE(in) << in.error().describe();
  EXPECT_EQ(in->env, out);
  EXPECT_GE(zap->stats().admitted.load(), 1u);
  EXPECT_EQ(zap->stats().refused.load(), 0u);
}

TEST_F(ZapTest, RefusesAnUnlistedKeyAndReportsThePeer) {
  auto& c = client(unlisted);
  ASSERT_TRUE(c.send(hello_sample())); // queued in the client; must never be delivered
  ASSERT_TRUE(eventually([&] { return zap->stats().refused.load() >= 1; }));
  auto in = server->receive(200ms);
  ASSERT_FALSE(in);
  EXPECT_EQ(in.error().code, errc::timeout);
  EXPECT_EQ(server->stats().received.load(), 0u);
  std::lock_guard lock(mu);
  ASSERT_FALSE(refusals.empty());
  EXPECT_EQ(refusals[0].public_key, unlisted.public_key);
  EXPECT_EQ(refusals[0].address, "127.0.0.1");
  EXPECT_EQ(refusals[0].mechanism, "CURVE");
  EXPECT_EQ(refusals[0].domain, "shoal");
}

TEST_F(ZapTest, ReloadAddsAKeyOnDemandAndOnFileChange) {
  auto& refused = client(unlisted);
  ASSERT_TRUE(refused.send(hello_sample()));
  ASSERT_TRUE(eventually([&] { return zap->stats().refused.load() >= 1; }));

  // On demand: reload() picks up the edited list at once.
  write_text(allow_list, listed.public_key + "\n" + unlisted.public_key + " # host-b\n");
  auto n = zap->reload();
  ASSERT_TRUE(n) << n.error().describe();
  EXPECT_EQ(*n, 2u);
  EXPECT_TRUE(zap->allows(unlisted.public_key));
  auto& now_listed = client(unlisted);
  ASSERT_TRUE(now_listed.send(hello_sample()));
  // The refused client retries on its own too, so one or two envelopes may arrive.
  auto in = server->receive(5s);
  ASSERT_TRUE(in) << in.error().describe();

  // On change: a third key appears in the file; the next handshake sees it without reload().
  const curve_key_pair third = keys();
  write_text(allow_list, listed.public_key + "\n" + unlisted.public_key + "\n" + third.public_key + "\n");
  ASSERT_TRUE(eventually([&] { return zap->allows(third.public_key); }));
  const auto reloads = zap->stats().reloads.load();
  EXPECT_GE(reloads, 3u);

  // A broken edit keeps the previous list in force.
  write_text(allow_list, "garbage line\n");
  auto broken = zap->reload();
  ASSERT_FALSE(broken);
  EXPECT_EQ(broken.error().code, errc::invalid_argument);
  EXPECT_TRUE(zap->allows(third.public_key));
  EXPECT_GE(zap->stats().reload_failures.load(), 1u);
}

TEST_F(ZapTest, ASecondHandlerInTheSameContextIsRefused) {
  zap_options opts;
  opts.allow_list = allow_list;
  auto second = zap_authenticator::start(ctx, opts);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, errc::security);
}

} // namespace
} // namespace shoal::transport
