#include "workers/etl/etl_actor.hpp"

namespace shoal::workers::etl {

actors::result<void> etl_actor::init() {
  auto j = make_();
  if (!j) return std::unexpected(actors::error{actors::errc::init_failed, j.error().describe()});
  job_.emplace(std::move(*j));
  return {};
}

actors::behavior etl_actor::make_behavior() {
  return {[this](const etl_run& m) -> actors::result<etl_done> { return handle(m); }};
}

actors::result<etl_done> etl_actor::handle(const etl_run& m) {
  auto r = job_->run_blob(m.record_id, m.blob.empty() ? m.record_id : m.blob, m.attempt, m.gen);
  if (!r) return std::unexpected(actors::error{actors::errc::handler_failed, r.error().describe()});
  etl_done d;
  d.blob = r->blob;
  d.dataset = r->dataset;
  d.already_loaded = r->load.already_loaded;
  d.inserted = r->load.inserted;
  d.duplicates = r->load.duplicates;
  d.quarantined = r->load.quarantined;
  return d;
}

} // namespace shoal::workers::etl
