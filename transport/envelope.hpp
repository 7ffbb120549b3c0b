#pragma once
// Envelope v1: the one message shape between actors, threads, processes and hosts.
// Normative wire spec: transport/ENVELOPE.md. Encoding/decoding: transport/codec.hpp.

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace shoal::transport {

/// 16 raw bytes: a message id or a correlation id (MessagePack bin 16 on the wire).
using message_id = std::array<std::uint8_t, 16>;

/// A decoded envelope. Field names follow the wire keys of ENVELOPE.md.
struct envelope {
  std::uint32_t v = 1;                        ///< schema version; encoders always write 1
  message_id id{};                            ///< message id, also the idempotency key
  std::string kind;                           ///< dotted type, ≤ 64 bytes: "persist.record"
  std::string from;                           ///< sender "actor@process@host", ≤ 256 bytes
  std::optional<std::string> to;              ///< destination address, ≤ 256 bytes
  std::optional<message_id> corr;             ///< correlation id of a request/reply
  std::uint64_t ts_ns = 0;                    ///< send time, Unix ns (wire key "ts")
  std::optional<std::uint64_t> deadline_ns;   ///< drop unprocessed after this Unix ns ("deadline")
  std::optional<std::uint32_t> attempt;       ///< delivery attempt, from 1
  std::optional<std::uint64_t> gen;           ///< claim generation (fencing token)
  std::map<std::string, std::string> hdr;     ///< headers: "ct" content type, trace id, ...
  std::vector<std::uint8_t> body;             ///< payload bytes

  friend bool operator==(const envelope&, const envelope&) = default;
};

/// A fresh message id that sorts by creation time: bytes 0–5 are the Unix time in milliseconds
/// (big-endian, 48 bits, as UUIDv7 of RFC 9562 §5.7 lays it out), bytes 6–15 are 80 random bits
/// from a per-thread generator seeded by the OS. Ids made later sort later (to the millisecond),
/// so a B-tree index keyed by them (the SQL sinks' exactly-once keys) grows at its right edge
/// instead of dirtying a random page per row. Thread-safe.
message_id new_message_id();

/// The wall-clock (system_clock) time now, in nanoseconds since the Unix epoch: the unit of an
/// envelope's `ts_ns` and `deadline_ns` (ENVELOPE.md). Not monotonic; for intervals use a
/// steady clock. Thread-safe.
std::uint64_t unix_now_ns() noexcept;

/// Lower-case hex of `id`, 32 characters.
std::string to_hex(const message_id& id);

} // namespace shoal::transport
