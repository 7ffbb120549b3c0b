// The record formats (persistor-v1, ndjson), date partitions and blob names (workers/etl/BLOBS.md).
#include "workers/persistor/format_internal.hpp"

#include "storage/encoding.hpp"
#include "workers/json_limits.hpp"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstdint>

namespace shoal::workers::persistor {

using detail::append_base64_string;
using detail::append_checked_json_string;
using detail::append_json_string;
using detail::append_time_string;

result<record_format> parse_format(std::string_view s) {
  if (s == "persistor-v1")
    return record_format::persistor_v1;
  if (s == "ndjson")
    return record_format::ndjson;
  return fail(errc::invalid_argument,
              "unknown format '" + std::string(s) + "' (persistor-v1 or ndjson)");
}

std::string_view to_string(record_format f) noexcept {
  return f == record_format::ndjson ? "ndjson" : "persistor-v1";
}

result<partition_depth> parse_partition_depth(std::string_view s) {
  if (s == "day")
    return partition_depth::day;
  if (s == "hour")
    return partition_depth::hour;
  if (s == "month")
    return partition_depth::month;
  return fail(errc::invalid_argument, "unknown partition '" + std::string(s) + "' (day, hour or month)");
}

std::string_view to_string(partition_depth d) noexcept {
  return d == partition_depth::hour ? "hour" : d == partition_depth::month ? "month" : "day";
}

std::string partition_of(unix_ms t, partition_depth depth) {
  const std::string s = format_time(t); // YYYY-MM-DDTHH:... (or a year of other width)
  std::string out;
  out.reserve(13);
  out.append(s, 0, 4).append(1, '/').append(s, 5, 2);
  if (depth != partition_depth::month)
    out.append(1, '/').append(s, 8, 2);
  if (depth == partition_depth::hour)
    out.append(1, '/').append(s, 11, 2);
  return out;
}

std::int64_t partition_period(unix_ms t, partition_depth depth) noexcept {
  constexpr std::int64_t hour_ms = 3'600'000, day_ms = 86'400'000;
  const auto floor_div = [](std::int64_t a, std::int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); };
  if (depth == partition_depth::hour)
    return floor_div(t, hour_ms);
  const std::int64_t days = floor_div(t, day_ms);
  if (depth == partition_depth::day)
    return days;
  // Days to the civil year and month (H. Hinnant's algorithm, as time_text): year * 12 + month.
  const std::int64_t z = days + 719'468;
  const std::int64_t era = (z >= 0 ? z : z - 146'096) / 146'097;
  const auto doe = static_cast<unsigned>(z - era * 146'097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36'524 - doe / 146'096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  const unsigned m = mp < 10 ? mp + 3 : mp - 9;
  const std::int64_t y = static_cast<std::int64_t>(yoe) + era * 400 + (m <= 2 ? 1 : 0);
  return y * 12 + static_cast<std::int64_t>(m) - 1;
}

std::string partition_date(std::string_view p) {
  if (p.size() < 7 || p[4] != '/')
    return {};
  std::string d;
  d.reserve(10);
  d.append(p.substr(0, 4)).append(1, '-').append(p.substr(5, 2)).append(1, '-');
  if (p.size() >= 10 && p[7] == '/')
    d.append(p.substr(8, 2));
  else
    d.append("01"); // a month partition: its first day
  return d;
}

std::string_view partition_of_blob(std::string_view name) noexcept {
  const auto first = name.find('/');
  const auto last = name.rfind('/');
  if (first == std::string_view::npos || last == first)
    return {};
  return name.substr(first + 1, last - first - 1);
}

result<void> validate_dest(std::string_view dest) {
  if (dest.empty() || dest.size() > 128 || dest == "." || dest == "..")
    return fail(errc::invalid_argument, "dest '" + std::string(dest.substr(0, 128)) +
                                            "' must be 1 to 128 characters, not '.' or '..'");
  for (char ch : dest)
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '-' && ch != '_' && ch != '.')
      return fail(errc::invalid_argument,
                  "dest '" + std::string(dest) + "' may hold only letters, digits, '-', '_' and '.'");
  return {};
}

std::string blob_name(std::string_view dest, std::string_view partition, std::string_view host,
                      std::string_view persistor, std::uint64_t seq) {
  char num[24];
  std::snprintf(num, sizeof num, "%08llu", static_cast<unsigned long long>(seq));
  std::string out;
  out.reserve(dest.size() + partition.size() + host.size() + persistor.size() + 24);
  out.append(dest).append(1, '/').append(partition).append(1, '/').append(host).append(1, '-');
  out.append(persistor).append(1, '-').append(num).append(".json");
  return out;
}

namespace {

// Appends `s` as a JSON string when it is valid UTF-8, else `fallback` (checked in the same pass).
void append_checked_or(std::string& out, std::string_view s, std::string_view fallback) {
  if (!append_checked_json_string(out, s))
    append_json_string(out, fallback);
}

// Appends `s` as a JSON string when it is valid UTF-8, else base64(s) as one.
void append_checked_or_base64(std::string& out, std::string_view s) {
  if (!append_checked_json_string(out, s))
    append_base64_string(out, s);
}

void append_meta(std::string& out, const record& r, bool utf8) {
  out += "{\"message_id\":";
  append_checked_or(out, r.message_id, "?");
  out += ",\"producer\":";
  append_checked_or(out, r.producer, "?");
  if (!r.producer_key.empty()) { // the admitted CURVE key: who sent it, for audits
    out += ",\"producer_key\":";
    append_checked_or(out, r.producer_key, "?");
  }
  out += ",\"dest\":";
  append_json_string(out, r.dest);
  out += ",\"event_time\":";
  append_time_string(out, r.event_time);
  out += ",\"ingest_time\":";
  append_time_string(out, r.ingest_time);
  out += ",\"properties\":{";
  bool first = true;
  for (const auto& [k, v] : r.properties) {
    if (!first)
      out += ',';
    first = false;
    append_checked_or_base64(out, k);
    out += ':';
    append_checked_or_base64(out, v);
  }
  if (!utf8) {
    if (!first)
      out += ',';
    out += "\"encoding\":\"base64\"";
  }
  out += "}}";
}

// Appends the ndjson "data" value of a payload: the payload itself when it is one JSON value on
// one line (checked with its UTF-8 in one pass, then copied with one append), re-serialized
// when it is JSON spread over lines, a JSON string when it is UTF-8 but not JSON. False (nothing
// appended) when it is not UTF-8.
bool append_ndjson_data(std::string& out, const std::string& payload) {
  const detail::json_verdict v = detail::check_json(payload);
  const int verdict = v.result;
  bool json = verdict == 1;
  bool multiline = v.newline;
  if (verdict < 0) { // deeper than the checker's stack: nlohmann's accept decides (iterative)
    json = storage::valid_utf8(payload) && nlohmann::json::accept(payload);
    multiline = payload.find_first_of("\r\n") != std::string::npos;
  }
  if (!json)
    return append_checked_json_string(out, payload);
  if (!multiline) {
    out += payload;
  } else if (verdict < 0) {
    // Too deep for nlohmann's recursive dump (check_payload refuses such a record before it
    // gets here). In valid JSON a CR or LF can only be white space (inside strings they are
    // escaped), so dropping them leaves the same value on one line.
    for (const char ch : payload)
      if (ch != '\n' && ch != '\r')
        out += ch;
  } else {
    out += nlohmann::json::parse(payload).dump();
  }
  return true;
}

} // namespace

result<void> check_payload(const record& r, record_format format) {
  // persistor-v1 carries any payload as a JSON string and walks nothing; ndjson embeds it as
  // JSON, which the ETL walks recursively: refuse what it could not walk (json_limits.hpp).
  if (format != record_format::ndjson)
    return {};
  if (auto ok = check_json_depth(r.payload, "payload"); !ok)
    return fail(errc::invalid_argument,
                ok.error().message + "; an ndjson blob embeds it as JSON, which the ETL could not load");
  return {};
}

std::size_t append_record(std::string& out, record_format format, const record& r) {
  const std::size_t before = out.size();
  bool utf8 = true;
  if (format == record_format::persistor_v1) {
    out += "{\"DATA\":";
    if (!append_checked_json_string(out, r.payload)) {
      utf8 = false;
      append_base64_string(out, r.payload);
    }
    out += ",\"METADATA\":";
    append_meta(out, r, utf8);
    out += "}\n\n";
  } else {
    out += "{\"data\":";
    if (!append_ndjson_data(out, r.payload)) {
      utf8 = false;
      append_base64_string(out, r.payload);
    }
    out += ",\"meta\":";
    append_meta(out, r, utf8);
    out += "}\n";
  }
  return out.size() - before;
}

std::map<std::string, std::string> blob_metadata(const batch_summary& s, record_format format) {
  return {{"count", std::to_string(s.record_count)},
          {"first_event_time", format_time(s.first_event_time)},
          {"last_event_time", format_time(s.last_event_time)},
          {"format", std::string(to_string(format))}};
}

} // namespace shoal::workers::persistor