#include "workers/config.hpp"

#include "transport/curve.hpp"

#include <toml++/toml.h>

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <map>
#include <optional>
#include <sstream>

namespace shoal::workers {
namespace {

// One entry per key: how to set it from a TOML node and from an environment string.
struct key_binding {
  std::function<bool(const toml::node&)> from_toml;    // false on a type mismatch
  std::function<bool(const std::string&)> from_string; // false if unparsable
  std::function<std::string()> to_text;                // the value as text (decimal for numbers)
};

template <class T> key_binding bind(T& field) {
  key_binding b;
  if constexpr (std::is_same_v<T, std::string>) {
    b.from_toml = [&field](const toml::node& n) {
      if (auto v = n.value<std::string>()) {
        field = *v;
        return true;
      }
      return false;
    };
    b.from_string = [&field](const std::string& s) {
      field = s;
      return true;
    };
    b.to_text = [&field] { return field; };
  } else {
    b.from_toml = [&field](const toml::node& n) {
      auto v = n.value<std::int64_t>();
      // Compared unsigned: a uint64 key's maximum does not fit an int64.
      if (!v || *v < 0 || static_cast<std::uint64_t>(*v) > std::numeric_limits<T>::max())
        return false;
      field = static_cast<T>(*v);
      return true;
    };
    b.from_string = [&field](const std::string& s) {
      char* end = nullptr;
      errno = 0;
      unsigned long long v = std::strtoull(s.c_str(), &end, 10);
      if (s.empty() || *end != '\0' || errno != 0 || v > std::numeric_limits<T>::max())
        return false;
      field = static_cast<T>(v);
      return true;
    };
    b.to_text = [&field] { return std::to_string(field); };
  }
  return b;
}

std::map<std::string, key_binding> bindings(config& c) {
  return {
      {"storage.connection_string", bind(c.storage.connection_string)},
      {"storage.connection_string_file", bind(c.storage.connection_string_file)},
      {"storage.request_timeout_ms", bind(c.storage.request_timeout_ms)},
      {"storage.connect_timeout_ms", bind(c.storage.connect_timeout_ms)},
      {"storage.max_attempts", bind(c.storage.max_attempts)},
      {"storage.ca_file", bind(c.storage.ca_file)},
      {"work.table", bind(c.work.table)},
      {"work.shards", bind(c.work.shards)},
      {"work.lease_ms", bind(c.work.lease_ms)},
      {"work.lease_renew_ms", bind(c.work.lease_renew_ms)},
      {"work.claim_batch", bind(c.work.claim_batch)},
      {"work.max_attempts", bind(c.work.max_attempts)},
      {"work.retry_base_ms", bind(c.work.retry_base_ms)},
      {"work.retry_max_ms", bind(c.work.retry_max_ms)},
      {"work.done_retention_ms", bind(c.work.done_retention_ms)},
      {"work.history_table", bind(c.work.history_table)},
      {"catalog.table", bind(c.catalog.table)},
      {"catalog.wal_retention_ms", bind(c.catalog.wal_retention_ms)},
      {"catalog.stall_timeout_ms", bind(c.catalog.stall_timeout_ms)},
      {"etl.queue", bind(c.etl.queue)},
      {"etl.container", bind(c.etl.container)},
      {"etl.runs_table", bind(c.etl.runs_table)},
      {"etl.datasets_dir", bind(c.etl.datasets_dir)},
      {"etl.sqlite_path", bind(c.etl.sqlite_path)},
      {"etl.postgres_url", bind(c.etl.postgres_url)},
      {"etl.busy_timeout_ms", bind(c.etl.busy_timeout_ms)},
      {"etl.claim_max", bind(c.etl.claim_max)},
      {"etl.history", bind(c.etl.history)},
      {"etl.max_blob_bytes", bind(c.etl.max_blob_bytes)},
      {"persistor.mode", bind(c.persistor.mode)},
      {"persistor.endpoint", bind(c.persistor.endpoint)},
      {"persistor.committed_endpoint", bind(c.persistor.committed_endpoint)},
      {"persistor.queue", bind(c.persistor.queue)},
      {"persistor.queue_dest", bind(c.persistor.queue_dest)},
      {"persistor.pullers", bind(c.persistor.pullers)},
      {"persistor.max_dequeue", bind(c.persistor.max_dequeue)},
      {"persistor.poison_queue", bind(c.persistor.poison_queue)},
      {"persistor.visibility_timeout_ms", bind(c.persistor.visibility_timeout_ms)},
      {"persistor.pull_idle_max_ms", bind(c.persistor.pull_idle_max_ms)},
      {"persistor.container", bind(c.persistor.container)},
      {"persistor.format", bind(c.persistor.format)},
      {"persistor.blob_type", bind(c.persistor.blob_type)},
      {"persistor.batch_max_records", bind(c.persistor.batch_max_records)},
      {"persistor.batch_max_bytes", bind(c.persistor.batch_max_bytes)},
      {"persistor.batch_max_delay_ms", bind(c.persistor.batch_max_delay_ms)},
      {"persistor.batch_left_behind_records", bind(c.persistor.batch_left_behind_records)},
      {"persistor.event_time_field", bind(c.persistor.event_time_field)},
      {"persistor.partition", bind(c.persistor.partition)},
      {"persistor.host", bind(c.persistor.host)},
      {"persistor.name", bind(c.persistor.name)},
      {"persistor.writers", bind(c.persistor.writers)},
      {"persistor.max_inflight_bytes", bind(c.persistor.max_inflight_bytes)},
      {"persistor.append_max_blocks", bind(c.persistor.append_max_blocks)},
      {"persistor.append_max_bytes", bind(c.persistor.append_max_bytes)},
      {"persistor.register_etl", bind(c.persistor.register_etl)},
      {"persistor.register_catalog", bind(c.persistor.register_catalog)},
      {"persistor.catalog_before_ack", bind(c.persistor.catalog_before_ack)},
      {"persistor.curve_secret_key", bind(c.persistor.curve_secret_key)},
      {"persistor.curve_public_key", bind(c.persistor.curve_public_key)},
      {"persistor.curve_allow_dir", bind(c.persistor.curve_allow_dir)},
      {"worker.job", bind(c.worker.job)},
      {"worker.queue", bind(c.worker.queue)},
      {"worker.exec_command", bind(c.worker.exec_command)},
      {"worker.exec_timeout_ms", bind(c.worker.exec_timeout_ms)},
      {"worker.exec_env", bind(c.worker.exec_env)},
      {"worker.concurrency", bind(c.worker.concurrency)},
      {"worker.poll_min_ms", bind(c.worker.poll_min_ms)},
      {"worker.poll_max_ms", bind(c.worker.poll_max_ms)},
      {"worker.drain_timeout_ms", bind(c.worker.drain_timeout_ms)},
      {"fleet.workers", bind(c.fleet.workers)},
      {"fleet.host", bind(c.fleet.host)},
      {"fleet.endpoint", bind(c.fleet.endpoint)},
      {"fleet.host_endpoint", bind(c.fleet.host_endpoint)},
      {"fleet.table", bind(c.fleet.table)},
      {"fleet.heartbeat_interval_ms", bind(c.fleet.heartbeat_interval_ms)},
      {"fleet.heartbeat_liveness", bind(c.fleet.heartbeat_liveness)},
      {"fleet.restart_intensity", bind(c.fleet.restart_intensity)},
      {"fleet.restart_period_ms", bind(c.fleet.restart_period_ms)},
      {"fleet.restart_backoff_ms", bind(c.fleet.restart_backoff_ms)},
      {"fleet.coordinator_lease_ms", bind(c.fleet.coordinator_lease_ms)},
      {"fleet.coordinator_renew_ms", bind(c.fleet.coordinator_renew_ms)},
      {"fleet.drain_timeout_ms", bind(c.fleet.drain_timeout_ms)},
      {"fleet.metrics_port", bind(c.fleet.metrics_port)},
      {"fleet.metrics_address", bind(c.fleet.metrics_address)},
      {"fleet.curve_secret_key", bind(c.fleet.curve_secret_key)},
      {"fleet.curve_public_key", bind(c.fleet.curve_public_key)},
      {"fleet.curve_allow_dir", bind(c.fleet.curve_allow_dir)},
      {"web.port", bind(c.web.port)},
      {"web.address", bind(c.web.address)},
      {"web.token_file", bind(c.web.token_file)},
      {"web.refresh_ms", bind(c.web.refresh_ms)},
      {"web.sample_ms", bind(c.web.sample_ms)},
      {"log.level", bind(c.log.level)},
      {"log.file", bind(c.log.file)},
  };
}

// "work.lease_ms" -> "SHOAL_WORK_LEASE_MS"
std::string env_name(const std::string& key) {
  std::string out = "SHOAL_";
  for (char ch : key)
    out += ch == '.' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  return out;
}

// The connection string when the file and the environment leave it empty: the secret file,
// else AZURE_STORAGE_CONNECTION_STRING; never a default (a daemon must not fall back to the
// emulator because a secret is missing: cmd::load decides what an empty one means).
result<void> resolve_connection_string(storage_config& s, const std::filesystem::path& config_path) {
  if (!s.connection_string.empty() && !s.connection_string_file.empty())
    return fail(errc::invalid_argument, "configuration keys 'storage.connection_string' and "
                                        "'storage.connection_string_file' are both set; set one");
  if (!s.connection_string.empty()) {
    const char* env = std::getenv("SHOAL_STORAGE_CONNECTION_STRING");
    s.connection_string_origin = (env && *env) ? std::string("SHOAL_STORAGE_CONNECTION_STRING")
        : config_path.empty() ? std::string("[storage] connection_string")
                              : "[storage] connection_string in " + config_path.string();
    return {};
  }
  if (!s.connection_string_file.empty()) {
    auto text = transport::read_secret_file(s.connection_string_file, 64 * 1024);
    if (!text)
      return fail(text.error().code == transport::errc::security ? errc::invalid_argument : errc::io,
                  "storage.connection_string_file: " + text.error().message);
    std::string_view rest = *text;
    while (!rest.empty()) {
      const auto nl = rest.find('\n');
      std::string_view line = rest.substr(0, nl);
      rest = nl == std::string_view::npos ? std::string_view{} : rest.substr(nl + 1);
      while (!line.empty() && std::isspace(static_cast<unsigned char>(line.front()))) line.remove_prefix(1);
      while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) line.remove_suffix(1);
      if (!line.empty() && line.front() != '#') {
        s.connection_string = std::string(line);
        break;
      }
    }
    if (s.connection_string.empty())
      return fail(errc::invalid_argument, "storage.connection_string_file " + s.connection_string_file +
                                              " holds no connection string");
    s.connection_string_origin = "connection_string_file " + s.connection_string_file;
    return {};
  }
  if (const char* env = std::getenv("AZURE_STORAGE_CONNECTION_STRING"); env && *env) {
    s.connection_string = env;
    s.connection_string_origin = "AZURE_STORAGE_CONNECTION_STRING";
  }
  return {};
}

} // namespace

