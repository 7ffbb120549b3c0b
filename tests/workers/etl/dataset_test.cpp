// Unit tests of datasets: the TOML format, valijson validation, mapping and type conversion,
// the generic mode.

#include "tests/workers/etl/etl_test_data.hpp"
#include "workers/etl/dataset.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace shoal::workers::etl {
namespace {

TEST(DatasetTest, LoadsTheShippedFlightsDatasetAndMapsARecord) {
  auto d = load_dataset(tests::source_dir() + "/deploy/datasets/flights.toml");
  ASSERT_TRUE(d) << d.error().message;
  EXPECT_EQ(d->name, "flights");
  EXPECT_EQ(d->dest, "flights");
  ASSERT_EQ(d->fields.size(), 8u);
  ASSERT_TRUE(d->schema);

  std::string body = write_blob(blob_format::persistor_v1,
      {{"m1", "2026-11-21T12:00:00+01:00", R"({"date":"2001/01/01 00:47","delay":66,"distance":1750,"origin":"DTW","destination":"LAS"})"}});
  auto ex = extract_records(body);
  ASSERT_TRUE(ex);
  std::vector<quarantine_row> q;
  auto valid = validate_records(*d, *ex, q);
  ASSERT_EQ(valid.size(), 1u);
  auto rows = transform_records(*d, "flights/2026/11/21/12/h-p-00000001.json", valid, q);
  ASSERT_TRUE(q.empty()) << q[0].reason;
  ASSERT_EQ(rows.size(), 1u);
  const auto& v = rows[0].values;
  EXPECT_EQ(std::get<std::string>(v[0]), "m1");
  EXPECT_EQ(std::get<std::string>(v[1]), "2001-01-01T00:47:00Z");
  EXPECT_EQ(std::get<std::int64_t>(v[2]), 66);
  EXPECT_EQ(std::get<std::int64_t>(v[3]), 1750);
  EXPECT_EQ(std::get<std::string>(v[6]), "DTW-LAS");
  EXPECT_EQ(std::get<std::string>(v[7]), "2026-11-21T11:00:00Z"); // offset applied
}

TEST(DatasetTest, QuarantinesSchemaAndMappingFailuresWithReasons) {
  auto d = tests::etl::flights_dataset();
  ASSERT_TRUE(d.schema);
  std::string body = tests::etl::flights_blob(blob_format::persistor_v1, 600, 6);
  auto ex = extract_records(body);
  ASSERT_TRUE(ex) << ex.error().message;
  std::vector<quarantine_row> q;
  auto valid = validate_records(d, *ex, q);
  auto rows = transform_records(d, "flights/x.json", valid, q);
  EXPECT_EQ(rows.size(), 594u);
  ASSERT_EQ(q.size(), 6u);
  std::map<std::string, int> by_step;
  for (const auto& r : q) {
    ++by_step[r.step];
    EXPECT_FALSE(r.reason.empty());
    EXPECT_FALSE(r.raw.empty());
    EXPECT_FALSE(r.message_id.empty());
  }
  EXPECT_EQ(by_step["validate"], 5);
  EXPECT_EQ(by_step["transform"], 1);
  // The reasons name what failed.
  std::string all;
  for (const auto& r : q) all += r.reason + "\n";
  EXPECT_NE(all.find("delay"), std::string::npos) << all;
  EXPECT_NE(all.find("not valid JSON"), std::string::npos) << all;
  EXPECT_NE(all.find("flight_time"), std::string::npos) << all;
}

TEST(DatasetTest, GenericModeTakesAnyPayload) {
  const dataset& g = generic_dataset();
  EXPECT_TRUE(g.generic);
  std::string body = write_blob(blob_format::persistor_v1, {{"a", "t1", "not json at all"}, {"b", "t2", "{\"k\":1}"}});
  auto ex = extract_records(body);
  ASSERT_TRUE(ex);
  std::vector<quarantine_row> q;
  auto rows = transform_records(g, "logs/2026/x.json", validate_records(g, *ex, q), q);
  EXPECT_TRUE(q.empty());
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(std::get<std::string>(rows[0].values[1]), "logs");
  EXPECT_EQ(std::get<std::string>(rows[0].values[3]), "not json at all");
  EXPECT_EQ(&dataset_for({}, "flights/x"), &g);
}

TEST(DatasetTest, RejectsBadConfiguration) {
  auto dir = std::filesystem::temp_directory_path() / ("shoal-etl-ds-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto write = [&](const std::string& text) {
    std::ofstream(dir / "d.toml") << text;
    return load_dataset(dir / "d.toml");
  };
  auto unknown = write("name = \"x\"\ninsert = \"INSERT INTO t VALUES (?)\"\nbogus = 1\n[[fields]]\ncolumn=\"a\"\nsource=\"/a\"\n");
  ASSERT_FALSE(unknown);
  EXPECT_NE(unknown.error().message.find("bogus"), std::string::npos);
  auto count = write("name = \"x\"\ninsert = \"INSERT INTO t VALUES (?, ?)\"\n[[fields]]\ncolumn=\"a\"\nsource=\"/a\"\n");
  ASSERT_FALSE(count);
  EXPECT_EQ(count.error().code, errc::invalid_argument);
  auto type = write("name = \"x\"\ninsert = \"INSERT INTO t VALUES (?)\"\n[[fields]]\ncolumn=\"a\"\nsource=\"/a\"\ntype=\"float\"\n");
  ASSERT_FALSE(type);
  EXPECT_NE(type.error().message.find("float"), std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST(DatasetTest, ParsesTimestamps) {
  EXPECT_EQ(parse_timestamp("2001/01/01 00:47", "%Y/%m/%d %H:%M").value_or(""), "2001-01-01T00:47:00Z");
  EXPECT_EQ(parse_timestamp("2026-11-21T12:00:00.123Z", "").value_or(""), "2026-11-21T12:00:00Z");
  EXPECT_EQ(parse_timestamp("2026-11-21 12:00:00-02:30", "").value_or(""), "2026-11-21T14:30:00Z");
  EXPECT_FALSE(parse_timestamp("2026-11-21", ""));
  EXPECT_FALSE(parse_timestamp("2001/13/45 99:99", "%Y/%m/%d %H:%M"));
}

} // namespace
} // namespace shoal::workers::etl
