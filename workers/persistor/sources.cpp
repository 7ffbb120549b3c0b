// What the persistor's push and pull sources share: event times and the sources' supervisor.
#include "workers/persistor/sources_internal.hpp"

#include <thread>

namespace shoal::workers::persistor::detail {

void set_event_time(record& r, const std::string* explicit_time, std::string_view field) {
  r.event_time = r.ingest_time;
  if (explicit_time) {
    if (auto t = parse_event_time(*explicit_time))
      r.event_time = *t;
    else
      r.properties["event_time_error"] = t.error().message;
  } else if (!field.empty()) {
    if (auto t = event_time_of(r.payload, field))
      r.event_time = *t;
    else
      r.properties["event_time_error"] = t.error().message;
  }
}

actors::supervisor_options sources_supervisor(const std::shared_ptr<escalation>& esc) {
  actors::supervisor_options so;
  so.on_escalate = [esc](const actors::error& e) {
    std::lock_guard lk(esc->m);
    esc->reason = e.message;
  };
  return so;
}

// Waits until `stop` is set or the sources' supervisor gave up (then its reason).
std::optional<std::string> wait_for_stop(const std::atomic<bool>& stop, escalation& esc) {
  while (!stop.load(std::memory_order_relaxed)) {
    {
      std::lock_guard lk(esc.m);
      if (esc.reason)
        return esc.reason;
    }
    // 100 ms: stopping starts at most this late, and an idle process wakes 10 times a second.
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return std::nullopt;
}

} // namespace shoal::workers::persistor::detail