std::vector<std::pair<std::string, std::string>> config_entries(const config& c) {
  config copy = c; // bindings() needs a mutable config; only read here
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& [key, b] : bindings(copy))
    out.emplace_back(key, b.to_text());
  return out;
}

bool postgres_url_has_password(std::string_view url) noexcept {
  const auto scheme = url.find("://");
  if (scheme == std::string_view::npos)
    return false;
  const std::string_view rest = url.substr(scheme + 3);
  const std::string_view authority = rest.substr(0, rest.find_first_of("/?#"));
  if (const auto at = authority.rfind('@');
      at != std::string_view::npos && authority.substr(0, at).find(':') != std::string_view::npos)
    return true;
  const auto q = rest.find('?');
  if (q == std::string_view::npos)
    return false;
  std::string_view params = rest.substr(q + 1);
  while (!params.empty()) {
    const auto amp = params.find('&');
    if (params.substr(0, amp).starts_with("password="))
      return true;
    params = amp == std::string_view::npos ? std::string_view{} : params.substr(amp + 1);
  }
  return false;
}

result<config> load_config(const std::filesystem::path& path) {
  config c;
  auto keys = bindings(c);
  if (!path.empty()) {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec))
      return fail(errc::io, "configuration file " + path.string() + " does not exist");
    // Debian's toml++ is built with exceptions: a syntax error throws toml::parse_error.
    toml::table root;
    try {
      root = toml::parse_file(path.string());
    } catch (const toml::parse_error& err) {
      std::ostringstream msg;
      msg << path.string() << ':' << err.source().begin.line << ':' << err.source().begin.column
          << ": " << err.description();
      return fail(errc::parse, msg.str());
    }
    for (const auto& [section, node] : root) {
      const toml::table* tbl = node.as_table();
      if (!tbl)
        return fail(errc::parse, path.string() + ": top-level key '" + std::string(section.str()) +
                                     "' must be a [section]");
      for (const auto& [name, value] : *tbl) {
        std::string key = std::string(section.str()) + '.' + std::string(name.str());
        auto it = keys.find(key);
        if (it == keys.end())
          return fail(errc::parse, path.string() + ":" + std::to_string(value.source().begin.line) +
                                       ": unknown key '" + key + "'");
        if (!it->second.from_toml(value))
          return fail(errc::parse, path.string() + ":" + std::to_string(value.source().begin.line) +
                                       ": wrong type or range for '" + key + "'");
      }
    }
  }
  for (auto& [key, b] : keys) {
    const std::string name = env_name(key);
    if (const char* v = std::getenv(name.c_str()); v != nullptr)
      if (!b.from_string(v))
        return fail(errc::invalid_argument,
                    "environment variable " + name + " has an invalid value for '" + key + "'");
  }
  if (auto r = resolve_connection_string(c.storage, path); !r)
    return std::unexpected(r.error());
  if (auto ok = validate(c); !ok)
    return std::unexpected(ok.error());
  return c;
}

