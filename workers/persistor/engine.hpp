#pragma once
// The persistor engine: batches records (batcher.hpp), writes each sealed batch as one blob
// (create-only block blob, or appended to a rolling append blob), registers it (ETL queue of
// the work table, blob catalog), and only then hands the batch's ack tokens back to the source
// (push server or queue pullers), which acknowledges the messages.
//
// Threads: submit() is called by the source threads; one timer thread seals batches whose delay
// passed; `writers` threads write and register. Back-pressure: saturated() turns true while the
// bytes held (open + sealed + being written) exceed max_inflight_bytes; sources stop reading then.
//
// Registration: the ETL record (work table) is enqueued by the writer before the ack, so a
// committed, acked blob always reaches the ETL; the catalog entry is written afterwards by one
// registrar thread in commit order (flush() waits for it). A crash can leave the catalog entries
// of the last blobs missing; the ETL records are not affected.
//
// Failure rules: a blob write or registration that fails is retried with backoff (200 ms
// doubling to 10 s) until it succeeds or the engine is stopped; nothing is acked before. A
// create-only put that meets an existing blob (409 not recovered: a name used by an earlier run)
// takes the next sequence number and tries again.

#include "storage/blob_client.hpp"
#include "storage/catalog_blobs.hpp"
#include "workers/error.hpp"
#include "workers/persistor/batcher.hpp"
#include "workers/persistor/format.hpp"
#include "workers/work_table.hpp"

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace shoal::workers::persistor {

/// One committed blob, as announced to the source and to `persist.committed` listeners.
struct committed_blob {
  std::string container;
  std::string name;              ///< full blob name
  std::string dest;
  std::string date;              ///< "YYYY-MM-DD" of the partition
  std::string host;
  record_format format = record_format::persistor_v1;
  batch_summary summary;         ///< records in this commit (append: in this append)
  std::uint64_t bytes = 0;       ///< bytes written by this commit
  bool append = false;           ///< appended to an append blob (registered when rolled)
};

/// Settings of an engine. Every field has a safe default.
struct engine_options {
  std::string container = "shoal";
  record_format format = record_format::persistor_v1;
  bool append_blobs = false;                 ///< append-blob mode instead of block blobs
  std::uint32_t append_max_blocks = 49'000;  ///< roll before this many blocks
  std::uint64_t append_max_bytes = 256u << 20; ///< roll before this size
  batch_limits limits;                       ///< when a batch is sealed
  std::string host = "localhost";            ///< host part of blob names and catalog entries
  std::string name = "p1";                   ///< persistor name in blob names and the seq counter
  std::uint32_t writers = 8;                 ///< parallel blob writers
  std::uint64_t max_inflight_bytes = 64u << 20; ///< high-water mark for saturated()
  std::string etl_queue = "etl";             ///< work-table queue registered into
  std::uint32_t seq_reserve = 1000;          ///< sequence numbers reserved per counter write
};

/// Called by a writer thread once a batch is durable (and registered): the tokens to ack.
/// Must not block for long; must be thread-safe (several writers call it).
using commit_fn = std::function<void(const std::vector<ack_token>& tokens, const committed_blob& blob)>;

/// Counters, readable from any thread.
struct engine_stats {
  std::atomic<std::uint64_t> records_in{0};     ///< records submitted
  std::atomic<std::uint64_t> records_committed{0};
  std::atomic<std::uint64_t> blobs_committed{0};
  std::atomic<std::uint64_t> bytes_committed{0};
  std::atomic<std::uint64_t> write_retries{0};  ///< failed writes/registrations retried
  std::atomic<std::uint64_t> seq_collisions{0}; ///< create-only puts that met an existing blob
  std::atomic<std::uint64_t> registered{0};     ///< blobs enqueued for ETL
  std::atomic<std::uint64_t> catalogued{0};     ///< blobs registered in the catalog
};

/// The engine. Thread-safe: submit(), saturated(), flush() and stats() from any thread.
class engine {
public:
  /// Checks the options, creates the container and reserves the first sequence numbers (a
  /// counter blob `_shoal/seq/{host}-{name}` in the container, ETag-guarded, so two runs of the
  /// same persistor never reuse a number), then starts the threads. `etl` / `catalog` are
  /// optional registrations. Errors: invalid_argument (options), storage.
  [[nodiscard]] static result<std::unique_ptr<engine>>
  start(engine_options opts, storage::blob_client blobs, std::optional<work_table> etl,
        std::optional<storage::blob_catalog> catalog, commit_fn on_commit);

  /// Stops the threads; batches not written are abandoned (call flush() first to keep them).
  ~engine();
  engine(const engine&) = delete;
  engine& operator=(const engine&) = delete;

  /// Adds a record (dest must be valid: validate_dest). Never blocks on storage.
  /// Errors: invalid_argument (bad dest), cancelled (stopping).
  [[nodiscard]] result<void> submit(const record& r, ack_token token);

  /// True while the bytes held exceed max_inflight_bytes: the source should stop reading.
  bool saturated() const noexcept;

  /// Seals every open batch and waits until everything submitted so far is committed or
  /// `timeout` passes. Errors: timeout (then some batches are still being retried).
  [[nodiscard]] result<void> flush(std::chrono::milliseconds timeout);

  /// Counters.
  const engine_stats& stats() const noexcept;

  struct impl; ///< defined in engine.cpp
private:
  explicit engine(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

/// The host name of this machine (gethostname), reduced to letters, digits, '-' and '.';
/// "localhost" when unknown.
std::string local_host_name();

} // namespace shoal::workers::persistor
