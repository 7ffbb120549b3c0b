#include "workers/fleet/status.hpp"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <string>

namespace shoal::workers::fleet {
namespace {

using nlohmann::json;

json shards_json(const std::vector<std::uint32_t>& s) { return json(s); }

// "0-3,8,10-11": compact shard lists for the table.
std::string shard_ranges(const std::vector<std::uint32_t>& s) {
  if (s.empty())
    return "-";
  std::string out;
  for (std::size_t i = 0; i < s.size();) {
    std::size_t j = i;
    while (j + 1 < s.size() && s[j + 1] == s[j] + 1)
      ++j;
    if (!out.empty())
      out += ",";
    out += std::to_string(s[i]);
    if (j > i)
      out += "-" + std::to_string(s[j]);
    i = j + 1;
  }
  return out;
}

std::string ms_text(std::int64_t ms) {
  if (ms < 0)
    return "never";
  char buf[32];
  if (ms < 10'000)
    std::snprintf(buf, sizeof buf, "%lld ms", static_cast<long long>(ms));
  else
    std::snprintf(buf, sizeof buf, "%.0f s", static_cast<double>(ms) / 1000.0);
  return buf;
}

template <class T> T get_or(const json& j, const char* key, T def) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null())
    return def;
  return it->get<T>();
}

} // namespace

