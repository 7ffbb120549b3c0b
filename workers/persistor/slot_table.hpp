#pragma once
// Process-local handles for what moves between the persistor's actors without being encoded:
// a message carries the slot id, the receiver takes the object out (exactly once). The
// in-process equivalent of CAF's copy-on-write message payloads: a batch body or a list of
// tokens is moved, never copied into a msgpack envelope. One short lock per put/take (per
// batch or per committed blob), never per record.
//
//   slot_table<batch> slots;
//   auto id = slots.put(std::move(sealed));      // sender: tell(writer, write_batch{id})
//   if (auto b = slots.take(id)) write(*b);      // receiver

#include <cstdint>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <utility>

namespace shoal::workers::persistor {

/// A table of objects parked under a 64-bit id. Thread-safe.
template <class T> class slot_table {
public:
  /// Parks `v`; returns its id (never 0, never reused).
  std::uint64_t put(T&& v) {
    std::lock_guard lk(m_);
    const std::uint64_t id = next_++;
    items_.emplace(id, std::move(v));
    return id;
  }
  /// Takes the object parked under `id` out of the table; nullopt if there is none (taken).
  std::optional<T> take(std::uint64_t id) {
    std::lock_guard lk(m_);
    auto it = items_.find(id);
    if (it == items_.end())
      return std::nullopt;
    std::optional<T> out(std::move(it->second));
    items_.erase(it);
    return out;
  }

private:
  std::mutex m_;
  std::unordered_map<std::uint64_t, T> items_;
  std::uint64_t next_ = 1;
};

} // namespace shoal::workers::persistor
