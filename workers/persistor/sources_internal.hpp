#pragma once
// Private to workers/persistor (sources.cpp, push_source.cpp, pull_source.cpp): the messages of
// the source actors and what the push and pull sources share. Not part of the persistor's
// interface; include it from nowhere else.

#include "actors/supervisor.hpp"
#include "workers/persistor/sources.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

namespace shoal::workers::persistor::detail {

/// Milliseconds since the Unix epoch (system clock): a record's ingest time.
inline unix_ms now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

/// Fills r.event_time from an explicit text or a payload field; falls back to the ingest time
/// and records why in the properties (the record is never refused for its time).
void set_event_time(record& r, const std::string* explicit_time, std::string_view field);


struct poll_tick { // source → itself: read the next burst
  static constexpr std::string_view kind = "persistor.poll";
  std::uint8_t reserved = 0;
  MSGPACK_DEFINE(reserved);
};
struct wake_up { // puller → the other pullers: messages are coming, stop backing off
  static constexpr std::string_view kind = "persistor.wake_up";
  std::uint8_t reserved = 0;
  MSGPACK_DEFINE(reserved);
};
struct acks_ready { // engine → source: committed tokens wait in the completion queue
  static constexpr std::string_view kind = "persistor.acks_ready";
  std::uint8_t reserved = 0;
  MSGPACK_DEFINE(reserved);
};
struct stop_reading { // run_* → source (request, reply bool): stop reading, seal the stage
  static constexpr std::string_view kind = "persistor.stop_reading";
  std::uint8_t reserved = 0;
  MSGPACK_DEFINE(reserved);
};
struct drain { // run_* → source / deleter (request, reply bool): finish what is queued
  static constexpr std::string_view kind = "persistor.drain";
  std::uint8_t reserved = 0;
  MSGPACK_DEFINE(reserved);
};
struct delete_receipts { // → deleter: delete the queue messages in this slot
  static constexpr std::string_view kind = "persistor.delete_receipts";
  std::uint64_t slot = 0;
  MSGPACK_DEFINE(slot);
};

// Mailboxes of the sources block rather than refuse (nothing is sent per record).
inline constexpr actors::mailbox_options source_mailbox{.capacity = 1u << 16,
                                                 .policy = actors::overflow_policy::block};

/// Why the sources' supervisor gave up, once it has (set from its escalation callback).
struct escalation {
  std::mutex m;
  std::optional<std::string> reason;
};

/// The sources' supervisor: restarts a failed source actor; when they keep failing, run_* ends
/// with the reason in `esc`.
actors::supervisor_options sources_supervisor(const std::shared_ptr<escalation>& esc);

/// Waits until `stop` is set or the sources' supervisor gave up (then its reason).
std::optional<std::string> wait_for_stop(const std::atomic<bool>& stop, escalation& esc);

} // namespace shoal::workers::persistor::detail
