#include "storage/connection_string.hpp"

#include "storage/encoding.hpp"

#include <array>
#include <cctype>
#include <cstdlib>
#include <optional>

namespace shoal::storage {
namespace {

// The well-known emulator account (reference §1; identical for Azurite and the legacy emulator).
constexpr std::string_view dev_account_name = "devstoreaccount1";
constexpr std::string_view dev_account_key =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

// Every key the grammar knows, in one table so parsing is a lookup and a duplicate is caught.
enum key_id : std::size_t {
  k_protocol,
  k_name,
  k_key,
  k_suffix,
  k_blob,
  k_queue,
  k_table,
  k_file,
  k_blob2,
  k_queue2,
  k_table2,
  k_file2,
  k_sas,
  k_dev,
  k_proxy,
  k_count
};
constexpr std::array<std::string_view, k_count> key_names = {
    "DefaultEndpointsProtocol", "AccountName",           "AccountKey",
    "EndpointSuffix",           "BlobEndpoint",          "QueueEndpoint",
    "TableEndpoint",            "FileEndpoint",          "BlobSecondaryEndpoint",
    "QueueSecondaryEndpoint",   "TableSecondaryEndpoint", "FileSecondaryEndpoint",
    "SharedAccessSignature",    "UseDevelopmentStorage", "DevelopmentStorageProxyUri"};

std::unexpected<error> bad(std::string msg) {
  return std::unexpected(error::invalid("connection string: " + std::move(msg)));
}

// Splits "scheme://authority/path" and checks the scheme; returns the authority's end offset
// (start of the path) or nullopt when it is not an http(s) URI with a host.
std::optional<std::size_t> authority_end(std::string_view uri) {
  std::size_t start;
  if (uri.starts_with("http://"))
    start = 7;
  else if (uri.starts_with("https://"))
    start = 8;
  else
    return std::nullopt;
  const std::size_t end = uri.find_first_of("/?#", start);
  const std::size_t stop = end == std::string_view::npos ? uri.size() : end;
  if (stop == start)
    return std::nullopt;
  return stop;
}

// Validates an explicit endpoint URI and drops trailing slashes.
result<std::string> endpoint_value(key_id id, std::string_view v) {
  if (!authority_end(v))
    return bad("key '" + std::string(key_names[id]) + "' must be an http:// or https:// URI");
  while (v.ends_with('/'))
    v.remove_suffix(1);
  return std::string(v);
}

result<storage_account> development_account(const std::array<std::optional<std::string_view>, k_count>& kv) {
  for (std::size_t i = 0; i < k_count; ++i)
    if (kv[i] && i != k_dev && i != k_proxy)
      return bad("key '" + std::string(key_names[i]) +
                 "' cannot be combined with UseDevelopmentStorage");
  if (!ascii_iequals(*kv[k_dev], "true"))
    return bad("key 'UseDevelopmentStorage' must be 'true'");
  // DevelopmentStorageProxyUri replaces the scheme and host of 127.0.0.1; the emulator's
  // ports and the account path stay (what the .NET CloudStorageAccount did).
  std::string base = "http://127.0.0.1";
  if (kv[k_proxy]) {
    const std::string_view proxy = *kv[k_proxy];
    const auto end = authority_end(proxy);
    if (!end)
      return bad("key 'DevelopmentStorageProxyUri' must be an http:// or https:// URI");
    std::string_view authority = proxy.substr(0, *end);
    // Drop a port: the emulator ports are fixed. IPv6 literals keep their brackets.
    const std::size_t host_start = authority.find("://") + 3;
    const std::size_t bracket = authority.rfind(']');
    const std::size_t colon = authority.rfind(':');
    if (colon != std::string_view::npos && colon >= host_start &&
        (bracket == std::string_view::npos || colon > bracket))
      authority = authority.substr(0, colon);
    base = std::string(authority);
  }
  storage_account a;
  a.name = dev_account_name;
  a.key = *base64_decode(dev_account_key);
  a.blob_endpoint = base + ":10000/" + std::string(dev_account_name);
  a.queue_endpoint = base + ":10001/" + std::string(dev_account_name);
  a.table_endpoint = base + ":10002/" + std::string(dev_account_name);
  a.development = true;
  return a;
}

} // namespace

std::string storage_account::describe() const {
  std::string out = "account ";
  out += name.empty() ? "(unnamed)" : name;
  out += !sas.empty() ? " (SAS)" : !key.empty() ? " (SharedKey)" : " (anonymous)";
  if (development)
    out += " [development storage]";
  if (!blob_endpoint.empty())
    out += " blob=" + blob_endpoint;
  if (!queue_endpoint.empty())
    out += " queue=" + queue_endpoint;
  if (!table_endpoint.empty())
    out += " table=" + table_endpoint;
  return out;
}

result<storage_account> parse_connection_string(std::string_view s) {
  std::array<std::optional<std::string_view>, k_count> kv;
  std::size_t segment = 0;
  while (!s.empty()) {
    const std::size_t semi = s.find(';');
    const std::string_view part = trim_space(s.substr(0, semi));
    s = semi == std::string_view::npos ? std::string_view{} : s.substr(semi + 1);
    ++segment;
    if (part.empty())
      continue; // "a=b;;c=d" and a trailing ';' are allowed
    // Split on the FIRST '=' only: keys end in '=' padding and SAS tokens contain '='.
    const std::size_t eq = part.find('=');
    if (eq == std::string_view::npos)
      // Never echo the segment: it may be a secret pasted without its key.
      return bad("segment " + std::to_string(segment) + " is not Key=Value");
    const std::string_view key = trim_space(part.substr(0, eq));
    const std::string_view value = trim_space(part.substr(eq + 1));
    std::size_t id = 0;
    while (id < k_count && key_names[id] != key)
      ++id;
    if (id == k_count) {
      // Name the key only when it looks like one: a key pasted without "AccountKey=" splits
      // on its '=' padding into a base64 "key" that must not be echoed.
      bool word = !key.empty() && key.size() <= 32;
      for (const char c : key)
        word = word && std::isalpha(static_cast<unsigned char>(c));
      if (!word)
        return bad("segment " + std::to_string(segment) + " has an unknown key");
      return bad("unknown key '" + std::string(key) + "'");
    }
    if (kv[id])
      return bad("key '" + std::string(key) + "' appears twice");
    if (value.empty())
      return bad("key '" + std::string(key) + "' has an empty value");
    kv[id] = value;
  }

  if (kv[k_dev])
    return development_account(kv);
  if (kv[k_proxy])
    return bad("key 'DevelopmentStorageProxyUri' needs UseDevelopmentStorage=true");

  storage_account a;
  std::string protocol = "https";
  if (kv[k_protocol]) {
    if (*kv[k_protocol] != "http" && *kv[k_protocol] != "https")
      return bad("key 'DefaultEndpointsProtocol' must be 'http' or 'https'");
    protocol = *kv[k_protocol];
  }
  const std::string suffix = kv[k_suffix] ? std::string(*kv[k_suffix]) : "core.windows.net";
  if (kv[k_name])
    a.name = *kv[k_name];
  if (kv[k_key]) {
    if (a.name.empty())
      return bad("key 'AccountKey' needs an AccountName");
    auto decoded = base64_decode(*kv[k_key]);
    // The decoder's message is positional only, but keep this one fixed: never the value.
    if (!decoded || decoded->empty())
      return bad("key 'AccountKey' is not valid base64");
    a.key = std::move(*decoded);
  }
  if (kv[k_sas]) {
    std::string_view sas = *kv[k_sas];
    if (sas.starts_with('?'))
      sas.remove_prefix(1);
    if (sas.empty())
      return bad("key 'SharedAccessSignature' has an empty value");
    a.sas = sas;
  }

  // Explicit endpoints win; otherwise {protocol}://{AccountName}.{service}.{EndpointSuffix}.
  struct slot {
    key_id primary, secondary;
    std::string_view label;
    std::string* primary_out;
    std::string* secondary_out;
  };
  const slot slots[] = {
      {k_blob, k_blob2, "blob", &a.blob_endpoint, &a.blob_secondary_endpoint},
      {k_queue, k_queue2, "queue", &a.queue_endpoint, &a.queue_secondary_endpoint},
      {k_table, k_table2, "table", &a.table_endpoint, &a.table_secondary_endpoint},
      {k_file, k_file2, "file", &a.file_endpoint, &a.file_secondary_endpoint},
  };
  for (const slot& sl : slots) {
    if (kv[sl.primary]) {
      auto ep = endpoint_value(sl.primary, *kv[sl.primary]);
      if (!ep)
        return std::unexpected(std::move(ep.error()));
      *sl.primary_out = std::move(*ep);
    } else if (!a.name.empty()) {
      *sl.primary_out = protocol + "://" + a.name + "." + std::string(sl.label) + "." + suffix;
      if (!kv[sl.secondary])
        *sl.secondary_out =
            protocol + "://" + a.name + "-secondary." + std::string(sl.label) + "." + suffix;
    }
    if (kv[sl.secondary]) {
      auto ep = endpoint_value(sl.secondary, *kv[sl.secondary]);
      if (!ep)
        return std::unexpected(std::move(ep.error()));
      *sl.secondary_out = std::move(*ep);
    }
  }
  if (a.blob_endpoint.empty() && a.queue_endpoint.empty() && a.table_endpoint.empty() &&
      a.file_endpoint.empty())
    return bad("needs an AccountName or an explicit BlobEndpoint/QueueEndpoint/TableEndpoint");
  return a;
}

result<storage_account> account_from_environment() {
  const char* v = std::getenv("AZURE_STORAGE_CONNECTION_STRING");
  if (v == nullptr || *v == '\0')
    return std::unexpected(error::invalid("AZURE_STORAGE_CONNECTION_STRING is not set"));
  auto a = parse_connection_string(v);
  if (!a)
    a.error().message = "AZURE_STORAGE_CONNECTION_STRING: " + a.error().message;
  return a;
}

} // namespace shoal::storage
