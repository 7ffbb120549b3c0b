#pragma once
// Batching per destination and date partition (day by default; format.hpp partition_depth;
// workers/etl/BLOBS.md; the defaults: README "Configuration", [persistor]):
// a batch is sealed when it reaches max_records, max_bytes or max_delay since its first record,
// whichever comes first, or when its dest's records have moved on to another date folder
// (left_behind_records in a row went to one other folder: time-ordered input, such as a file of
// dated records sent in date order, never comes back to a folder it left). Pure state machine
// over a caller-supplied clock, so tests never sleep.
//
//   batcher b({.max_records = 2}, record_format::ndjson);
//   auto sealed = b.add(rec, /*token*/ 1, now_ms);   // [] — batch open
//   sealed = b.add(rec2, 2, now_ms);                 // [batch{2 records, tokens {1, 2}}]
//   auto late = b.due(now_ms + 1000);                // batches whose delay has passed

#include "workers/persistor/format.hpp"

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace shoal::workers::persistor {

/// When a batch is sealed.
struct batch_limits {
  std::size_t max_records = 10000;            ///< records per batch
  std::size_t max_bytes = 4u << 20;           ///< formatted bytes per batch
  std::int64_t max_delay_ms = 1000;           ///< ms from a batch's first record to its seal
  /// Once this many records in a row (of the stage's input, counted per open batch) go to one
  /// batch, the other open batches of the same dest are sealed: the input has left their date
  /// folders behind. A record that comes back to a sealed folder opens a new batch there.
  /// Interleaved input (records of many folders mixed) never makes such a run, so only
  /// max_records/max_bytes/max_delay cut it. 0 = off.
  std::size_t left_behind_records = 100;
};

/// Opaque per-record handle of the source (push: a waiting producer; pull: a queue message),
/// handed back when the batch is committed.
using ack_token = std::uint64_t;

/// A sealed (or open) batch: the blob body in its format and what to acknowledge.
struct batch {
  std::string dest;                ///< first blob-name segment
  std::string partition;           ///< the date folder: "YYYY/MM/DD" (or "YYYY/MM", "YYYY/MM/DD/HH")
  std::string body;                ///< formatted records
  batch_summary summary;           ///< count, first/last event time
  std::vector<ack_token> tokens;   ///< one per record, in body order
  std::int64_t opened_ms = 0;      ///< caller clock when the first record was added
};

/// The batcher. Owner only (not thread-safe): each persistor actor that receives records owns
/// one (engine.hpp) and formats each record straight into its open batch's body.
class batcher {
public:
  /// A batcher with `limits` writing records in `format`, one open batch per dest and date
  /// folder of `depth`.
  batcher(batch_limits limits, record_format format, partition_depth depth = partition_depth::day)
      : limits_(limits), format_(format), depth_(depth) {}

  /// Adds `r` to the open batch of (r.dest, partition_of(r.event_time, depth)), opening one if needed.
  /// Returns the batches sealed by this call: the open one first when `r` would push it over
  /// max_bytes, then those of r.dest that `r` left behind (left_behind_records), then the one
  /// `r` filled to max_records/max_bytes. A record larger than
  /// max_bytes alone becomes a batch of one. `now_ms` is any monotonic millisecond clock.
  std::vector<batch> add(const record& r, ack_token token, std::int64_t now_ms);

  /// Seals and returns every open batch whose first record is at least max_delay_ms old.
  std::vector<batch> due(std::int64_t now_ms);

  /// Seals and returns every open batch (shutdown, flush).
  std::vector<batch> flush_all();

  /// Seals and returns the open batches holding a token for which `holds` is true (a
  /// producer's persist.flush: the batches with its records). O(open records).
  std::vector<batch> seal_holding(const std::function<bool(ack_token)>& holds);

  /// When the oldest open batch falls due (caller clock), or nullopt when none is open.
  std::optional<std::int64_t> next_due() const;

  /// Formatted bytes held in open batches.
  std::size_t open_bytes() const noexcept { return open_bytes_; }
  /// Records held in open batches.
  std::size_t open_records() const noexcept { return open_records_; }

private:
  using open_map = std::map<std::pair<std::string, std::string>, batch>;
  batch seal(open_map::iterator it);
  open_map::iterator open_for(const record& r, std::int64_t now_ms); // finds or opens
  void seal_left_behind(open_map::iterator current, std::vector<batch>& sealed);

  batch_limits limits_;
  record_format format_;
  partition_depth depth_;
  open_map open_;
  std::size_t open_bytes_ = 0;
  std::size_t open_records_ = 0;
  // The batch of the previous record (same dest and partition is the common case).
  bool cache_valid_ = false;
  std::int64_t cache_period_ = 0; // partition_period of the cached batch's records
  open_map::iterator cache_it_{};
  // The run of consecutive records that went to one open batch (left_behind_records).
  bool run_valid_ = false;
  std::size_t run_records_ = 0;
  open_map::iterator run_it_{};
};

} // namespace shoal::workers::persistor
