#include "workers/fleet/queue_monitor.hpp"

#include "storage/table_filter.hpp"
#include "workers/fleet/metrics.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>

namespace shoal::workers::fleet {
namespace {

using steady = std::chrono::steady_clock;
using std::chrono::milliseconds;

// The queue of a partition `{queue}-{shard:02x}`; "" when `pk` is not one (another row kind).
// A queue name is 1..64 of [A-Za-z0-9_] (SCHEMA.md), so `{queue}-` never prefixes another queue.
std::string queue_of_partition(std::string_view pk) {
  const auto dash = pk.rfind('-');
  if (dash == std::string_view::npos || dash == 0 || dash > 64 || pk.size() - dash != 3)
    return "";
  for (char c : pk.substr(0, dash))
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_')
      return "";
  for (char c : pk.substr(dash + 1))
    if (!std::isxdigit(static_cast<unsigned char>(c)))
      return "";
  return std::string(pk.substr(0, dash));
}

} // namespace

result<std::vector<std::string>> discover_queues(const work_table& table) {
  std::vector<std::string> out;
  std::string from; // next PartitionKey to look at ("" = the start)
  for (int guard = 0; guard < 10'000; ++guard) {
    storage::table_query q;
    if (!from.empty())
      q.filter = storage::table_filter::ge("PartitionKey", from);
    q.select = {"PartitionKey"};
    q.page_size = 1;
    q.max_entities = 1;
    auto page = table.table().query_all(q);
    if (!page)
      return std::unexpected(error::from_storage(page.error(), "listing the queues of the work table"));
    if (page->empty())
      break;
    const std::string& pk = page->front().partition_key;
    auto name = queue_of_partition(pk);
    if (name.empty()) {
      from = pk + " "; // not a queue partition: skip it (keys hold no control characters)
      continue;
    }
    out.push_back(name);
    from = name + "."; // '.' follows '-': the first key after every "{name}-…" partition
  }
  return out;
}

result<std::optional<std::pair<std::chrono::system_clock::time_point, bool>>>
oldest_pending(const work_table& table, std::string_view queue, std::size_t max_scan) {
  // The work table owns its layout: tickets only, so done records are never read.
  return table.oldest_waiting(queue, max_scan);
}

queue_monitor::queue_monitor(work_table table, queue_monitor_options opts)
    : table_(std::move(table)), opts_(std::move(opts)) {
  for (const auto& q : opts_.queues)
    info_[q].name = q;
  thread_ = std::thread([this] { loop(); });
}

queue_monitor::~queue_monitor() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

std::vector<queue_info> queue_monitor::queues() const {
  std::lock_guard lock(mu_);
  std::vector<queue_info> out;
  const auto now = steady::now();
  for (const auto& [name, info] : info_) {
    out.push_back(info);
    if (auto it = read_at_.find(name); it != read_at_.end())
      out.back().read_ms_ago = std::chrono::duration_cast<milliseconds>(now - it->second).count();
  }
  return out;
}

void queue_monitor::watch(const std::string& queue) {
  std::lock_guard lock(mu_);
  if (!info_.contains(queue)) {
    info_[queue].name = queue;
    poke_ = true;
    cv_.notify_all();
  }
}

void queue_monitor::refresh() {
  std::lock_guard lock(mu_);
  poke_ = true;
  cv_.notify_all();
}

void queue_monitor::loop() {
  std::unique_lock lock(mu_);
  while (!stop_) {
    poke_ = false;
    lock.unlock();
    read_all();
    lock.lock();
    cv_.wait_for(lock, opts_.sample, [&] { return stop_ || poke_; });
  }
}

void queue_monitor::read_all() {
  const auto now = steady::now();
  std::set<std::string> names;
  {
    std::lock_guard lock(mu_);
    for (const auto& [name, info] : info_)
      names.insert(name);
  }
  if (discovered_ == steady::time_point{} || now - discovered_ >= opts_.discover) {
    auto found = discover_queues(table_);
    if (found) {
      names.insert(found->begin(), found->end());
      discovered_ = now;
    } else {
      spdlog::debug("dashboard: {}", found.error().describe());
    }
  }
  for (const auto& name : names) {
    queue_info fresh;
    fresh.name = name;
    auto c = table_.counts(name);
    if (!c) {
      std::lock_guard lock(mu_);
      info_[name].name = name;
      info_[name].error = c.error().describe();
      continue;
    }
    for (const char* s : {"pending", "claimed", "done", "dead"})
      fresh.by_status[s] = 0;
    for (const auto& [st, n] : c->by_status)
      fresh.by_status[std::string(to_string(st))] = n;
    for (const auto& [shard, by] : c->by_shard)
      for (const auto& [st, n] : by)
        fresh.by_shard[shard][std::string(to_string(st))] = n;
    fresh.total = c->total;
    if (fresh.by_status["pending"] > 0) {
      auto o = oldest_pending(table_, name, opts_.oldest_scan_max);
      if (!o) {
        fresh.error = o.error().describe();
      } else if (*o) {
        // Ages on the storage server's clock (tickets are written from it), the local clock as
        // the fallback before the table has seen a response.
        auto server_now = table_.clock().now().value_or(std::chrono::system_clock::now());
        fresh.oldest_pending_age_ms =
            std::max<std::int64_t>(0, std::chrono::duration_cast<milliseconds>(server_now - (*o)->first).count());
        fresh.oldest_pending_partial = (*o)->second;
      }
    }
    if (opts_.metrics)
      opts_.metrics->set_oldest_pending_age(name, fresh.oldest_pending_age_ms < 0
                                                      ? 0.0
                                                      : static_cast<double>(fresh.oldest_pending_age_ms) / 1000.0);
    const auto wall = std::chrono::system_clock::now();
    std::lock_guard lock(mu_);
    auto& slot = info_[name];
    fresh.history = std::move(slot.history);
    fresh.history.push_back(queue_sample{wall, fresh.by_status});
    std::erase_if(fresh.history, [&](const queue_sample& s) { return wall - s.at > opts_.history; });
    slot = std::move(fresh);
    read_at_[name] = steady::now();
  }
}

} // namespace shoal::workers::fleet
