#pragma once
// Test data of the ETL suites: flights blobs with a known set of invalid records.

#include "tests/support/azurite.hpp"
#include "workers/blob_format.hpp"
#include "workers/etl/dataset.hpp"

#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace shoal::tests::etl {

/// The first `n` flights of vega-datasets flights-20k.json (or 200k when n > 20,000), as payload
/// JSON texts.
inline std::vector<std::string> flights(std::size_t n) {
  const std::string file = source_dir() + "/deploy/local/node_modules/vega-datasets/data/" +
                           (n > 20'000 ? "flights-200k.json" : "flights-20k.json");
  std::ifstream in(file);
  std::stringstream ss;
  ss << in.rdbuf();
  auto all = nlohmann::json::parse(ss.str(), nullptr, false);
  std::vector<std::string> out;
  if (!all.is_array()) return out;
  for (std::size_t i = 0; i < n && i < all.size(); ++i) out.push_back(all[i].dump());
  return out;
}

/// How the i-th invalid record (0-based) of a test blob is broken; cycles through schema,
/// JSON, mapping and metadata problems so every quarantine path is exercised.
inline std::string break_payload(std::size_t k, const std::string& good) {
  auto j = nlohmann::json::parse(good);
  switch (k % 6) {
  case 0: j["delay"] = "late"; return j.dump();                 // schema: wrong type
  case 1: j.erase("origin"); return j.dump();                    // schema: required
  case 2: j["date"] = "2001-01-01T00:47"; return j.dump();       // schema: pattern
  case 3: return good.substr(0, good.size() / 2);                // payload is not JSON
  case 4: j["date"] = "2001/13/45 99:99"; return j.dump();       // transform: bad date
  default: j["distance"] = -5; return j.dump();                  // schema: minimum
  }
}

/// A blob of `n` flights where `invalid` records (spread evenly) are broken; message ids are
/// "<prefix>-<i>". Returns the body.
inline std::string flights_blob(workers::blob_format f, std::size_t n, std::size_t invalid,
                                const std::string& prefix = "m") {
  auto payloads = flights(n);
  std::vector<workers::record_to_write> recs;
  recs.reserve(payloads.size());
  const std::size_t stride = invalid ? payloads.size() / invalid : 0;
  std::size_t broken = 0;
  for (std::size_t i = 0; i < payloads.size(); ++i) {
    std::string p = payloads[i];
    if (invalid && i % stride == stride / 2 && broken < invalid) {
      // ndjson embeds the payload as JSON: a non-JSON payload there becomes a schema problem.
      p = break_payload(broken, p);
      if (f == workers::blob_format::ndjson && broken % 6 == 3) p = "\"not an object\"";
      ++broken;
    }
    recs.push_back({prefix + "-" + std::to_string(i), "2026-11-21T12:00:00Z", p});
  }
  return workers::write_blob(f, recs);
}

/// deploy/datasets/flights.toml.
inline workers::etl::dataset flights_dataset() {
  auto d = workers::etl::load_dataset(source_dir() + "/deploy/datasets/flights.toml");
  return d ? *d : workers::etl::dataset{};
}

} // namespace shoal::tests::etl
