#pragma once
// Where the persistor's records come from, and how they are acknowledged once committed. Both
// run as actors in the engine's actor_system (engine.hpp), under a supervisor "sources" that
// restarts a failed one (run_* returns an error when it gives up):
//  - push: one actor "source" owns the ZeroMQ ROUTER accepting `persist.record` envelopes from
//    any number of DEALER producers. It reads bursts of up to 2,000 frames, formats each record
//    straight into its own batch_stage (no lock, no message per record), and answers
//    `persist.ack` (body: the acked 16-byte ids) once the blob holding the records is committed,
//    or `persist.reject` (corr: the id, body: the reason) for a record that can never be stored
//    (bad dest). A `persist.flush` from a producer seals the open batches holding that producer's
//    unacked records at once (end of input: no wait for batch_max_delay_ms per open partition)
//    and is acked like a record once they are all committed (a waiting record is held once
//    however many flushes wait for it; at most 1,024 flush ids per producer wait). Acks go out on its own thread (a
//    ZeroMQ socket is single-threaded): the engine parks committed tokens and wakes it with one
//    message per batch of commits. A record id already waiting for its blob is not stored
//    twice: the second sender is acked with the first.
//  - pull: "puller-0".."puller-{N-1}" each read an Azure Storage Queue (up to 32 messages per
//    get) and hand the records to engine::submit (the engine's batcher actor batches all pullers
//    together); "deleter-*" actors delete each message once its blob is committed; a message
//    dequeued more than max_dequeue times is moved to the poison queue with the reason.
// Both stop reading while the engine is saturated (back-pressure) and stop when `stop` is set:
// then the sources stop reading, every open batch is sealed and flushed, and the last acks
// (deletes) go out before run_* returns.

#include "storage/queue_client.hpp"
#include "transport/envelope.hpp"
#include "workers/error.hpp"
#include "workers/persistor/engine.hpp"
#include "workers/persistor/push_security.hpp"

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <string>

