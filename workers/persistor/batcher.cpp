#include "workers/persistor/batcher.hpp"

#include <algorithm>

namespace shoal::workers::persistor {

batch batcher::seal(std::map<std::pair<std::string, std::string>, batch>::iterator it) {
  batch b = std::move(it->second);
  open_.erase(it);
  open_bytes_ -= b.body.size();
  open_records_ -= b.tokens.size();
  return b;
}

std::vector<batch> batcher::add(const record& r, ack_token token, std::int64_t now_ms) {
  std::vector<batch> sealed;
  scratch_.clear();
  append_record(scratch_, format_, r);
  auto key = std::make_pair(r.dest, partition_of(r.event_time));
  auto it = open_.find(key);
  if (it != open_.end() && it->second.body.size() + scratch_.size() > limits_.max_bytes) {
    sealed.push_back(seal(it));
    it = open_.end();
  }
  if (it == open_.end()) {
    batch b;
    b.dest = key.first;
    b.partition = key.second;
    b.opened_ms = now_ms;
    b.summary.first_event_time = r.event_time;
    b.summary.last_event_time = r.event_time;
    it = open_.emplace(std::move(key), std::move(b)).first;
  }
  batch& b = it->second;
  b.body += scratch_;
  b.tokens.push_back(token);
  b.summary.record_count += 1;
  b.summary.first_event_time = std::min(b.summary.first_event_time, r.event_time);
  b.summary.last_event_time = std::max(b.summary.last_event_time, r.event_time);
  open_bytes_ += scratch_.size();
  open_records_ += 1;
  if (b.tokens.size() >= limits_.max_records || b.body.size() >= limits_.max_bytes)
    sealed.push_back(seal(it));
  return sealed;
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

std::optional<std::int64_t> batcher::next_due() const {
  std::optional<std::int64_t> out;
  for (const auto& [k, b] : open_)
    if (!out || b.opened_ms + limits_.max_delay_ms < *out)
      out = b.opened_ms + limits_.max_delay_ms;
  return out;
}

} // namespace shoal::workers::persistor
