#pragma once
// The ETL job as an actor (issue 7 item 2, first cut): an I/O actor that owns one etl_job (its
// SQL connection and blob client) and runs one blob per `etl.run` request, replying `etl.done`.
// Blocking blob and SQL I/O stay on this actor's own thread (STYLE.md §2.3); a worker spawns one
// per ETL slot and sends it each claimed ETL record. The four steps inside one request are the
// etl_job's (durable history in shoalruns); splitting them into one actor per step is left.

#include "actors/actor.hpp"
#include "workers/etl/orchestrator.hpp"

#include <msgpack.hpp>

#include <functional>
#include <optional>
#include <string>

namespace shoal::workers::etl {

// -- messages: msgpack structs; only append fields ------------------------------------------------

/// Request: load the blob of one ETL record.
struct etl_run {
  static constexpr std::string_view kind = "etl.run";
  std::string record_id;   ///< the work-table record id
  std::string blob;        ///< blob name (the record's payload)
  std::int32_t attempt = 1; ///< claim attempt, from 1
  std::int64_t gen = 0;    ///< fencing token of the claim
  MSGPACK_DEFINE(record_id, blob, attempt, gen);
};

/// Reply to etl_run on success (a failure comes back as the request's error).
struct etl_done {
  static constexpr std::string_view kind = "etl.done";
  std::string blob;
  std::string dataset;
  bool already_loaded = false;   ///< the ledger (or the history) already held the blob
  std::uint64_t inserted = 0;
  std::uint64_t duplicates = 0;
  std::uint64_t quarantined = 0;
  MSGPACK_DEFINE(blob, dataset, already_loaded, inserted, duplicates, quarantined);
};

/// Runs etl_run requests one at a time on its own thread. Errors in the reply: handler_failed
/// with the etl_job's error text (its errc name first, e.g. "parse: blob is not parsable at …").
class etl_actor final : public actors::actor {
public:
  /// Makes the etl_job; called in init() on the actor's thread, again after each restart
  /// (a fresh SQL connection). Must be copyable (kept for restarts).
  using job_factory = std::function<result<etl_job>()>;
  etl_actor(actors::actor_config& cfg, job_factory make) : actor(cfg), make_(std::move(make)) {}

protected:
  actors::result<void> init() override;
  actors::behavior make_behavior() override;

private:
  actors::result<etl_done> handle(const etl_run& m);
  job_factory make_;
  std::optional<etl_job> job_;
};

} // namespace shoal::workers::etl
