#include "storage/shared_key.hpp"

#include "storage/encoding.hpp"

#include <algorithm>
#include <vector>

namespace shoal::storage::shared_key {
namespace {

bool istarts_with(std::string_view s, std::string_view prefix) noexcept {
  return s.size() >= prefix.size() && ascii_iequals(s.substr(0, prefix.size()), prefix);
}

void append_path(std::string& out, std::string_view account, std::string_view path) {
  out += '/';
  out += account;
  if (path.empty())
    out += '/';
  else
    out += path;
}

// The 11 standard header lines after VERB (Date stays empty: we only send x-ms-date).
void append_standard_headers(std::string& out, const signing_input& in) {
  const auto line = [&](std::string_view name) {
    out += find_header(in.headers, name);
    out += '\n';
  };
  line("content-encoding");
  line("content-language");
  if (in.content_length > 0)
    out += std::to_string(in.content_length);
  out += '\n';
  line("content-md5");
  line("content-type");
  line("date");
  line("if-modified-since");
  line("if-match");
  line("if-none-match");
  line("if-unmodified-since");
  line("range");
}

// Table signatures put x-ms-date in the Date slot unless a real Date header is sent.
std::string_view table_date(const signing_input& in) noexcept {
  const std::string_view date = find_header(in.headers, "date");
  return date.empty() ? find_header(in.headers, "x-ms-date") : date;
}

} // namespace

std::string_view find_header(pairs headers, std::string_view name) noexcept {
  for (const auto& [k, v] : headers)
    if (ascii_iequals(k, name))
      return v;
  return {};
}

std::string canonicalized_headers(pairs headers) {
  // At most a handful of x-ms-* headers: a small vector sort beats any map.
  std::vector<std::pair<std::string, std::string_view>> ms;
  ms.reserve(8);
  for (const auto& [k, v] : headers)
    if (istarts_with(k, "x-ms-"))
      ms.emplace_back(ascii_lower(k), trim_space(v));
  std::sort(ms.begin(), ms.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  std::string out;
  for (const auto& [k, v] : ms) {
    out += k;
    out += ':';
    out += v;
    out += '\n';
  }
  return out;
}

std::string canonicalized_resource(std::string_view account, std::string_view path, pairs query) {
  std::string out;
  append_path(out, account, path);
  if (query.empty())
    return out;
  std::vector<std::pair<std::string, std::string_view>> q;
  q.reserve(query.size());
  for (const auto& [k, v] : query)
    q.emplace_back(ascii_lower(k), v);
  std::sort(q.begin(), q.end()); // by name, then value: repeated names get sorted values
  for (std::size_t i = 0; i < q.size(); ++i) {
    if (i > 0 && q[i].first == q[i - 1].first) {
      out += ',';
    } else {
      out += '\n';
      out += q[i].first;
      out += ':';
    }
    out += q[i].second;
  }
  return out;
}

std::string table_canonicalized_resource(std::string_view account, std::string_view path,
                                         pairs query) {
  std::string out;
  append_path(out, account, path);
  for (const auto& [k, v] : query)
    if (k == "comp") {
      out += "?comp=";
      out += v;
      break;
    }
  return out;
}

std::string blob_queue_string_to_sign(const signing_input& in) {
  std::string out;
  out.reserve(256 + in.path.size());
  out += to_string(in.method);
  out += '\n';
  append_standard_headers(out, in);
  out += canonicalized_headers(in.headers);
  out += canonicalized_resource(in.account, in.path, in.query);
  return out;
}

std::string table_string_to_sign(const signing_input& in) {
  std::string out;
  out.reserve(128 + in.path.size());
  out += to_string(in.method);
  out += '\n';
  out += find_header(in.headers, "content-md5");
  out += '\n';
  out += find_header(in.headers, "content-type");
  out += '\n';
  out += table_date(in);
  out += '\n';
  out += table_canonicalized_resource(in.account, in.path, in.query);
  return out;
}

std::string table_lite_string_to_sign(const signing_input& in) {
  std::string out(table_date(in));
  out += '\n';
  out += table_canonicalized_resource(in.account, in.path, in.query);
  return out;
}

std::string signature(std::string_view decoded_key, std::string_view string_to_sign) {
  return base64_encode(hmac_sha256(decoded_key, string_to_sign));
}

std::string authorization(std::string_view account, std::string_view sig, bool lite) {
  std::string out = lite ? "SharedKeyLite " : "SharedKey ";
  out += account;
  out += ':';
  out += sig;
  return out;
}

} // namespace shoal::storage::shared_key