std::string to_json(const fleet_status& s) {
  json j;
  j["version"] = s.version;
  j["reachable"] = s.reachable;
  if (!s.error.empty())
    j["error"] = s.error;
  j["host"] = s.host;
  j["pid"] = s.pid;
  j["endpoint"] = s.endpoint;
  j["uptime_ms"] = s.uptime_ms;
  j["state"] = s.state;
  j["coordinator"] = s.coordinator;
  j["workers_wanted"] = s.workers_wanted;
  j["assignment"] = {{"epoch", s.assignment.epoch},
                     {"shards", shards_json(s.assignment.shards)},
                     {"coordinator", s.assignment.coordinator}};
  json hosts = json::array();
  for (const auto& h : s.hosts)
    hosts.push_back({{"host", h.host},
                     {"endpoint", h.endpoint},
                     {"workers", h.workers},
                     {"shards", shards_json(h.shards)},
                     {"coordinator", h.coordinator},
                     {"last_seen_ms_ago", h.last_seen_ms_ago}});
  j["hosts"] = std::move(hosts);
  json workers = json::array();
  for (const auto& w : s.workers)
    workers.push_back({{"slot", w.slot},
                       {"pid", w.pid},
                       {"state", w.state},
                       {"queue", w.queue},
                       {"current", w.current},
                       {"in_flight", w.in_flight},
                       {"done", w.done},
                       {"failed", w.failed},
                       {"claimed", w.claimed},
                       {"contention", w.contention},
                       {"lease_lost", w.lease_lost},
                       {"rate_per_s", w.rate_per_s},
                       {"last_heartbeat_ms_ago", w.last_heartbeat_ms_ago},
                       {"restarts", w.restarts},
                       {"shards", shards_json(w.shards)},
                       {"assign_epoch", w.assign_epoch}});
  j["workers"] = std::move(workers);
  json queues = json::object();
  for (const auto& [name, q] : s.queues)
    queues[name] = {{"by_status", q.by_status},
                    {"total", q.total},
                    {"age_ms", q.age_ms},
                    {"error", q.error}};
  j["queues"] = std::move(queues);
  // Invalid UTF-8 (a record id is any text, but a worker may send anything) is replaced, never
  // a throw.
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

result<fleet_status> parse_status(std::string_view text) {
  try {
    json j = json::parse(text);
    if (!j.is_object())
      return fail(errc::parse, "status: not a JSON object");
    fleet_status s;
    s.version = get_or<std::uint32_t>(j, "version", 1);
    s.reachable = get_or<bool>(j, "reachable", true);
    s.error = get_or<std::string>(j, "error", "");
    s.host = get_or<std::string>(j, "host", "");
    s.pid = get_or<std::int64_t>(j, "pid", 0);
    s.endpoint = get_or<std::string>(j, "endpoint", "");
    s.uptime_ms = get_or<std::int64_t>(j, "uptime_ms", 0);
    s.state = get_or<std::string>(j, "state", "");
    s.coordinator = get_or<bool>(j, "coordinator", false);
    s.workers_wanted = get_or<std::uint32_t>(j, "workers_wanted", 0);
    if (auto a = j.find("assignment"); a != j.end() && a->is_object()) {
      s.assignment.epoch = get_or<std::uint64_t>(*a, "epoch", 0);
      s.assignment.shards = get_or<std::vector<std::uint32_t>>(*a, "shards", {});
      s.assignment.coordinator = get_or<std::string>(*a, "coordinator", "");
    }
    if (auto hs = j.find("hosts"); hs != j.end() && hs->is_array())
      for (const auto& h : *hs) {
        host_view v;
        v.host = get_or<std::string>(h, "host", "");
        v.endpoint = get_or<std::string>(h, "endpoint", "");
        v.workers = get_or<std::uint32_t>(h, "workers", 0);
        v.shards = get_or<std::vector<std::uint32_t>>(h, "shards", {});
        v.coordinator = get_or<bool>(h, "coordinator", false);
        v.last_seen_ms_ago = get_or<std::int64_t>(h, "last_seen_ms_ago", 0);
        s.hosts.push_back(std::move(v));
      }
    if (auto ws = j.find("workers"); ws != j.end() && ws->is_array())
      for (const auto& w : *ws) {
        worker_status v;
        v.slot = get_or<std::string>(w, "slot", "");
        v.pid = get_or<std::int64_t>(w, "pid", 0);
        v.state = get_or<std::string>(w, "state", "");
        v.queue = get_or<std::string>(w, "queue", "");
        v.current = get_or<std::string>(w, "current", "");
        v.in_flight = get_or<std::uint32_t>(w, "in_flight", 0);
        v.done = get_or<std::uint64_t>(w, "done", 0);
        v.failed = get_or<std::uint64_t>(w, "failed", 0);
        v.claimed = get_or<std::uint64_t>(w, "claimed", 0);
        v.contention = get_or<std::uint64_t>(w, "contention", 0);
        v.lease_lost = get_or<std::uint64_t>(w, "lease_lost", 0);
        v.rate_per_s = get_or<double>(w, "rate_per_s", 0.0);
        v.last_heartbeat_ms_ago = get_or<std::int64_t>(w, "last_heartbeat_ms_ago", -1);
        v.restarts = get_or<std::uint32_t>(w, "restarts", 0);
        v.shards = get_or<std::vector<std::uint32_t>>(w, "shards", {});
        v.assign_epoch = get_or<std::uint64_t>(w, "assign_epoch", 0);
        s.workers.push_back(std::move(v));
      }
    if (auto qs = j.find("queues"); qs != j.end() && qs->is_object())
      for (const auto& [name, q] : qs->items()) {
        queue_status v;
        v.by_status = get_or<std::map<std::string, std::uint64_t>>(q, "by_status", {});
        v.total = get_or<std::uint64_t>(q, "total", 0);
        v.age_ms = get_or<std::int64_t>(q, "age_ms", -1);
        v.error = get_or<std::string>(q, "error", "");
        s.queues[name] = std::move(v);
      }
    return s;
  } catch (const std::exception& e) {
    return fail(errc::parse, std::string("status: ") + e.what());
  }
}

std::string to_table(const fleet_status& s) {
  std::string out;
  char line[512];
  if (!s.reachable) {
    out += "no supervisor: " + s.error + "\n";
  } else {
  std::snprintf(line, sizeof line, "supervisor %s pid %lld on %s (%s, up %s)%s\n", s.endpoint.c_str(),
                static_cast<long long>(s.pid), s.host.c_str(), s.state.c_str(),
                ms_text(s.uptime_ms).c_str(), s.coordinator ? ", coordinator" : "");
  out += line;
  if (!s.hosts.empty()) {
    out += "\nHOST                     WORKERS  COORD  LAST SEEN   SHARDS\n";
    for (const auto& h : s.hosts) {
      std::snprintf(line, sizeof line, "%-24s %7u  %-5s  %-10s  %s\n", h.host.c_str(), h.workers,
                    h.coordinator ? "yes" : "", ms_text(h.last_seen_ms_ago).c_str(),
                    shard_ranges(h.shards).c_str());
      out += line;
    }
  }
  std::snprintf(line, sizeof line, "\nWORKERS (%zu of %u wanted)\n", s.workers.size(), s.workers_wanted);
  out += line;
  out += "SLOT   PID      STATE     DONE    FAILED  RATE/S  HEARTBEAT   RESTARTS  SHARDS    CURRENT\n";
  for (const auto& w : s.workers) {
    std::snprintf(line, sizeof line, "%-6s %-8lld %-9s %-7llu %-7llu %-7.1f %-11s %-9u %-9s %s\n",
                  w.slot.c_str(), static_cast<long long>(w.pid), w.state.c_str(),
                  static_cast<unsigned long long>(w.done), static_cast<unsigned long long>(w.failed),
                  w.rate_per_s, ms_text(w.last_heartbeat_ms_ago).c_str(), w.restarts,
                  w.shards.empty() ? "all" : shard_ranges(w.shards).c_str(), w.current.c_str());
    out += line;
  }
  }
  if (!s.queues.empty()) {
    out += "\nQUEUE            PENDING  CLAIMED     DONE     DEAD    TOTAL  AGE\n";
    for (const auto& [name, q] : s.queues) {
      auto n = [&](const char* k) {
        auto it = q.by_status.find(k);
        return static_cast<unsigned long long>(it == q.by_status.end() ? 0 : it->second);
      };
      std::snprintf(line, sizeof line, "%-16s %7llu  %7llu  %7llu  %7llu  %7llu  %s%s%s\n", name.c_str(),
                    n("pending"), n("claimed"), n("done"), n("dead"),
                    static_cast<unsigned long long>(q.total), ms_text(q.age_ms).c_str(),
                    q.error.empty() ? "" : "  error: ", q.error.c_str());
      out += line;
    }
  }
  return out;
}

} // namespace shoal::workers::fleet
