// Files and secrets (issue 15 items 4–5): key files load through a Kubernetes Secret volume's
// `..data` symlink chain and are judged after open as OpenSSH judges private keys; generated
// files never follow a planted symlink; the storage connection string never falls back to the
// emulator by itself, may come from a private file, and PostgreSQL passwords stay off argv.

#include "transport/curve.hpp"
#include "workers/config.hpp"

#include "tests/support/azurite.hpp"

#include <gtest/gtest.h>

#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

namespace shoal {
namespace {

namespace fs = std::filesystem;

class SecretFiles : public ::testing::Test {
protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / tests::unique_name("seckeys");
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  // What the kubelet lays out for a Secret volume: the files in a timestamped folder, `..data`
  // pointing at it, and each name a symlink through `..data`.
  fs::path kubernetes_volume(const transport::curve_key_pair& k, mode_t mode) {
    const fs::path vol = dir_ / "volume";
    const fs::path stamp = vol / "..2026_11_21_12_00_00.123456789";
    fs::create_directories(stamp);
    EXPECT_TRUE(transport::save_curve_key_pair(k, stamp / "host.pub", stamp / "host.key"));
    ::chmod((stamp / "host.key").c_str(), mode);
    fs::create_directory_symlink(stamp.filename(), vol / "..data");
    fs::create_symlink("..data/host.key", vol / "host.key");
    fs::create_symlink("..data/host.pub", vol / "host.pub");
    return vol;
  }
  // Runs `fn` in a child process as `uid` (the test runs as root): 0 when it returned true.
  static int as_user(uid_t uid, gid_t gid, const std::function<bool()>& fn) {
    // fork without exec on purpose (not the launcher): the child runs `fn`, our code, as `uid`
    const pid_t pid = ::fork();
    if (pid == 0) {
      if (::setgroups(0, nullptr) != 0 || ::setgid(gid) != 0 || ::setuid(uid) != 0)
        _exit(3);
      _exit(fn() ? 0 : 1);
    }
    int st = 0;
    ::waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 2;
  }
  fs::path dir_;
};

TEST_F(SecretFiles, KeyFilesLoadThroughAKubernetesDataSymlinkChain) {
  auto k = transport::generate_curve_key_pair();
  ASSERT_TRUE(k) << k.error().describe();
  const fs::path vol = kubernetes_volume(*k, 0600);
  ASSERT_TRUE(fs::is_symlink(vol / "host.key"));
  auto loaded = transport::load_curve_secret_key(vol / "host.key");
  ASSERT_TRUE(loaded) << loaded.error().describe();
  EXPECT_EQ(*loaded, *k);
  auto pub = transport::load_curve_public_key(vol / "host.pub");
  ASSERT_TRUE(pub) << pub.error().describe();
  EXPECT_EQ(*pub, k->public_key);
  // The allow folder through the same kind of volume: the symlinked .pub counts, ..data not.
  auto text = transport::allow_list_from_dir(vol);
  ASSERT_TRUE(text) << text.error().describe();
  EXPECT_NE(text->find(k->public_key + " host.pub"), std::string::npos) << *text;
}

TEST_F(SecretFiles, TheFileReachedIsJudgedNotTheSymlink) {
  auto k = transport::generate_curve_key_pair();
  ASSERT_TRUE(k);
  const fs::path vol = kubernetes_volume(*k, 0644); // the target is readable by everyone
  auto loaded = transport::load_curve_secret_key(vol / "host.key");
  ASSERT_FALSE(loaded);
  EXPECT_EQ(loaded.error().code, transport::errc::security);
  EXPECT_NE(loaded.error().message.find("0644"), std::string::npos) << loaded.error().message;
  // A symlink to something that is not a regular file is refused too.
  fs::create_symlink("/dev/null", dir_ / "null.key");
  auto dev = transport::read_secret_file(dir_ / "null.key");
  ASSERT_FALSE(dev);
  EXPECT_NE(dev.error().message.find("not a regular file"), std::string::npos) << dev.error().message;
}

TEST_F(SecretFiles, OwnershipFollowsOpenSshRootMayShareWithAGroupOthersNever) {
  if (::geteuid() != 0)
    GTEST_SKIP() << "needs root to create files owned by other users";
  const fs::path f = dir_ / "conn";
  { std::ofstream(f) << "UseDevelopmentStorage=true\n"; }
  ::chmod(dir_.c_str(), 0755);
  const uid_t nobody = 65534;
  const gid_t nogroup = 65534;
  // Someone else's file is refused whatever its mode.
  ASSERT_EQ(::chown(f.c_str(), 12345, 12345), 0);
  ::chmod(f.c_str(), 0600);
  auto other = transport::read_secret_file(f);
  ASSERT_FALSE(other);
  EXPECT_NE(other.error().message.find("owned by uid 12345"), std::string::npos) << other.error().message;
  // Root's file shared with the reader's group (a Secret volume with fsGroup): 0440 is fine for
  // a reader that is not root, 0444 (others may read) is not.
  ASSERT_EQ(::chown(f.c_str(), 0, nogroup), 0);
  ::chmod(f.c_str(), 0440);
  EXPECT_EQ(as_user(nobody, nogroup, [&] { return bool(transport::read_secret_file(f)); }), 0);
  ::chmod(f.c_str(), 0444);
  EXPECT_EQ(as_user(nobody, nogroup, [&] { return bool(transport::read_secret_file(f)); }), 1);
  // The reader's own file must be 0600.
  ASSERT_EQ(::chown(f.c_str(), nobody, nogroup), 0);
  ::chmod(f.c_str(), 0640);
  EXPECT_EQ(as_user(nobody, nogroup, [&] { return bool(transport::read_secret_file(f)); }), 1);
  ::chmod(f.c_str(), 0600);
  EXPECT_EQ(as_user(nobody, nogroup, [&] { return bool(transport::read_secret_file(f)); }), 0);
}

TEST_F(SecretFiles, AWorldWritableAllowFolderIsRefused) {
  auto k = transport::generate_curve_key_pair();
  ASSERT_TRUE(k);
  const fs::path allow = dir_ / "allow";
  fs::create_directories(allow);
  ASSERT_TRUE(transport::save_curve_key_pair(*k, allow / "a.pub", dir_ / "a.key"));
  ::chmod(allow.c_str(), 0755);
  EXPECT_TRUE(transport::allow_list_from_dir(allow));
  ::chmod(allow.c_str(), 0777);
  auto open_folder = transport::allow_list_from_dir(allow);
  ASSERT_FALSE(open_folder);
  EXPECT_EQ(open_folder.error().code, transport::errc::security);
}

TEST_F(SecretFiles, WritesNeverFollowAPlantedSymlinkAndNeverClobberUnlessAsked) {
  const fs::path victim = dir_ / "victim";
  { std::ofstream(victim) << "precious\n"; }
  const fs::path target = dir_ / "shoal.env";
  fs::create_symlink(victim, target);
  auto r = transport::write_file_atomically(target, "SECRET=1\n", 0600, false);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().sys_errno, EEXIST);
  std::string victim_text;
  std::getline(std::ifstream(victim), victim_text);
  EXPECT_EQ(victim_text, "precious");
  // Replacing swaps the symlink itself for a new file; the victim stays as it was.
  ASSERT_TRUE(transport::write_file_atomically(target, "SECRET=1\n", 0600, true));
  EXPECT_FALSE(fs::is_symlink(target));
  std::getline(std::ifstream(victim), victim_text);
  EXPECT_EQ(victim_text, "precious");
  struct stat st {};
  ASSERT_EQ(::stat(target.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u); // set explicitly, whatever the umask
  const mode_t old = ::umask(0);
  ASSERT_TRUE(transport::write_file_atomically(dir_ / "pub", "x\n", 0644, false));
  ::umask(old);
  ASSERT_EQ(::stat((dir_ / "pub").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u);
}

// -- the connection string -------------------------------------------------------------------

class ConnectionStringSources : public SecretFiles {
protected:
  void SetUp() override {
    SecretFiles::SetUp();
    for (const char* v : {"AZURE_STORAGE_CONNECTION_STRING", "SHOAL_STORAGE_CONNECTION_STRING",
                          "SHOAL_STORAGE_CONNECTION_STRING_FILE", "SHOAL_CONFIG"})
      ::unsetenv(v);
  }
  fs::path config(const std::string& text) {
    const fs::path p = dir_ / "shoal.toml";
    std::ofstream(p) << text;
    return p;
  }
};

TEST_F(ConnectionStringSources, NothingGivenMeansNothingNotTheEmulator) {
  auto c = workers::load_config({});
  ASSERT_TRUE(c) << c.error().describe();
  EXPECT_EQ(c->storage.connection_string, "");
  EXPECT_EQ(c->storage.connection_string_origin, "");
  ::setenv("AZURE_STORAGE_CONNECTION_STRING", "UseDevelopmentStorage=true", 1);
  c = workers::load_config({});
  ASSERT_TRUE(c);
  EXPECT_EQ(c->storage.connection_string, "UseDevelopmentStorage=true");
  EXPECT_EQ(c->storage.connection_string_origin, "AZURE_STORAGE_CONNECTION_STRING");
  ::unsetenv("AZURE_STORAGE_CONNECTION_STRING");
}

TEST_F(ConnectionStringSources, AFileNamedInTheConfigHoldsIt) {
  const fs::path secret = dir_ / "storage.conn";
  { std::ofstream(secret) << "# the account\n\n  AccountName=a;AccountKey=c2VjcmV0;EndpointSuffix=core.windows.net  \n"; }
  ::chmod(secret.c_str(), 0600);
  auto c = workers::load_config(config("[storage]\nconnection_string_file = \"" + secret.string() + "\"\n"));
  ASSERT_TRUE(c) << c.error().describe();
  EXPECT_EQ(c->storage.connection_string, "AccountName=a;AccountKey=c2VjcmV0;EndpointSuffix=core.windows.net");
  EXPECT_NE(c->storage.connection_string_origin.find(secret.string()), std::string::npos);
  // Readable by others: refused, naming the mode.
  ::chmod(secret.c_str(), 0644);
  auto open = workers::load_config(config("[storage]\nconnection_string_file = \"" + secret.string() + "\"\n"));
  ASSERT_FALSE(open);
  EXPECT_NE(open.error().message.find("0644"), std::string::npos) << open.error().message;
  // Both a string and a file: refused.
  ::chmod(secret.c_str(), 0600);
  auto both = workers::load_config(config("[storage]\nconnection_string = \"UseDevelopmentStorage=true\"\n"
                                          "connection_string_file = \"" + secret.string() + "\"\n"));
  ASSERT_FALSE(both);
  EXPECT_NE(both.error().message.find("both set"), std::string::npos) << both.error().message;
}

TEST(PostgresPasswords, UrlsWithAPasswordAreRecognised) {
  EXPECT_TRUE(workers::postgres_url_has_password("postgresql://shoal:s3cret@db:5432/etl"));
  EXPECT_TRUE(workers::postgres_url_has_password("postgres://u:@db/etl"));
  EXPECT_TRUE(workers::postgres_url_has_password("postgresql://db/etl?sslmode=require&password=x"));
  EXPECT_FALSE(workers::postgres_url_has_password("postgresql://shoal@127.0.0.1:5432/postgres"));
  EXPECT_FALSE(workers::postgres_url_has_password("postgresql://db/etl?passfile=/etc/shoal/pgpass"));
  EXPECT_FALSE(workers::postgres_url_has_password("postgresql://[::1]:5432/etl"));
  EXPECT_FALSE(workers::postgres_url_has_password(""));
}

TEST(ConfigRanges, AppendBlobsMustFitTheEtlCap) {
  workers::config c;
  c.persistor.append_max_bytes = c.persistor.batch_max_bytes - 1;
  auto small = workers::validate(c);
  ASSERT_FALSE(small);
  EXPECT_NE(small.error().message.find("persistor.append_max_bytes"), std::string::npos);
  c.persistor.append_max_bytes = static_cast<std::uint32_t>(c.etl.max_blob_bytes) + 1;
  EXPECT_FALSE(workers::validate(c));
  c.etl.max_blob_bytes = 1ull << 30;
  EXPECT_TRUE(workers::validate(c));
  c.etl.max_blob_bytes = 1000; // below 1 MiB
  c.persistor.append_max_bytes = c.persistor.batch_max_bytes;
  EXPECT_FALSE(workers::validate(c));
  // Producer keys come as a pair of secret and allow folder.
  workers::config k;
  k.persistor.curve_secret_key = "/etc/shoal/keys/persistor.key";
  EXPECT_FALSE(workers::validate(k));
  k.persistor.curve_allow_dir = "/etc/shoal/producers";
  EXPECT_TRUE(workers::validate(k));
}

} // namespace
} // namespace shoal
