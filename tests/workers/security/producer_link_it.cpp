// The producers' link to a push persistor (issue 15 item 1), with real `shoal persistor` and
// `shoal send` processes against Azurite:
//  - a persistor on a tcp endpoint that is not loopback refuses to start without CURVE keys;
//  - with keys it is a CURVE server: a producer whose key is not in curve_allow_dir is refused
//    (and the refusal logged with its key), a listed one stores, and each stored record names
//    the key it came with (METADATA.producer_key); plaintext to the CURVE endpoint stores nothing;
//  - the allow folder is re-read while the persistor runs, through a `..data` symlink chain;
//  - a Python producer written from transport/ENVELOPE.md's "Third-party producers" section
//    (its worked example, run as it is printed there) stores records through it.

#include "tests/workers/security/security_harness.hpp"

#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <regex>
#include <sstream>

namespace shoal::tests::security {
namespace {

class ProducerLink : public security_test {
protected:
  void SetUp() override {
    security_test::SetUp();
    container_ = unique_name("sec").substr(0, 40);
    for (auto& c : container_)
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    server_ = keys("persistor", dir_ / "server");
    allowed_ = keys("allowed", dir_ / "producers-keys");
    stranger_ = keys("stranger", dir_ / "producers-keys");
    fs::create_directories(dir_ / "producers");
    fs::copy_file(dir_ / "producers-keys" / "allowed.pub", dir_ / "producers" / "allowed.pub");
  }

  // A CURVE persistor on loopback (keys configured: CURVE on any tcp endpoint).
  std::pair<workers::child_process, std::string> curve_persistor(const fs::path& log,
                                                                  const std::string& format = "persistor-v1") {
    return start_persistor({"--endpoint", "tcp://127.0.0.1:0", "--container", container_, "--format", format,
                            "--no-register", "--batch-max-delay-ms", "100", "--name", "sec"},
                           {{"SHOAL_PERSISTOR_CURVE_SECRET_KEY", (dir_ / "server" / "persistor.key").string()},
                            {"SHOAL_PERSISTOR_CURVE_PUBLIC_KEY", (dir_ / "server" / "persistor.pub").string()},
                            {"SHOAL_PERSISTOR_CURVE_ALLOW_DIR", (dir_ / "producers").string()}},
                           log);
  }

  fs::path input(std::size_t n, const std::string& tag) {
    const fs::path p = dir_ / (tag + ".ndjson");
    std::ofstream out(p);
    for (std::size_t i = 0; i < n; ++i)
      out << "{\"tag\":\"" << tag << "\",\"n\":" << i << "}\n";
    return p;
  }

