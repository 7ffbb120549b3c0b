// The datasets `shoal run` ships (deploy/datasets/*.toml) against the real vega-datasets files:
// each file loads, a sample of the real rows passes its schema and mapping without a single
// quarantine, and the rows land in SQLite through the dataset's own DDL and insert.

#include "tests/support/azurite.hpp"
#include "workers/blob_format.hpp"
#include "workers/etl/dataset.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace shoal::workers::etl {
namespace {

namespace fs = std::filesystem;

fs::path datasets_dir() { return fs::path(tests::source_dir()) / "deploy/datasets"; }
fs::path data_file(const std::string& name) {
  return fs::path(tests::source_dir()) / "deploy/local/node_modules/vega-datasets/data" / name;
}

// What a dataset made of `payloads` loads: validated, transformed and loaded into an in-memory
// SQLite database with the dataset's DDL and insert.
struct loaded {
  std::size_t valid = 0;
  std::vector<load_row> rows;
  std::vector<quarantine_row> quarantine;
  load_outcome outcome;
  std::int64_t table_rows = -1;
};

loaded load_sample(const dataset& d, const std::vector<std::string>& payloads,
                   const std::string& table, const std::string& event_time = "2026-11-21T15:00:00Z") {
  std::vector<record_to_write> recs;
  for (std::size_t i = 0; i < payloads.size(); ++i)
    recs.push_back({"m" + std::to_string(i), event_time, payloads[i]});
  const std::string body = write_blob(blob_format::persistor_v1, recs);
  loaded out;
  auto ex = extract_records(body);
  EXPECT_TRUE(ex) << ex.error().message;
  if (!ex)
    return out;
  auto valid = validate_records(d, *ex, out.quarantine);
  out.valid = valid.size();
  const std::string blob = d.dest + "/2026/11/21/15/h-p-00000001.json";
  out.rows = transform_records(d, blob, valid, out.quarantine);
  auto sink = open_sqlite_sink({.path = ":memory:"});
  EXPECT_TRUE(sink) << sink.error().message;
  if (!sink)
    return out;
  auto prepared = (*sink)->prepare(d.ddl);
  EXPECT_TRUE(prepared) << prepared.error().message;
  load_batch b{.blob = blob, .dataset = d.name, .insert_sql = d.insert_sql, .rows = out.rows,
               .quarantined = out.quarantine, .owner = "test",
               .keyed_by_table = d.message_key == "table", .may_commit = {}};
  auto r = (*sink)->load(b);
  EXPECT_TRUE(r) << r.error().message;
  if (r)
    out.outcome = *r;
  auto n = (*sink)->scalar("SELECT count(*) FROM " + table);
  EXPECT_TRUE(n) << n.error().message;
  out.table_rows = n.value_or(-1);
  return out;
}

TEST(RunDatasetsTest, TheShippedFolderLoadsAndEachNamedDestFindsItsDataset) {
  auto all = load_datasets(datasets_dir());
  ASSERT_TRUE(all) << all.error().message;
  EXPECT_EQ(dataset_for(*all, "flights/2001/01/01/00/h-p-1.json").name, "flights");
  EXPECT_EQ(dataset_for(*all, "flights-200k/2026/11/21/15/h-p-1.json").name, "flights-200k");
  EXPECT_EQ(dataset_for(*all, "seattle-weather/2012/01/01/00/h-p-1.json").name, "seattle-weather");
  EXPECT_TRUE(dataset_for(*all, "sensors/2026/11/21/15/h-p-1.json").generic);
  for (const auto& d : *all) {
    EXPECT_TRUE(d.schema) << d.name << " has no schema";
    EXPECT_EQ(d.message_key, "table") << d.name;
  }
}

TEST(RunDatasetsTest, Flights200kSampleOfTheRealFileLoadsWithoutQuarantine) {
  auto d = load_dataset(datasets_dir() / "flights-200k.toml");
  ASSERT_TRUE(d) << d.error().message;
  std::ifstream in(data_file("flights-200k.json"));
  ASSERT_TRUE(in) << "run deploy/setup.sh: " << data_file("flights-200k.json");
  auto all = nlohmann::json::parse(in);
  ASSERT_TRUE(all.is_array());
  ASSERT_EQ(all.size(), 200'000u);
  // Every 499th record plus the last: 401 rows spread over the whole file, as `shoal send`
  // sends them (each array element serialized).
  std::vector<std::string> payloads;
  for (std::size_t i = 0; i < all.size(); i += 499)
    payloads.push_back(all[i].dump());
  payloads.push_back(all.back().dump());
  auto r = load_sample(*d, payloads, "flights_200k");
  ASSERT_TRUE(r.quarantine.empty()) << r.quarantine[0].reason << " in " << r.quarantine[0].raw;
  EXPECT_EQ(r.rows.size(), payloads.size());
  EXPECT_EQ(r.outcome.inserted, payloads.size());
  EXPECT_EQ(r.table_rows, static_cast<std::int64_t>(payloads.size()));
  // The first record is {"delay":0,"distance":1452,"time":0.0}; the event time is the ingest
  // time the persistor stamped (no date in the data).
  const auto& v = r.rows[0].values;
  ASSERT_EQ(v.size(), 5u);
  EXPECT_EQ(std::get<std::int64_t>(v[1]), 0);
  EXPECT_EQ(std::get<std::int64_t>(v[2]), 1452);
  EXPECT_DOUBLE_EQ(std::get<double>(v[3]), 0.0);
  EXPECT_EQ(std::get<std::string>(v[4]), "2026-11-21T15:00:00Z");
}

TEST(RunDatasetsTest, Flights200kQuarantinesARecordOutsideTheSchema) {
  auto d = load_dataset(datasets_dir() / "flights-200k.toml");
  ASSERT_TRUE(d) << d.error().message;
  auto r = load_sample(*d,
                       {R"({"delay":1,"distance":10,"time":1.5})",
                        R"({"delay":1,"distance":10,"time":25})",   // hour of day > 24
                        R"({"delay":"late","distance":10,"time":1})", // not an integer
                        R"({"delay":1,"time":1})"},                   // no distance
                       "flights_200k");
  EXPECT_EQ(r.rows.size(), 1u);
  EXPECT_EQ(r.quarantine.size(), 3u);
  EXPECT_EQ(r.table_rows, 1);
}

// Splits a CSV line without quotes (seattle-weather.csv has none) into a JSON object of strings,
// as `shoal send` turns a CSV row into a payload.
std::string csv_row_payload(const std::vector<std::string>& header, const std::string& line) {
  nlohmann::json obj = nlohmann::json::object();
  std::stringstream ss(line);
  std::string cell;
  for (std::size_t i = 0; i < header.size() && std::getline(ss, cell, ','); ++i)
    obj[header[i]] = cell;
  return obj.dump();
}

TEST(RunDatasetsTest, SeattleWeatherEveryRowOfTheRealFileLoadsWithoutQuarantine) {
  auto d = load_dataset(datasets_dir() / "seattle-weather.toml");
  ASSERT_TRUE(d) << d.error().message;
  std::ifstream in(data_file("seattle-weather.csv"));
  ASSERT_TRUE(in) << "run deploy/setup.sh: " << data_file("seattle-weather.csv");
  std::string line;
  ASSERT_TRUE(std::getline(in, line));
  std::vector<std::string> header;
  {
    std::stringstream ss(line);
    std::string h;
    while (std::getline(ss, h, ','))
      header.push_back(h);
  }
  ASSERT_EQ(header, (std::vector<std::string>{"date", "precipitation", "temp_max", "temp_min",
                                              "wind", "weather"}));
  std::vector<std::string> payloads;
  while (std::getline(in, line))
    if (!line.empty())
      payloads.push_back(csv_row_payload(header, line));
  ASSERT_EQ(payloads.size(), 1461u);
  auto r = load_sample(*d, payloads, "seattle_weather", "2012-01-01T00:00:00Z");
  ASSERT_TRUE(r.quarantine.empty()) << r.quarantine[0].reason << " in " << r.quarantine[0].raw;
  EXPECT_EQ(r.outcome.inserted, 1461u);
  EXPECT_EQ(r.table_rows, 1461);
  // 2012-01-01,0.0,12.8,5.0,4.7,drizzle
  const auto& v = r.rows[0].values;
  ASSERT_EQ(v.size(), 8u);
  EXPECT_EQ(std::get<std::string>(v[1]), "2012-01-01T00:00:00Z");
  EXPECT_DOUBLE_EQ(std::get<double>(v[2]), 0.0);
  EXPECT_DOUBLE_EQ(std::get<double>(v[3]), 12.8);
  EXPECT_DOUBLE_EQ(std::get<double>(v[4]), 5.0);
  EXPECT_DOUBLE_EQ(std::get<double>(v[5]), 4.7);
  EXPECT_EQ(std::get<std::string>(v[6]), "drizzle");
}

TEST(RunDatasetsTest, SeattleWeatherQuarantinesUnknownWeatherAndNonNumericReadings) {
  auto d = load_dataset(datasets_dir() / "seattle-weather.toml");
  ASSERT_TRUE(d) << d.error().message;
  const std::vector<std::string> h{"date", "precipitation", "temp_max", "temp_min", "wind", "weather"};
  auto r = load_sample(*d,
                       {csv_row_payload(h, "2012-01-02,10.9,10.6,2.8,4.5,rain"),
                        csv_row_payload(h, "2012-01-03,0.8,11.7,7.2,2.3,hail"),
                        csv_row_payload(h, "2012-01-04,n/a,12.2,5.6,4.7,rain"),
                        csv_row_payload(h, "01/05/2012,0,1,1,1,sun")},
                       "seattle_weather");
  EXPECT_EQ(r.rows.size(), 1u);
  EXPECT_EQ(r.quarantine.size(), 3u);
}

} // namespace
} // namespace shoal::workers::etl
