#pragma once
// Envelope v1 <-> MessagePack bytes. The wire format is specified in transport/ENVELOPE.md;
// this header is its reference implementation. No exceptions escape any function here.

#include "transport/envelope.hpp"
#include "transport/error.hpp"

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace shoal::transport {

// -- limits (ENVELOPE.md §4) --------------------------------------------------------------------

/// Default largest encoded envelope, in bytes (1 MiB).
inline constexpr std::size_t default_max_frame_bytes = std::size_t{1} << 20;
/// Largest value `decode_limits::max_frame_bytes` may take, in bytes (64 MiB).
inline constexpr std::size_t hard_max_frame_bytes = std::size_t{64} << 20;
/// Longest `kind`, in bytes of UTF-8.
inline constexpr std::size_t max_kind_bytes = 64;
/// Longest `from` / `to` address, in bytes of UTF-8.
inline constexpr std::size_t max_address_bytes = 256;
/// Longest header name, in bytes of UTF-8.
inline constexpr std::size_t max_hdr_key_bytes = 64;
/// Longest header value, in bytes of UTF-8.
inline constexpr std::size_t max_hdr_value_bytes = 1024;

/// Bounds applied by `decode` (and checked by `encode`, so a sender never produces a frame its
/// peers with the same limits reject). Defaults are the ENVELOPE.md defaults.
struct decode_limits {
  /// Largest frame accepted, in bytes. Values above `hard_max_frame_bytes` act as that cap.
  std::size_t max_frame_bytes = default_max_frame_bytes;
  std::size_t max_hdr_entries = 32;  ///< most entries in `hdr`
  std::size_t max_hdr_bytes = 8192;  ///< sum of the bytes of all header names and values
  std::size_t max_depth = 16;        ///< deepest nesting of arrays/maps inside an unknown key
};

// -- encoding -----------------------------------------------------------------------------------

/// Exact size in bytes `encode_to` writes for `env` (no validation). O(number of headers).
/// Thread-safe (pure).
[[nodiscard]] std::size_t encoded_size(const envelope& env) noexcept;

/// Checks `env` against ENVELOPE.md and `limits` without encoding it. Errors: invalid_argument
/// (empty kind/from), invalid_value (too long, not UTF-8, attempt 0), limit_exceeded (hdr),
/// unsupported_version (env.v ≠ 1), frame_too_large. Thread-safe (pure).
[[nodiscard]] result<void> validate(const envelope& env, const decode_limits& limits = {});

/// Validates `env` and writes its encoding into `out`, which must hold at least
/// `encoded_size(env)` bytes (else invalid_argument). Returns the number of bytes written.
/// Allocates nothing: use it to encode straight into a zmq message. Errors: as `validate`.
/// Thread-safe (pure; `out` is the caller's).
[[nodiscard]] result<std::size_t> encode_to(const envelope& env, std::span<std::uint8_t> out,
                                            const decode_limits& limits = {});

/// Validates `env` and replaces the contents of `out` with its encoding, reusing `out`'s
/// capacity (no allocation once the buffer has grown). On error `out` is left empty.
/// Errors: as `validate`. Thread-safe for distinct `out`.
[[nodiscard]] result<void> encode(const envelope& env, std::vector<std::uint8_t>& out,
                                  const decode_limits& limits = {});

/// Convenience form of `encode` returning a fresh buffer.
[[nodiscard]] result<std::vector<std::uint8_t>> encode(const envelope& env,
                                                       const decode_limits& limits = {});

// -- decoding -----------------------------------------------------------------------------------

/// Parses one frame into an envelope. Strict: every rule of ENVELOPE.md §3–§6 is checked; the
/// size is checked before anything is parsed, lengths are checked against the bytes present
/// before anything is copied, so memory use is bounded by the frame size and recursion by
/// `limits.max_depth`. Never throws, never reads past `frame`.
/// Errors: frame_too_large, truncated, malformed, missing_field, wrong_type, invalid_value,
/// limit_exceeded, unsupported_version. Thread-safe (pure). O(frame size).
[[nodiscard]] result<envelope> decode(std::span<const std::uint8_t> frame,
                                      const decode_limits& limits = {});

/// As `decode`, but into `out`, reusing its strings', body's capacity (the fast path for
/// receive loops). On error `out` holds a valid but unspecified envelope.
[[nodiscard]] result<void> decode_into(std::span<const std::uint8_t> frame, envelope& out,
                                       const decode_limits& limits = {});

namespace detail {
/// Checks `env` like `validate` and returns its exact encoded size, in one pass. For the socket
/// layer, which allocates the zmq message before encoding into it. Thread-safe (pure).
[[nodiscard]] result<std::size_t> validated_size(const envelope& env, const decode_limits& limits);
/// Writes `env` into `out`, which must be exactly `validated_size(env)` bytes of an envelope that
/// passed it. Returns out.size(). No checks: callers must have validated. Thread-safe (pure).
std::size_t encode_validated(const envelope& env, std::span<std::uint8_t> out) noexcept;
} // namespace detail

} // namespace shoal::transport