bool valid_job_name(std::string_view job) {
  if (job == "exec" || job == "etl" || job == "noop")
    return true;
  if (!job.starts_with("sleep:") || job.size() == 6 || job.size() > 12)
    return false;
  std::uint64_t ms = 0;
  for (char ch : job.substr(6)) {
    if (ch < '0' || ch > '9')
      return false;
    ms = ms * 10 + static_cast<std::uint64_t>(ch - '0');
  }
  return ms <= 600'000;
}

std::optional<std::vector<std::string>> exec_env_names(std::string_view list) {
  std::vector<std::string> out;
  std::string cur;
  auto flush = [&]() -> bool {
    if (cur.empty())
      return true;
    if (std::isdigit(static_cast<unsigned char>(cur[0])))
      return false;
    if (std::find(out.begin(), out.end(), cur) == out.end())
      out.push_back(cur);
    cur.clear();
    return true;
  };
  for (char ch : list) {
    if (ch == ',' || ch == ' ' || ch == '\t') {
      if (!flush())
        return std::nullopt;
    } else if (std::isalnum(static_cast<unsigned char>(ch)) || ch == '_') {
      cur += ch;
    } else {
      return std::nullopt;
    }
  }
  if (!flush())
    return std::nullopt;
  return out;
}

result<void> validate(const config& c) {
  auto bad = [](const std::string& key, const std::string& why) {
    return fail(errc::invalid_argument, "configuration key '" + key + "' " + why);
  };
  if (c.work.shards < 1 || c.work.shards > 256)
    return bad("work.shards", "must be between 1 and 256");
  if (c.work.claim_batch < 1 || c.work.claim_batch > 100)
    return bad("work.claim_batch", "must be between 1 and 100 (entity group transaction limit)");
  if (c.work.lease_ms < 1000)
    return bad("work.lease_ms", "must be at least 1000");
  if (c.work.lease_renew_ms == 0 || c.work.lease_renew_ms >= c.work.lease_ms)
    return bad("work.lease_renew_ms", "must be greater than 0 and less than work.lease_ms");
  if (c.work.max_attempts < 1)
    return bad("work.max_attempts", "must be at least 1");
  if (c.work.retry_base_ms == 0 || c.work.retry_max_ms < c.work.retry_base_ms)
    return bad("work.retry_max_ms", "must be at least work.retry_base_ms (> 0)");
  if (!c.work.history_table.empty()) {
    const std::string& t = c.work.history_table;
    bool name_ok = t.size() >= 3 && t.size() <= 63 && std::isalpha(static_cast<unsigned char>(t[0]));
    for (char ch : t)
      name_ok = name_ok && std::isalnum(static_cast<unsigned char>(ch));
    if (!name_ok || t == c.work.table)
      return bad("work.history_table", "must be 3 to 63 letters or digits starting with a letter, not work.table (empty = none)");
  }
  if (c.storage.max_attempts < 1 || c.storage.max_attempts > 10)
    return bad("storage.max_attempts", "must be between 1 and 10");
  if (c.storage.request_timeout_ms < 100)
    return bad("storage.request_timeout_ms", "must be at least 100");
  {
    // The catalog name is the index table's; the WAL table appends "wal" (≤ 63 characters).
    const std::string& t = c.catalog.table;
    bool name_ok = t.size() >= 3 && t.size() <= 60 && std::isalpha(static_cast<unsigned char>(t[0]));
    for (char ch : t)
      name_ok = name_ok && std::isalnum(static_cast<unsigned char>(ch));
    if (!name_ok)
      return bad("catalog.table", "must be 3 to 60 letters or digits starting with a letter");
  }
  if (c.catalog.stall_timeout_ms < 1000)
    return bad("catalog.stall_timeout_ms", "must be at least 1000");
  if (c.etl.queue.empty() || c.etl.queue.size() > 64 || c.etl.queue.find('-') != std::string::npos)
    return bad("etl.queue", "must be 1 to 64 letters, digits or '_'");
  if (c.etl.runs_table.size() < 3 || c.etl.runs_table.size() > 63 ||
      !std::isalpha(static_cast<unsigned char>(c.etl.runs_table[0])))
    return bad("etl.runs_table", "must be 3 to 63 letters or digits starting with a letter");
  if (c.etl.sqlite_path.empty() && c.etl.postgres_url.empty())
    return bad("etl.sqlite_path", "must not be empty unless etl.postgres_url is set");
  if (!c.etl.postgres_url.empty() && !c.etl.postgres_url.starts_with("postgresql://") &&
      !c.etl.postgres_url.starts_with("postgres://"))
    return bad("etl.postgres_url", "must start with postgresql:// or postgres://");
  if (c.etl.claim_max < 1 || c.etl.claim_max > 100)
    return bad("etl.claim_max", "must be between 1 and 100");
  if (c.etl.history != "per_blob" && c.etl.history != "per_step")
    return bad("etl.history", "must be per_blob or per_step");
  // The ETL holds a blob's body in memory while it loads it: this is that memory's bound.
  if (c.etl.max_blob_bytes < (1u << 20) || c.etl.max_blob_bytes > (64ull << 30))
    return bad("etl.max_blob_bytes", "must be between 1048576 (1 MiB) and 68719476736 (64 GiB)");
  {
    const persistor_config& p = c.persistor;
    if (p.mode != "push" && p.mode != "pull")
      return bad("persistor.mode", "must be push or pull");
    if (p.format != "persistor-v1" && p.format != "ndjson")
      return bad("persistor.format", "must be persistor-v1 or ndjson");
    if (p.blob_type != "block" && p.blob_type != "append")
      return bad("persistor.blob_type", "must be block or append");
    if (p.partition != "day" && p.partition != "hour" && p.partition != "month")
      return bad("persistor.partition", "must be day, hour or month");
    if (p.pullers < 1 || p.pullers > 64)
      return bad("persistor.pullers", "must be between 1 and 64");
    if (p.writers < 1 || p.writers > 64)
      return bad("persistor.writers", "must be between 1 and 64");
    if (p.max_dequeue < 1)
      return bad("persistor.max_dequeue", "must be at least 1");
    if (p.batch_max_records < 1)
      return bad("persistor.batch_max_records", "must be at least 1");
    if (p.batch_max_bytes < 1024 || p.batch_max_bytes > (256u << 20))
      return bad("persistor.batch_max_bytes", "must be between 1024 and 268435456");
    if (p.visibility_timeout_ms < 1000 ||
        (p.mode == "pull" && p.visibility_timeout_ms <= p.batch_max_delay_ms))
      return bad("persistor.visibility_timeout_ms",
                 "must be at least 1000 and, in pull mode, longer than persistor.batch_max_delay_ms");
    if (p.pull_idle_max_ms < 50 || p.pull_idle_max_ms > 600'000)
      return bad("persistor.pull_idle_max_ms", "must be between 50 and 600000");
    if (p.append_max_blocks < 1 || p.append_max_blocks >= 50'000)
      return bad("persistor.append_max_blocks", "must be between 1 and 49999");
    // An append blob must hold at least one batch, and the ETL must be able to read it whole.
    if (p.append_max_bytes < p.batch_max_bytes || p.append_max_bytes > c.etl.max_blob_bytes)
      return bad("persistor.append_max_bytes",
                 "must be at least persistor.batch_max_bytes (" + std::to_string(p.batch_max_bytes) +
                     ") and at most etl.max_blob_bytes (" + std::to_string(c.etl.max_blob_bytes) +
                     "), or the ETL would refuse the blob");
    if (p.max_inflight_bytes < p.batch_max_bytes)
      return bad("persistor.max_inflight_bytes", "must be at least persistor.batch_max_bytes");
    if (p.curve_secret_key.empty() != p.curve_allow_dir.empty())
      return bad(p.curve_secret_key.empty() ? "persistor.curve_secret_key" : "persistor.curve_allow_dir",
                 "must be set together with persistor." +
                     std::string(p.curve_secret_key.empty() ? "curve_allow_dir" : "curve_secret_key") +
                     " (a CURVE server admits only the producers' keys in the allow folder)");
    bool name_ok = !p.name.empty() && p.name.size() <= 64;
    for (char ch : p.name)
      name_ok = name_ok && (std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '.');
    if (!name_ok)
      return bad("persistor.name", "must be 1 to 64 letters, digits, '_' or '.'");
  }
  {
    const worker_config& w = c.worker;
    if (!valid_job_name(w.job))
      return bad("worker.job", "must be exec, etl, noop or sleep:MS (MS = 0 to 600000)");
    if (!w.queue.empty() && (w.queue.size() > 64 || w.queue.find('-') != std::string::npos))
      return bad("worker.queue", "must be 1 to 64 letters, digits or '_'");
    if (w.exec_timeout_ms < 1)
      return bad("worker.exec_timeout_ms", "must be at least 1");
    if (!exec_env_names(w.exec_env))
      return bad("worker.exec_env", "must be environment variable names ([A-Za-z_][A-Za-z0-9_]*) separated by commas or spaces");
    if (w.concurrency < 1 || w.concurrency > 256)
      return bad("worker.concurrency", "must be between 1 and 256");
    if (w.poll_min_ms < 1 || w.poll_max_ms < w.poll_min_ms)
      return bad("worker.poll_max_ms", "must be at least worker.poll_min_ms, which must be at least 1");
  }
  {
    const fleet_config& f = c.fleet;
    if (f.workers > 1024)
      return bad("fleet.workers", "must be at most 1024 (0 = 2 per core)");
    if (f.heartbeat_interval_ms < 10)
      return bad("fleet.heartbeat_interval_ms", "must be at least 10");
    if (f.heartbeat_liveness < 1)
      return bad("fleet.heartbeat_liveness", "must be at least 1");
    if (f.restart_intensity < 1 || f.restart_period_ms < 1)
      return bad("fleet.restart_intensity", "restart_intensity and restart_period_ms must be at least 1");
    if (f.coordinator_renew_ms < 1 || f.coordinator_renew_ms >= f.coordinator_lease_ms)
      return bad("fleet.coordinator_renew_ms", "must be at least 1 and less than fleet.coordinator_lease_ms");
    if (f.table.size() < 3 || f.table.size() > 63 || !std::isalpha(static_cast<unsigned char>(f.table[0])))
      return bad("fleet.table", "must be 3 to 63 letters or digits starting with a letter");
    if (f.metrics_port > 65535)
      return bad("fleet.metrics_port", "must be a TCP port (0 = off)");
    if (!f.host_endpoint.empty() && !f.host_endpoint.starts_with("tcp://"))
      return bad("fleet.host_endpoint", "must be a tcp:// endpoint");
  }
  {
    const web_config& w = c.web;
    if (w.port > 65535)
      return bad("web.port", "must be a TCP port (0 = off)");
    if (w.address.empty())
      return bad("web.address", "must not be empty (127.0.0.1 = this host only)");
    if (w.refresh_ms < 100)
      return bad("web.refresh_ms", "must be at least 100");
    if (w.sample_ms < 100)
      return bad("web.sample_ms", "must be at least 100");
  }
  static const char* levels[] = {"trace", "debug", "info", "warn", "error", "critical", "off"};
  bool level_ok = false;
  for (const char* l : levels)
    level_ok = level_ok || c.log.level == l;
  if (!level_ok)
    return bad("log.level", "must be one of trace, debug, info, warn, error, critical, off");
  return {};
}

} // namespace shoal::workers
