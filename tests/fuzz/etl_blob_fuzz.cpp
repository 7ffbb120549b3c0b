// libFuzzer target for the ETL's blob parser (issue 15; bench/run.sh fuzz etl_blob): a blob body
// from storage through extract (both formats, workers/etl/BLOBS.md), validate (a JSON Schema:
// the compiled checker and valijson) and transform (JSON pointers, templates, type conversions)
// of a dataset, and the generic mapping.
//
// Invariants, any violation aborts:
//  - nothing crashes, reads out of bounds or hits UB (ASan, UBSan), whatever the nesting;
//  - a parse error carries a message naming the position; otherwise every record borrows its
//    raw bytes from inside the body, in order;
//  - every extracted record ends up either valid or quarantined exactly once per step, and the
//    transform's rows plus its quarantine account for every valid record.

#include "workers/blob_format.hpp"
#include "workers/etl/dataset.hpp"

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

using namespace shoal::workers;
using namespace shoal::workers::etl;

namespace {

// A dataset as an operator writes one: a schema the direct checker compiles, pointers into
// nested values, a template, every type conversion.
const dataset* fuzz_dataset() {
  static const dataset* d = [] {
    const auto dir = std::filesystem::temp_directory_path() / ("shoal-etl-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    std::ofstream(dir / "fuzz.schema.json") << R"({"type":"object","required":["id"],
      "properties":{"id":{"type":"string","maxLength":64},"n":{"type":"number","minimum":-1e9},
      "when":{"type":"string","format":"date-time"},"tags":{"type":"array"},
      "kind":{"enum":["a","b"]},"deep":{"type":"object"}}})";
    std::ofstream(dir / "fuzz.toml") << R"toml(name = "fuzz"
dest = "fuzz"
schema_file = "fuzz.schema.json"
ddl = "CREATE TABLE IF NOT EXISTS fuzz (message_id TEXT, id TEXT, n REAL, i INTEGER, ok INTEGER, at TEXT, j TEXT, t TEXT)"
insert = "INSERT INTO fuzz VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
[[fields]]
column = "message_id"
source = "$message_id"
[[fields]]
column = "id"
source = "/id"
[[fields]]
column = "n"
source = "/n"
type = "real"
required = false
[[fields]]
column = "i"
source = "/deep/a/0"
type = "integer"
required = false
[[fields]]
column = "ok"
source = "/tags/1"
type = "boolean"
default = "false"
[[fields]]
column = "at"
source = "/when"
type = "timestamp"
required = false
[[fields]]
column = "j"
source = "/deep"
type = "json"
required = false
[[fields]]
column = "t"
template = "{/id}-{/kind}"
required = false
)toml";
    auto loaded = load_dataset(dir / "fuzz.toml");
    std::filesystem::remove_all(dir);
    if (!loaded)
      std::abort();
    return new dataset(std::move(*loaded));
  }();
  return d;
}

void check_steps(const dataset& d, const extracted_blob& blob) {
  std::vector<quarantine_row> q;
  auto valid = validate_records(d, blob, q);
  if (valid.size() + q.size() != blob.records.size())
    std::abort();
  std::vector<quarantine_row> tq;
  auto rows = transform_records(d, "fuzz/2001/01/05/h-p-00000001.json", valid, tq);
  if (rows.size() + tq.size() != valid.size())
    std::abort();
  for (const auto& row : rows)
    if (row.values.size() != d.fields.size())
      std::abort();
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  auto blob = extract_records(body);
  if (!blob) {
    if (blob.error().message.find("line ") == std::string::npos)
      std::abort();
    return 0;
  }
  const char* last = body.data();
  for (const auto& r : blob->records) {
    if (r.raw.data() < last || r.raw.data() + r.raw.size() > body.data() + body.size())
      std::abort();
    last = r.raw.data() + r.raw.size();
  }
  check_steps(generic_dataset(), *blob);
  check_steps(*fuzz_dataset(), *blob);
  return 0;
}