  std::string container_;
  transport::curve_key_pair server_, allowed_, stranger_;
};

TEST_F(ProducerLink, RefusesToStartOnANonLoopbackEndpointWithoutKeys) {
  const fs::path log = dir_ / "nokeys.log";
  auto p = spawn_shoal({"persistor", "--endpoint", "tcp://0.0.0.0:0", "--no-register", "--container", container_},
                       storage_env(), log);
  EXPECT_EQ(wait_exit(p, 60s), 2) << slurp(log);
  EXPECT_NE(slurp(log).find("is not loopback"), std::string::npos) << slurp(log);
  EXPECT_NE(slurp(log).find("curve_secret_key"), std::string::npos) << slurp(log);
  EXPECT_EQ(slurp(log).find("listening"), std::string::npos);
}

TEST_F(ProducerLink, AListedKeyStoresAndIsNamedInEveryRecordAnUnlistedOneIsRefusedAndLogged) {
  const fs::path plog = dir_ / "persistor.log";
  auto [p, endpoint] = curve_persistor(plog);
  ASSERT_FALSE(endpoint.empty()) << slurp(plog);
  EXPECT_NE(slurp(plog).find("CURVE server"), std::string::npos) << slurp(plog);

  // Unlisted: refused at the handshake, said so by `shoal send`, logged by the persistor.
  const fs::path slog = dir_ / "stranger.log";
  auto s = spawn_shoal({"send", input(20, "stranger").string(), "--dest", "sec", "--endpoint", endpoint,
                        "--curve-secret-key", (dir_ / "producers-keys" / "stranger.key").string(),
                        "--curve-server-key", (dir_ / "server" / "persistor.pub").string(), "--timeout-s", "30",
                        "--quiet"},
                       {}, slog);
  EXPECT_EQ(wait_exit(s, 60s), 1) << slurp(slog);
  EXPECT_NE(slurp(slog).find("refused this producer's key"), std::string::npos) << slurp(slog);
  EXPECT_TRUE(wait_for_text(plog, "refused a producer", 10s)) << slurp(plog);
  EXPECT_NE(slurp(plog).find(stranger_.public_key), std::string::npos) << slurp(plog);

  // Listed: stored, every record naming the key.
  const fs::path alog = dir_ / "allowed.log";
  auto a = spawn_shoal({"send", input(50, "allowed").string(), "--dest", "sec", "--endpoint", endpoint,
                        "--curve-secret-key", (dir_ / "producers-keys" / "allowed.key").string(),
                        "--curve-public-key", (dir_ / "producers-keys" / "allowed.pub").string(),
                        "--curve-server-key", (dir_ / "server" / "persistor.pub").string(), "--quiet"},
                       {}, alog);
  ASSERT_EQ(wait_exit(a, 120s), 0) << slurp(alog);
  const std::string body = stored(container_);
  std::size_t records = 0, named = 0;
  std::istringstream in(body);
  for (std::string line; std::getline(in, line);) {
    if (line.empty())
      continue;
    auto j = nlohmann::json::parse(line, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << line;
    ++records;
    if (j["METADATA"].value("producer_key", "") == allowed_.public_key)
      ++named;
  }
  EXPECT_EQ(records, 50u);
  EXPECT_EQ(named, 50u) << body.substr(0, 400);
  EXPECT_EQ(body.find("\"tag\":\\\"stranger"), std::string::npos);
  EXPECT_EQ(body.find(stranger_.public_key), std::string::npos);
}

TEST_F(ProducerLink, PlaintextToTheCurveEndpointStoresNothing) {
  const fs::path plog = dir_ / "persistor.log";
  auto [p, endpoint] = curve_persistor(plog);
  ASSERT_FALSE(endpoint.empty()) << slurp(plog);
  // A raw plaintext DEALER: its records never arrive, nothing answers.
  raw_producer plain(endpoint);
  std::vector<transport::message_id> ids;
  for (int i = 0; i < 5; ++i)
    ids.push_back(plain.send("sec", "{\"plain\":" + std::to_string(i) + "}"));
  plain.await(ids, 3s); // a time bound by necessity: proving that nothing arrives
  EXPECT_TRUE(plain.acked.empty());
  EXPECT_TRUE(plain.rejected.empty());
  // `shoal send` without keys says the handshake failed instead of waiting out its timeout.
  const fs::path slog = dir_ / "plain.log";
  auto s = spawn_shoal({"send", input(5, "plain").string(), "--dest", "sec", "--endpoint", endpoint,
                        "--timeout-s", "60", "--quiet"},
                       {}, slog);
  EXPECT_EQ(wait_exit(s, 50s), 1) << slurp(slog);
  EXPECT_NE(slurp(slog).find("failed the handshake"), std::string::npos) << slurp(slog);
  // The persistor is alive and a keyed producer still stores.
  raw_producer keyed(endpoint, allowed_, server_.public_key);
  const auto id = keyed.send("sec", "{\"keyed\":true}");
  keyed.await({id}, 60s);
  EXPECT_TRUE(keyed.acked.contains(id));
  const std::string body = stored(container_);
  EXPECT_EQ(body.find("plain"), std::string::npos) << body;
  EXPECT_NE(body.find("keyed"), std::string::npos);
}

TEST_F(ProducerLink, TheAllowFolderIsReloadedThroughAKubernetesSymlinkChain) {
  // The producers' folder as a Secret volume lays it out; the kubelet swaps ..data to update it.
  const fs::path vol = dir_ / "volume";
  const fs::path v1 = vol / "..2026_01_01_00_00_00.1";
  fs::create_directories(v1);
  fs::copy_file(dir_ / "producers-keys" / "allowed.pub", v1 / "allowed.pub");
  fs::create_directory_symlink(v1.filename(), vol / "..data");
  fs::create_symlink("..data/allowed.pub", vol / "allowed.pub");
  // The server's keys through the same kind of chain.
  const fs::path kvol = dir_ / "keyvolume";
  const fs::path k1 = kvol / "..2026_01_01_00_00_00.1";
  fs::create_directories(k1);
  fs::copy_file(dir_ / "server" / "persistor.key", k1 / "persistor.key");
  ::chmod((k1 / "persistor.key").c_str(), 0600);
  fs::create_directory_symlink(k1.filename(), kvol / "..data");
  fs::create_symlink("..data/persistor.key", kvol / "persistor.key");

  const fs::path plog = dir_ / "persistor.log";
  auto [p, endpoint] = start_persistor(
      {"--endpoint", "tcp://127.0.0.1:0", "--container", container_, "--no-register", "--batch-max-delay-ms", "100"},
      {{"SHOAL_PERSISTOR_CURVE_SECRET_KEY", (kvol / "persistor.key").string()},
       {"SHOAL_PERSISTOR_CURVE_ALLOW_DIR", vol.string()}},
      plog);
  ASSERT_FALSE(endpoint.empty()) << slurp(plog);
  {
    raw_producer first(endpoint, stranger_, server_.public_key);
    (void)first.send("sec", "{\"who\":\"stranger-before\"}");
    EXPECT_TRUE(wait_for_text(plog, stranger_.public_key, 10s)) << slurp(plog);
  }
  // The kubelet's update: a new timestamped folder, ..data swapped to it atomically.
  const fs::path v2 = vol / "..2026_01_01_00_00_00.2";
  fs::create_directories(v2);
  fs::copy_file(dir_ / "producers-keys" / "allowed.pub", v2 / "allowed.pub");
  fs::copy_file(dir_ / "producers-keys" / "stranger.pub", v2 / "stranger.pub");
  fs::create_directory_symlink(v2.filename(), vol / "..data_tmp");
  fs::rename(vol / "..data_tmp", vol / "..data");
  fs::create_symlink("..data/stranger.pub", vol / "stranger.pub");
  ASSERT_TRUE(wait_for_text(plog, "2 keys", 10s)) << slurp(plog);
  raw_producer second(endpoint, stranger_, server_.public_key);
  const auto admitted = second.send("sec", "{\"who\":\"stranger-after\"}");
  second.await({admitted}, 60s);
  EXPECT_TRUE(second.acked.contains(admitted));
}

// The ```python block under "Worked example" in transport/ENVELOPE.md's "Third-party producers".
std::string envelope_md_example() {
  const std::string md = slurp(fs::path(source_dir()) / "transport" / "ENVELOPE.md");
  const auto section = md.find("## Third-party producers");
  if (section == std::string::npos)
    return {};
  const auto example = md.find("### Worked example", section);
  const auto open = md.find("```python\n", example);
  const auto close = md.find("\n```", open + 10);
  if (example == std::string::npos || open == std::string::npos || close == std::string::npos)
    return {};
  return md.substr(open + 10, close - open - 9);
}

TEST_F(ProducerLink, APythonProducerWrittenFromTheSpecStoresThroughTheCurvePersistor) {
  const fs::path python = "/usr/bin/python3"; // Debian's, with python3-zmq and python3-msgpack
  ASSERT_TRUE(fs::exists(python)) << "deploy/setup.sh installs python3-zmq and python3-msgpack";
  const std::string script = envelope_md_example();
  ASSERT_FALSE(script.empty()) << "no worked example in transport/ENVELOPE.md";
  { std::ofstream(dir_ / "producer.py") << script; }
  const fs::path plog = dir_ / "persistor.log";
  auto [p, endpoint] = curve_persistor(plog, "ndjson");
  ASSERT_FALSE(endpoint.empty()) << slurp(plog);
  // As the example's header says: producer.py ENDPOINT SERVER_PUB CLIENT_KEY DEST < NDJSON.
  auto run_example = [&](const std::string& key, const fs::path& records, const fs::path& log) {
    const std::string cmd = python.string() + " " + (dir_ / "producer.py").string() + " " + endpoint + " " +
                            (dir_ / "server" / "persistor.pub").string() + " " +
                            (dir_ / "producers-keys" / key).string() + " pyprod < " + records.string() + " > " +
                            log.string() + " 2>&1";
    return std::system(cmd.c_str());
  };
  const fs::path log = dir_ / "python.log";
  ASSERT_EQ(run_example("allowed.key", input(30, "python"), log), 0) << slurp(log);
  const std::string body = stored(container_);
  std::size_t records = 0;
  std::istringstream in(body);
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << line;
    if (j["data"].value("tag", "") != "python")
      continue;
    ++records;
    EXPECT_EQ(j["meta"].value("producer_key", ""), allowed_.public_key);
    EXPECT_EQ(j["meta"].value("dest", ""), "pyprod");
  }
  EXPECT_EQ(records, 30u) << slurp(log);
  // And a stranger running the same script is refused.
  const fs::path slog = dir_ / "python-stranger.log";
  EXPECT_NE(run_example("stranger.key", input(3, "pystranger"), slog), 0) << slurp(slog);
  EXPECT_NE(slurp(slog).find("refused this producer's key"), std::string::npos) << slurp(slog);
  EXPECT_EQ(stored(container_).find("pystranger"), std::string::npos);
}

} // namespace
} // namespace shoal::tests::security
