#pragma once
// The four ETL steps as separate functions over one blob's in-memory state (issue 7 item 2).
// Both drivers use them: run_pipeline (orchestrator.hpp: the steps as calls on one thread, for
// the bench's direct figure and unit tests) and the chained stage actors (etl_chain.hpp: one
// actor per step). The three pure steps are deterministic functions of the blob and the
// dataset, which is what lets a resumed orchestration replay them instead of recording them
// again.

#include "workers/error.hpp"
#include "workers/blob_format.hpp"
#include "workers/etl/dataset.hpp"
#include "workers/etl/sql_sink.hpp"

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace shoal::workers::etl {

/// Milliseconds (fractional) elapsed on the steady clock since `t0`: a step's `ms`. Thread-safe.
inline double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

/// What one step did (also one log line per step).
struct step_stats {
  std::string step;              ///< "extract", "validate", "transform", "load"
  std::size_t records_in = 0;
  std::size_t records_out = 0;
  std::size_t quarantined = 0;   ///< records this step sent to quarantine
  double ms = 0;                 ///< wall time of the step
  std::string detail;            ///< e.g. "already loaded" or "replayed"
};

/// One history row of the runs table (orchestrator.hpp): a finished step of one run.
struct run_step {
  int seq = 0;             ///< 1..4
  std::string step;
  std::int32_t attempt = 0;
  std::int64_t gen = 0;
  std::string owner;
  std::chrono::system_clock::time_point started, finished;
  double ms = 0;
  std::int64_t records_in = 0, records_out = 0, quarantined = 0;
  std::string detail;
};

/// One blob's records between the steps. Borrows the blob body (extracted records point into
/// it) and, after validate, its own `extracted` (validated records point into it): keep it
/// where it is (it travels down the actor chain by handle, never by copy). Owner only.
struct blob_records {
  extracted_blob extracted;                         ///< extract's output, in blob order
  std::vector<std::vector<validated_record>> valid; ///< validate's output, one vector per slice, in order
  std::vector<quarantine_row> quarantine;           ///< every step's rejects; sorted by index after transform
  std::vector<load_row> rows;                       ///< transform's output, in blob order
};

/// Extract: splits `body` (both formats) into `out.extracted`. Errors: parse (the body is not a
/// sequence of JSON objects; the message names line, column and byte). Thread-safe (pure;
/// `out` owner only). `body` must outlive `out`.
[[nodiscard]] result<step_stats> extract_step(std::string_view body, blob_records& out);

/// Validate: extract problems, non-JSON payloads and schema violations to quarantine, the rest
/// into `r.valid`. Blobs of 8192 records or more are cut into up to 4 slices validated on
/// threads of their own (each with its own validator), joined in blob order.
step_stats validate_step(const dataset& d, blob_records& r);

/// Transform: maps `r.valid` to `r.rows` (failed conversions to quarantine, step "transform"),
/// one thread per validate slice, then sorts the quarantine by record index. `r.valid` is
/// released.
step_stats transform_step(const dataset& d, std::string_view blob_name, blob_records& r);

/// The load batch of `r` for dataset `d` (moves `r.rows` and `r.quarantine` into it).
load_batch make_load_batch(const dataset& d, std::string_view blob_name, blob_records& r, std::string_view owner);

/// The load step's stats from the sink's answer.
step_stats load_step_stats(const load_batch& b, const load_outcome& o, double ms);

/// Logs one step line: `etl step=S blob=B in=N out=M quarantined=Q ms=T [detail]` (spdlog info).
void log_step(std::string_view blob, const step_stats& s);

} // namespace shoal::workers::etl
