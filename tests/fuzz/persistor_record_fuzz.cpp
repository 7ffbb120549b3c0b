// libFuzzer target for the persistor's record path (issue 15; bench/run.sh fuzz persistor_record):
// what a producer's payload goes through between the socket and the blob — the JSON check
// (json_accept, check_payload's depth bound), the formatting of both record formats
// (append_record) and the event-time extraction (event_time_of).
//
// Input: byte 0 chooses the format (bit 0: ndjson) and the event-time field (bits 1–2: none,
// "ts", "a.b", "t"); the rest is the payload. Invariants, any violation aborts:
//  - nothing crashes, reads out of bounds or hits UB (ASan, UBSan), whatever the nesting;
//  - json_accept agrees with nlohmann::json::accept (which is iterative) on every payload that
//    neither starts with a byte-order mark (json_accept refuses one on purpose) nor holds a NUL
//    byte (nlohmann stops reading at one);
//  - a record check_payload accepts is appended as exactly one strict JSON record in its
//    format's framing, and its payload comes back: persistor-v1's DATA is the payload (or its
//    base64 when it is not UTF-8); ndjson's data is the payload's JSON value when the payload is
//    JSON, else the payload as a string (or base64);
//  - ndjson refuses exactly the payloads that nest deeper than workers::max_json_depth.

#include "storage/encoding.hpp"
#include "storage/table_detail.hpp"
#include "workers/json_limits.hpp"
#include "workers/persistor/format.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstdlib>
#include <string>

using namespace shoal::workers;
using namespace shoal::workers::persistor;

namespace {

// The reference for "is this DATA text": storage's RFC 3629 check (overlongs, surrogates and
// anything above U+10FFFF refused), a separate implementation from the persistor's own in
// format.cpp, so the two are compared rather than one trusted (and no exception per non-UTF-8
// payload, as the earlier check through nlohmann's dump threw).
bool valid_utf8_text(const std::string& s) { return shoal::storage::valid_utf8(s); }

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0)
    return 0;
  const std::uint8_t flags = data[0];
  const record_format fmt = (flags & 1) ? record_format::ndjson : record_format::persistor_v1;
  static const char* const fields[] = {"", "ts", "a.b", "t"};
  const std::string field = fields[(flags >> 1) & 3];
  record r;
  r.message_id = "00112233445566778899aabbccddeeff";
  r.producer = "fuzz@1@host";
  r.producer_key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";
  r.dest = "fuzz";
  r.payload.assign(reinterpret_cast<const char*>(data + 1), size - 1);
  r.ingest_time = 978'690'600'000;
  r.event_time = r.ingest_time;

  // The JSON check against the reference.
  bool multiline = false;
  const bool accepted = json_accept(r.payload, multiline);
  // nlohmann's lexer reads a NUL byte as the end of input ("1\0junk" is accepted as 1); JSON
  // allows NUL nowhere outside strings, so json_accept is right to refuse: compare the rest.
  if (!r.payload.starts_with("\xef\xbb\xbf") && r.payload.find('\0') == std::string::npos &&
      accepted != nlohmann::json::accept(r.payload))
    std::abort();

  // Event time: any answer but a crash.
  if (!field.empty())
    (void)event_time_of(r.payload, field);

  // The depth bound and the formatting.
  const bool too_deep = json_depth(r.payload) > max_json_depth;
  auto ok = check_payload(r, fmt);
  if (fmt == record_format::ndjson && ok.has_value() == too_deep)
    std::abort();
  if (fmt == record_format::persistor_v1 && !ok)
    std::abort();
  if (!ok)
    return 0;
  std::string out = "x"; // appended after what is there
  const std::size_t n = append_record(out, fmt, r);
  if (n != out.size() - 1)
    std::abort();
  const std::string rec = out.substr(1);
  const std::string framing = fmt == record_format::ndjson ? "\n" : "\n\n";
  if (!rec.ends_with(framing) || rec.find('\n') != rec.size() - framing.size())
    std::abort(); // one line, then the separator
  auto j = nlohmann::json::parse(rec, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    std::abort();
  const bool utf8 = valid_utf8_text(r.payload);
  const auto& meta = fmt == record_format::ndjson ? j["meta"] : j["METADATA"];
  if (meta.value("message_id", "") != r.message_id || meta.value("producer_key", "") != r.producer_key)
    std::abort();
  const auto& got = fmt == record_format::ndjson ? j["data"] : j["DATA"];
  if (!utf8) {
    if (got != shoal::storage::base64_encode(r.payload) || meta["properties"].value("encoding", "") != "base64")
      std::abort();
  } else if (fmt == record_format::persistor_v1 || !accepted) {
    if (got != r.payload)
      std::abort();
  } else if (got != nlohmann::json::parse(r.payload)) { // ≤ max_json_depth: bounded recursion
    std::abort();
  }
  return 0;
}
