#include "workers/fleet/metrics.hpp"

#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <array>
#include <mutex>
#include <set>

namespace shoal::workers::fleet {

struct fleet_metrics::impl {
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  std::array<prometheus::Counter*, 12> counters{};
  prometheus::Family<prometheus::Gauge>* records = nullptr;
  prometheus::Family<prometheus::Gauge>* workers = nullptr;
  prometheus::Gauge* coordinator = nullptr;
  prometheus::Family<prometheus::Gauge>* oldest_pending = nullptr;
  prometheus::Family<prometheus::Counter>* queue_completions = nullptr;
  prometheus::Family<prometheus::Counter>* queue_failures = nullptr;
  prometheus::Family<prometheus::Counter>* web_actions = nullptr;
  std::mutex mu; // guards the label sets below (Family::Add is thread-safe; our bookkeeping is not)
  std::set<std::string> worker_states;
  std::unique_ptr<prometheus::Exposer> exposer;

  impl() {
    auto counter = [&](fleet_counter c, const char* name, const char* help) {
      auto& fam = prometheus::BuildCounter().Name(name).Help(help).Register(*registry);
      counters[static_cast<std::size_t>(c)] = &fam.Add({});
    };
    counter(fleet_counter::claims, "shoal_claims_total", "Records claimed by this host's workers.");
    counter(fleet_counter::completions, "shoal_completions_total", "Records completed by this host's workers.");
    counter(fleet_counter::failures, "shoal_failures_total", "Failed attempts of this host's workers.");
    counter(fleet_counter::contention, "shoal_contention_total",
            "Claims lost to another claimer (HTTP 412 on the conditional merge).");
    counter(fleet_counter::lease_lost, "shoal_lease_lost_total",
            "Completions refused because the record was re-claimed.");
    counter(fleet_counter::restarts, "shoal_worker_restarts_total", "Worker processes restarted.");
    counter(fleet_counter::missed_heartbeats, "shoal_missed_heartbeats_total",
            "Workers declared hung after heartbeat_liveness silent intervals.");
    counter(fleet_counter::hwm_drops, "shoal_hwm_drops_total",
            "Envelopes dropped at a ZeroMQ high-water mark.");
    counter(fleet_counter::restart_intensity_exceeded, "shoal_restart_intensity_exceeded_total",
            "Times a worker slot exceeded its restart intensity and started backing off.");
    counter(fleet_counter::persisted_blobs, "shoal_persisted_blobs_total",
            "Blobs announced committed by persistors (persist.committed).");
    counter(fleet_counter::persisted_records, "shoal_persisted_records_total",
            "Records in the blobs announced committed by persistors.");
    counter(fleet_counter::persisted_bytes, "shoal_persisted_bytes_total",
            "Bytes of the blobs announced committed by persistors.");
    coordinator = &prometheus::BuildGauge().Name("shoal_coordinator")
                       .Help("1 while this supervisor holds the coordinator lease, else 0.").Register(*registry).Add({});
    oldest_pending = &prometheus::BuildGauge().Name("shoal_queue_oldest_pending_age_seconds")
                          .Help("Age of the oldest pending record per queue (0 when none is pending).")
                          .Register(*registry);
    queue_completions = &prometheus::BuildCounter().Name("shoal_queue_completions_total")
                             .Help("Records completed by this host's workers, per queue.").Register(*registry);
    queue_failures = &prometheus::BuildCounter().Name("shoal_queue_failures_total")
                          .Help("Failed attempts of this host's workers, per queue.").Register(*registry);
    web_actions = &prometheus::BuildCounter().Name("shoal_web_actions_total")
                       .Help("Dashboard actions (requeue, purge) by outcome.").Register(*registry);
    records = &prometheus::BuildGauge().Name("shoal_records").Help("Work-table records per queue and status.")
                   .Register(*registry);
    workers = &prometheus::BuildGauge().Name("shoal_workers").Help("Worker slots of this supervisor per state.")
                   .Register(*registry);
  }
};

fleet_metrics::fleet_metrics() : impl_(std::make_unique<impl>()) {}
fleet_metrics::~fleet_metrics() = default;

result<std::unique_ptr<fleet_metrics>> fleet_metrics::serve(const std::string& address, std::uint16_t port) {
  auto m = std::make_unique<fleet_metrics>();
  try {
    // civetweb takes "host:port"; an IPv6 literal needs brackets.
    std::string bind = address.find(':') != std::string::npos ? "[" + address + "]" : address;
    bind += ":" + std::to_string(port);
    m->impl_->exposer = std::make_unique<prometheus::Exposer>(bind, 2);
    m->impl_->exposer->RegisterCollectable(m->impl_->registry);
  } catch (const std::exception& e) {
    return fail(errc::io, "metrics: cannot listen on " + address + ":" + std::to_string(port) + ": " + e.what());
  }
  return m;
}

void fleet_metrics::add(fleet_counter c, std::uint64_t n) {
  if (n)
    impl_->counters[static_cast<std::size_t>(c)]->Increment(static_cast<double>(n));
}

void fleet_metrics::set_records(const std::string& queue, const std::map<std::string, std::uint64_t>& by_status) {
  for (const char* s : {"pending", "claimed", "done", "dead"}) {
    auto it = by_status.find(s);
    impl_->records->Add({{"queue", queue}, {"status", s}})
        .Set(it == by_status.end() ? 0.0 : static_cast<double>(it->second));
  }
}

void fleet_metrics::set_workers(const std::map<std::string, std::uint64_t>& by_state) {
  std::lock_guard lock(impl_->mu);
  for (const auto& [state, n] : by_state)
    impl_->worker_states.insert(state);
  for (const auto& state : impl_->worker_states) {
    auto it = by_state.find(state);
    impl_->workers->Add({{"state", state}}).Set(it == by_state.end() ? 0.0 : static_cast<double>(it->second));
  }
}

void fleet_metrics::set_coordinator(bool holds) { impl_->coordinator->Set(holds ? 1.0 : 0.0); }

void fleet_metrics::set_oldest_pending_age(const std::string& queue, double seconds) {
  impl_->oldest_pending->Add({{"queue", queue}}).Set(seconds);
}

void fleet_metrics::add_queue(const std::string& queue, std::uint64_t completions, std::uint64_t failures) {
  // Add() creates the labelled series on first use; both exist from then on, at 0 if need be.
  auto& c = impl_->queue_completions->Add({{"queue", queue}});
  auto& f = impl_->queue_failures->Add({{"queue", queue}});
  if (completions)
    c.Increment(static_cast<double>(completions));
  if (failures)
    f.Increment(static_cast<double>(failures));
}

void fleet_metrics::add_web_action(const std::string& action, const std::string& outcome) {
  impl_->web_actions->Add({{"action", action}, {"outcome", outcome}}).Increment();
}

std::string fleet_metrics::render() const {
  prometheus::TextSerializer s;
  return s.Serialize(impl_->registry->Collect());
}

std::vector<int> fleet_metrics::ports() const {
  return impl_->exposer ? impl_->exposer->GetListeningPorts() : std::vector<int>{};
}

} // namespace shoal::workers::fleet
