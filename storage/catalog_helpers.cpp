// Small helpers the catalog's pieces share: errors, names, writer ids, random op ids, string
// joining, $batch sizing.

#include "storage/catalog_internal.hpp"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <random>

namespace shoal::storage::catalog_detail {

error make_error(errc code, std::string msg, std::string service_code) {
  error e;
  e.code = code;
  e.service_code = std::move(service_code);
  e.message = std::move(msg);
  e.attempts = 0;
  return e;
}

error fault_error(write_stage stage, std::size_t done) {
  static constexpr const char* names[] = {"after_wal_append", "after_index_entity", "after_fan_out",
                                          "after_mark_applied"};
  return make_error(errc::server,
                    std::string("catalog write stopped by the fault hook at ") +
                        names[static_cast<int>(stage)] + " (" + std::to_string(done) +
                        " index entities written)",
                    std::string(catalog_fault_injected));
}

bool valid_catalog_name(std::string_view n) {
  if (n.size() < 3 || n.size() > 60)
    return false;
  if (!std::isalpha(static_cast<unsigned char>(n[0])))
    return false;
  return std::all_of(n.begin(), n.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)); });
}

std::string default_writer_id() {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0)
    std::snprintf(host, sizeof host, "unknown");
  return std::string(host) + "-" + std::to_string(::getpid());
}

std::string random_hex128() {
  thread_local std::mt19937_64 rng{[] {
    std::random_device rd;
    return (static_cast<std::uint64_t>(rd()) << 32) ^ rd() ^
           static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  }()};
  char buf[40];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(rng()),
                static_cast<unsigned long long>(rng()));
  return buf;
}

std::string join(const std::vector<std::string>& v, std::string_view sep) {
  std::string out;
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (i)
      out += sep;
    out += v[i];
  }
  return out;
}

std::vector<std::string> split(std::string_view s, char sep) {
  std::vector<std::string> out;
  if (s.empty())
    return out;
  std::size_t start = 0;
  for (;;) {
    auto pos = s.find(sep, start);
    out.emplace_back(s.substr(start, pos == std::string_view::npos ? std::string_view::npos : pos - start));
    if (pos == std::string_view::npos)
      break;
    start = pos + 1;
  }
  return out;
}

// Consecutive ranges [b, e) of `es` for $batch requests: at most `max_ops` operations each, and
// an estimated body within the 4 MiB limit. The estimate per operation is its JSON, its keys
// percent-encoded (at most 3 bytes per byte) and 1 KiB for the part headers and URL; 64 KiB are
// kept for the framing and an extra operation (the WAL counter). O(total JSON size).
std::vector<std::pair<std::size_t, std::size_t>> batch_ranges(const std::vector<table_entity>& es,
                                                              std::size_t max_ops) {
  constexpr std::size_t budget = table_limits::max_batch_bytes - 64 * 1024;
  std::vector<std::pair<std::size_t, std::size_t>> out;
  std::size_t b = 0;
  std::size_t bytes = 0;
  for (std::size_t i = 0; i < es.size(); ++i) {
    const std::size_t op =
        entity_to_json(es[i]).size() + 3 * (es[i].partition_key.size() + es[i].row_key.size()) + 1024;
    if (i > b && (i - b >= max_ops || bytes + op > budget)) {
      out.emplace_back(b, i);
      b = i;
      bytes = 0;
    }
    bytes += op;
  }
  if (b < es.size())
    out.emplace_back(b, es.size());
  return out;
}

} // namespace shoal::storage::catalog_detail
