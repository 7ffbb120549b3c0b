// deploy/shoal.toml.example against workers/config.cpp: the example parses, holds exactly the
// defaults, and lists every key load_config accepts, each under a one-line comment. A key added
// to config.cpp without the example fails ExampleListsEveryKeyWithAComment, naming it.

#include "workers/config.hpp"

#include "tests/support/azurite.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace shoal::workers {
namespace {

std::filesystem::path example_path() {
  return std::filesystem::path(tests::source_dir()) / "deploy" / "shoal.toml.example";
}

std::string read_text(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// "work.lease_ms" -> "SHOAL_WORK_LEASE_MS" (as config.cpp names the overrides).
std::string env_name(const std::string& key) {
  std::string out = "SHOAL_";
  for (char ch : key)
    out += ch == '.' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  return out;
}

// The keys an example text sets ("section.key"), and the problems a reader would hit: a key
// without a comment line right above it, or a key set twice.
struct example_keys {
  std::set<std::string> keys;
  std::vector<std::string> problems;
};

example_keys scan_example(const std::string& text) {
  example_keys out;
  std::istringstream in(text);
  std::string line, section, previous;
  for (int number = 1; std::getline(in, line); ++number, previous = line) {
    if (line.starts_with('[')) {
      section = line.substr(1, line.find(']') - 1);
      continue;
    }
    if (line.empty() || line.starts_with('#'))
      continue;
    const auto eq = line.find('=');
    std::string name = line.substr(0, eq == std::string::npos ? 0 : eq);
    while (!name.empty() && name.back() == ' ')
      name.pop_back();
    if (name.empty()) {
      out.problems.push_back("line " + std::to_string(number) + " is not `key = value`");
      continue;
    }
    const std::string key = section + "." + name;
    if (!out.keys.insert(key).second)
      out.problems.push_back(key + " is set twice");
    if (!previous.starts_with("# ") || previous.size() < 10)
      out.problems.push_back(key + " (line " + std::to_string(number) + ") has no comment line above it");
  }
  return out;
}

// Known keys (from config.cpp) missing in `scan`, and keys of `scan` config.cpp does not know.
std::vector<std::string> key_differences(const example_keys& scan) {
  std::vector<std::string> out;
  std::set<std::string> known;
  for (const auto& [key, value] : config_entries(config{})) {
    known.insert(key);
    if (!scan.keys.contains(key))
      out.push_back("missing from the example: " + key + " (default \"" + value + "\")");
  }
  for (const auto& key : scan.keys)
    if (!known.contains(key))
      out.push_back("not a configuration key: " + key);
  return out;
}

std::string joined(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines)
    out += l + "\n";
  return out;
}

class ExampleConfigTest : public ::testing::Test {
protected:
  void SetUp() override {
    // The example must stand for the defaults, whatever the environment of the test run says.
    for (const auto& [key, value] : config_entries(config{}))
      ::unsetenv(env_name(key).c_str());
    ::unsetenv("AZURE_STORAGE_CONNECTION_STRING");
    text = read_text(example_path());
    ASSERT_FALSE(text.empty()) << "cannot read " << example_path();
  }
  std::string text;
};

TEST_F(ExampleConfigTest, ExampleParsesToExactlyTheDefaults) {
  auto loaded = load_config(example_path());
  ASSERT_TRUE(loaded) << loaded.error().describe();
  auto defaults = load_config({});
  ASSERT_TRUE(defaults) << defaults.error().describe();
  const auto got = config_entries(*loaded);
  const auto want = config_entries(*defaults);
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].first, want[i].first);
    EXPECT_EQ(got[i].second, want[i].second) << "the example's " << got[i].first << " is not its default";
  }
  // Every value but the filled-in connection string is also the struct's initializer.
  for (const auto& [key, value] : config_entries(config{})) {
    if (key != "storage.connection_string") {
      EXPECT_NE(std::find(got.begin(), got.end(), std::pair{key, value}), got.end()) << key;
    }
  }
}

TEST_F(ExampleConfigTest, ExampleListsEveryKeyWithAComment) {
  const example_keys scan = scan_example(text);
  EXPECT_TRUE(scan.problems.empty()) << joined(scan.problems);
  const auto diff = key_differences(scan);
  EXPECT_TRUE(diff.empty()) << "deploy/shoal.toml.example is out of date with workers/config.cpp:\n"
                            << joined(diff);
  EXPECT_EQ(scan.keys.size(), config_entries(config{}).size());
}

TEST_F(ExampleConfigTest, CheckNamesAKeyTheExampleLacks) {
  // The check above must be able to fail: drop one key (and its comment) and it is named.
  const std::string line = "lease_renew_ms = 10000\n";
  auto at = text.find(line);
  ASSERT_NE(at, std::string::npos);
  std::string cut = text;
  cut.erase(at, line.size());
  const auto diff = key_differences(scan_example(cut));
  ASSERT_EQ(diff.size(), 1u) << joined(diff);
  EXPECT_NE(diff[0].find("work.lease_renew_ms"), std::string::npos) << diff[0];
  // And a key without its comment is reported.
  std::string bare = text;
  bare.insert(bare.find("[log]"), "\n[extra]\nuncommented = 1\n");
  EXPECT_FALSE(scan_example(bare).problems.empty());
}

} // namespace
} // namespace shoal::workers