namespace shoal::workers::persistor {

/// Envelope kinds of the persistor protocol (transport/ENVELOPE.md "persist.*").
inline constexpr std::string_view kind_record = "persist.record";
inline constexpr std::string_view kind_ack = "persist.ack";
inline constexpr std::string_view kind_reject = "persist.reject";
inline constexpr std::string_view kind_committed = "persist.committed";
inline constexpr std::string_view kind_flush = "persist.flush";

/// splitmix64's finaliser: a bijective mix of a 64-bit word (every input bit moves about half
/// the output bits). Thread-safe (pure).
constexpr std::uint64_t splitmix64(std::uint64_t z) noexcept {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/// Hash of a 16-byte message id, for the hash maps keyed by id of the push source and `shoal
/// send`. Ids need not be random (time-ordered ids, `shoal send`'s file-hash-then-record-number
/// ids), so both words are mixed (splitmix64's finaliser) before they are folded. Thread-safe
/// (pure).
struct message_id_hash {
  std::size_t operator()(const transport::message_id& id) const noexcept {
    std::uint64_t a = 0, b = 0;
    std::memcpy(&a, id.data(), 8);
    std::memcpy(&b, id.data() + 8, 8);
    return static_cast<std::size_t>(splitmix64(a ^ splitmix64(b)));
  }
};

/// Settings of the push source.
struct push_options {
  std::string endpoint = "tcp://127.0.0.1:5590"; ///< bound ROUTER endpoint
  std::string committed_endpoint;   ///< optional PUB endpoint announcing persist.committed
  std::string event_time_field;     ///< payload field with the event time; empty = ingest time
  std::string address = "persistor@shoal"; ///< `from` of the acks
  int receive_hwm = 10'000;         ///< ZMQ_RCVHWM of the ROUTER (per producer)
  /// CURVE (push_security.hpp): required on a tcp endpoint that is not loopback. Each record
  /// then names the key its producer was admitted with (METADATA.producer_key).
  push_curve_files curve;
};

/// Settings of the pull source.
struct pull_options {
  std::string queue = "shoalin";
  std::string poison_queue = "shoalpoison";
  std::string default_dest = "default";
  std::uint32_t pullers = 4;
  std::uint32_t max_dequeue = 5;
  std::chrono::seconds visibility_timeout{60};
  std::string event_time_field;
  /// An empty get waits this long before the next one, doubling per further empty get up to
  /// `idle_poll_max` (each wait d × [0.5, 1.5], capped at idle_poll_max, so pullers drift
  /// apart; storage/backoff.hpp's policy), the randomized
  /// exponential back-off of Durable Task's and Functions' queue listeners. A get that returns
  /// messages resets it and wakes the other pullers. Idle cost with the defaults: about
  /// 0.2 gets/s per puller instead of 20.
  std::chrono::milliseconds idle_poll_min{50};
  std::chrono::milliseconds idle_poll_max{5000};
};

/// Counters of a source, readable from any thread.
struct source_stats {
  std::atomic<std::uint64_t> received{0};  ///< records received
  std::atomic<std::uint64_t> duplicates{0}; ///< received while the same id was in flight
  std::atomic<std::uint64_t> acked{0};     ///< acks sent / messages deleted
  std::atomic<std::uint64_t> rejected{0};  ///< rejected records / messages left for poisoning
  std::atomic<std::uint64_t> poisoned{0};  ///< moved to the poison queue
  std::atomic<std::uint64_t> bad_frames{0}; ///< undecodable frames or wrong kinds
  std::atomic<std::uint64_t> paused_ms{0}; ///< time spent not reading (back-pressure)
  std::atomic<std::uint64_t> empty_gets{0}; ///< pull: gets that returned no message
  std::atomic<std::uint64_t> flushes{0};   ///< push: persist.flush envelopes received
  /// push, a gauge: flush ids waiting for their answer now (at most 1,024 per producer).
  std::atomic<std::uint64_t> flushes_waiting{0};
  /// push, a gauge: records the waiting flushes wait for, each counted once however many
  /// flushes wait for it (at most the records in flight).
  std::atomic<std::uint64_t> flush_records{0};
};

/// Builds the engine with an ack path to push producers and runs the ROUTER loop until `stop`
/// is set; then flushes every open batch (up to `flush_timeout`), sends the last acks and
/// returns. Errors: invalid_argument / zmq (bind), those of engine::start, timeout (flush).
/// Blocks the calling thread. `on_ready` (optional) is called once bound, with the endpoint.
[[nodiscard]] result<void> run_push(const engine_options& eopts, storage::blob_client blobs,
                                    std::optional<work_table> etl,
                                    std::optional<storage::blob_catalog> catalog,
                                    const push_options& popts, const std::atomic<bool>& stop,
                                    source_stats& stats, std::chrono::milliseconds flush_timeout,
                                    const std::function<void(const std::string&)>& on_ready = {});

/// Builds the engine with an ack path that deletes queue messages, runs `pullers` actors until
/// `stop` is set, then flushes and deletes what was committed. Creates the queue and the poison
/// queue if missing. Errors: storage, those of engine::start, timeout (flush).
[[nodiscard]] result<void> run_pull(const engine_options& eopts, storage::blob_client blobs,
                                    storage::queue_client queues, std::optional<work_table> etl,
                                    std::optional<storage::blob_catalog> catalog,
                                    const pull_options& popts, const std::atomic<bool>& stop,
                                    source_stats& stats, std::chrono::milliseconds flush_timeout);

/// The record a queue message carries: a JSON object `{"dest": "...", "data": <payload>,
/// "event_time": "...", "id": "..."}` (data a string = the payload itself, any other JSON = its
/// serialization), or any other text = the payload for `default_dest`. Errors: invalid_argument
/// (bad dest, undecodable text) — the reason a poison message carries.
[[nodiscard]] result<record> record_from_queue_text(std::string_view text, std::string_view default_dest,
                                                    std::string_view event_time_field);

} // namespace shoal::workers::persistor
