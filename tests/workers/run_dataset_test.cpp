// `shoal run` counts its input as `shoal send` reads it (workers::input_reader): the verification
// compares that count with the rows loaded, so a count that differs from send's fails every run
// of that file.

#include "workers/cmd/run_dataset.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace shoal::cmd::run_detail {
namespace {

namespace fs = std::filesystem;

class RunDataset : public ::testing::Test {
protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("shoal-run-dataset-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path write(const std::string& name, const std::string& text) {
    const fs::path p = dir_ / name;
    std::ofstream(p, std::ios::binary) << text;
    return p;
  }
  fs::path dir_;
};

TEST_F(RunDataset, CountsJsonArrayElements) {
  EXPECT_EQ(count_records(write("a.json", " [ {\"a\":1}, {\"a\":[2,3]}, \"x\" ]\n")), 3u);
}

TEST_F(RunDataset, CountsNonBlankNdjsonLines) {
  EXPECT_EQ(count_records(write("a.ndjson", "{\"a\":1}\r\n\n  \n{\"a\":2}\n{\"a\":3}")), 3u);
}

// A quoted CSV field may span lines (RFC 4180): one record, not two.
TEST_F(RunDataset, CountsCsvRecordsNotLines) {
  EXPECT_EQ(count_records(write("a.csv", "id,note\n1,\"two\nlines\"\n2,plain\n\n3,\"a \"\"q\"\"\"\n")), 3u);
}

TEST_F(RunDataset, NotAJsonArrayOrNoFileIsNullopt) {
  EXPECT_FALSE(count_records(write("bad.json", "[{\"a\":1},")));
  EXPECT_FALSE(count_records(dir_ / "missing.json"));
}

TEST_F(RunDataset, AFileOfTheUsersGetsItsDestFromItsStem) {
  const auto p = write("My Sensors!.csv", "a\n1\n");
  auto d = resolve_dataset(p.string(), "", "hour");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->dest, "mysensors");
  EXPECT_EQ(d->partition, "hour");
  EXPECT_EQ(d->table, "shoal_etl_records");
  EXPECT_FALSE(resolve_dataset((dir_ / "none.json").string(), "", ""));
}

} // namespace
} // namespace shoal::cmd::run_detail
