// Unit tests of datasets: the TOML format, valijson validation, mapping and type conversion,
// the generic mode.

#include "tests/workers/etl/etl_test_data.hpp"
#include "workers/etl/dataset.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <ctime>
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

// The old parse_timestamp (strptime + timegm + gmtime_r + strftime): the fast path must agree.
std::optional<std::string> reference_timestamp(const std::string& s, const std::string& format) {
  std::tm tm{};
  long offset_s = 0;
  if (format.empty()) {
    const char* rest = strptime(s.c_str(), "%Y-%m-%d", &tm);
    if (!rest || (*rest != 'T' && *rest != 't' && *rest != ' ')) return std::nullopt;
    rest = strptime(rest + 1, "%H:%M:%S", &tm);
    if (!rest) return std::nullopt;
    if (*rest == '.')
      for (++rest; *rest >= '0' && *rest <= '9'; ++rest) {
      }
    if (*rest == 'Z' || *rest == 'z') {
      ++rest;
    } else if (*rest == '+' || *rest == '-') {
      int hh = 0, mm = 0;
      if (std::sscanf(rest + 1, "%2d:%2d", &hh, &mm) != 2) return std::nullopt;
      offset_s = (hh * 3600L + mm * 60L) * (*rest == '+' ? 1 : -1);
      rest += 6;
    } else if (*rest != '\0') {
      return std::nullopt;
    }
    if (*rest != '\0') return std::nullopt;
  } else {
    const char* rest = strptime(s.c_str(), format.c_str(), &tm);
    if (!rest || *rest != '\0') return std::nullopt;
  }
  std::time_t t = timegm(&tm) - offset_s;
  std::tm out{};
  gmtime_r(&t, &out);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &out);
  return std::string(buf);
}

TEST(DatasetTest, TimestampFastPathAgreesWithStrptime) {
  std::vector<std::string> dates;
  for (int y : {999, 1000, 1969, 1970, 2000, 2001, 2024, 2100, 9999})
    for (int m : {0, 1, 2, 3, 9, 12, 13})
      for (int d : {0, 1, 9, 28, 29, 30, 31, 32}) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%04d/%02d/%02d", y, m, d);
        dates.push_back(buf);
      }
  std::size_t n = 0;
  for (const auto& date : dates)
    for (const char* time : {"00:00", "00:47", "23:59", "24:00", "12:60", "7:05", "12:5"}) {
      const std::string text = date + " " + time;
      EXPECT_EQ(parse_timestamp(text, "%Y/%m/%d %H:%M"), reference_timestamp(text, "%Y/%m/%d %H:%M")) << text;
      std::string iso = text;
      for (auto& c : iso) c = c == '/' ? '-' : c;
      for (const char* tail : {":00Z", ":59.123z", ":60Z", ":07+02:30", ":07-11:00", ":07", ":07Zx"}) {
        const std::string r = iso.substr(0, 10) + "T" + iso.substr(11) + tail;
        EXPECT_EQ(parse_timestamp(r, ""), reference_timestamp(r, "")) << r;
        ++n;
      }
    }
  EXPECT_GT(n, 3000u);
  // A short offset is rejected (the strptime version read past the end of the text there).
  EXPECT_FALSE(parse_timestamp("2026-11-21T12:00:00+2:00", ""));
  EXPECT_FALSE(parse_timestamp("2026-11-21T12:00:00+02", ""));
  for (const char* odd : {"2001/01/01  00:47", " 2001/01/01 00:47", "20011/01/01 00:47", "2001/1/1 0:47", ""})
    EXPECT_EQ(parse_timestamp(odd, "%Y/%m/%d %H:%M"), reference_timestamp(odd, "%Y/%m/%d %H:%M")) << odd;
  EXPECT_EQ(parse_timestamp("21.11.2026", "%d.%m.%Y"), reference_timestamp("21.11.2026", "%d.%m.%Y"));
  EXPECT_EQ(parse_timestamp("2026-11", "%Y-%m"), reference_timestamp("2026-11", "%Y-%m"));
}

} // namespace
} // namespace shoal::workers::etl
