#include "workers/persistor/batcher.hpp"

#include <algorithm>

namespace shoal::workers::persistor {
batch batcher::seal(std::map<std::pair<std::string, std::string>, batch>::iterator it) {
  if (cache_valid_ && cache_it_ == it)
    cache_valid_ = false;
  if (run_valid_ && run_it_ == it)
    run_valid_ = false;
  batch b = std::move(it->second);
  open_.erase(it);
  open_bytes_ -= b.body.size();
  open_records_ -= b.tokens.size();
  return b;
}

std::map<std::pair<std::string, std::string>, batch>::iterator
batcher::open_for(const record& r, std::int64_t now_ms) {
  // Consecutive records mostly share dest and partition: skip the partition text and the map
  // lookup.
  const std::int64_t period = partition_period(r.event_time, depth_);
  if (cache_valid_ && cache_period_ == period && cache_it_->first.first == r.dest)
    return cache_it_;
  auto key = std::make_pair(r.dest, partition_of(r.event_time, depth_));
  auto it = open_.find(key);
  if (it == open_.end()) {
    batch b;
    b.dest = key.first;
    b.partition = key.second;
    b.opened_ms = now_ms;
    b.summary.first_event_time = r.event_time;
    b.summary.last_event_time = r.event_time;
    it = open_.emplace(std::move(key), std::move(b)).first;
  }
  cache_valid_ = true;
  cache_period_ = period;
  cache_it_ = it;
  return it;
}

std::vector<batch> batcher::add(const record& r, ack_token token, std::int64_t now_ms) {
  std::vector<batch> sealed;
  auto it = open_for(r, now_ms);
  // Formatted straight into the open batch's body (no scratch copy). When the record would push
  // a non-empty batch over max_bytes, its bytes move to a fresh batch (a copy only at that
  // boundary, once per sealed batch) and the full one is sealed.
  const std::size_t before = it->second.body.size();
  append_record(it->second.body, format_, r);
  const std::size_t added = it->second.body.size() - before;
  open_bytes_ += added;
  if (before == 0) {
    // A new batch: size its body for max_records records like this one (at most max_bytes plus
    // one record), so it is not reallocated, and copied again, each time it doubles.
    const std::size_t per = added + added / 8 + 1;
    const std::size_t n = std::min<std::size_t>(limits_.max_records, limits_.max_bytes / per + 1);
    it->second.body.reserve(std::min(per * n, limits_.max_bytes + added));
  }
  if (before > 0 && before + added > limits_.max_bytes) {
    std::string tail = it->second.body.substr(before);
    it->second.body.resize(before);
    open_bytes_ -= added;
    sealed.push_back(seal(it));
    it = open_for(r, now_ms);
    it->second.body = std::move(tail);
    open_bytes_ += added;
  }
  batch& b = it->second;
  if (b.tokens.empty())
    b.tokens.reserve(std::min<std::size_t>(limits_.max_records, 4096));
  b.tokens.push_back(token);
  b.summary.record_count += 1;
  b.summary.first_event_time = std::min(b.summary.first_event_time, r.event_time);
  b.summary.last_event_time = std::max(b.summary.last_event_time, r.event_time);
  open_records_ += 1;
  if (run_valid_ && run_it_ == it) {
    ++run_records_;
  } else {
    run_valid_ = true;
    run_it_ = it;
    run_records_ = 1;
  }
  const bool moved_on = limits_.left_behind_records > 0 && run_records_ == limits_.left_behind_records;
  if (moved_on)
    seal_left_behind(it, sealed);
  if (b.tokens.size() >= limits_.max_records || b.body.size() >= limits_.max_bytes)
    sealed.push_back(seal(it));
  return sealed;
}

void batcher::seal_left_behind(open_map::iterator current, std::vector<batch>& sealed) {
  // open_ is ordered by (dest, partition): the dest's batches are adjacent.
  const std::string& dest = current->first.first;
  for (auto it = open_.lower_bound({dest, std::string()}); it != open_.end() && it->first.first == dest;) {
    auto next = std::next(it);
    if (it != current)
      sealed.push_back(seal(it));
    it = next;
  }
}

std::vector<batch> batcher::due(std::int64_t now_ms) {
  std::vector<batch> sealed;
  for (auto it = open_.begin(); it != open_.end();) {
    auto next = std::next(it);
    if (now_ms - it->second.opened_ms >= limits_.max_delay_ms)
      sealed.push_back(seal(it));
    it = next;
  }
  return sealed;
}

std::vector<batch> batcher::flush_all() {
  std::vector<batch> sealed;
  while (!open_.empty())
    sealed.push_back(seal(open_.begin()));
  return sealed;
}

std::vector<batch> batcher::seal_holding(const std::function<bool(ack_token)>& holds) {
  std::vector<batch> sealed;
  for (auto it = open_.begin(); it != open_.end();) {
    auto next = std::next(it);
    const auto& tokens = it->second.tokens;
    if (std::any_of(tokens.begin(), tokens.end(), holds))
      sealed.push_back(seal(it));
    it = next;
  }
  return sealed;
}

std::optional<std::int64_t> batcher::next_due() const {
  std::optional<std::int64_t> out;
  for (const auto& [k, b] : open_)
    if (!out || b.opened_ms + limits_.max_delay_ms < *out)
      out = b.opened_ms + limits_.max_delay_ms;
  return out;
}

} // namespace shoal::workers::persistor
