#pragma once
// Error values of the actor runtime (STYLE.md §2.1): nothing in actors/ throws across a handler,
// a thread boundary or the wire; every fallible call returns `result<T>`.

#include <cstdint>
#include <expected>
#include <string>
#include <string_view>

namespace shoal::actors {

/// Stable error codes. Serialized into reply envelopes and logs: append new values, never renumber.
enum class errc : std::uint8_t {
  invalid_argument = 1, ///< bad options, malformed address, empty name
  mailbox_full = 2,     ///< the receiver's bounded mailbox is full (policy `reject`)
  timeout = 3,          ///< a request got no reply before its deadline
  not_found = 4,        ///< no actor registered under that name
  duplicate_name = 5,   ///< spawn refused: the name is already registered
  actor_down = 6,       ///< the receiver has stopped (or stopped while the sender was blocked)
  init_failed = 7,      ///< the actor's constructor or `init()` failed; spawn returns this
  handler_failed = 8,   ///< a handler threw or failed; a pending request gets this as its reply
  unknown_kind = 9,     ///< the receiver has no handler for the message kind
  decode = 10,          ///< a body or reply could not be decoded into the expected type
  transport = 11,       ///< the gateway could not encode or send the envelope
  escalated = 12,       ///< a supervisor exceeded its restart intensity and gave up
  peer_down = 13,       ///< the destination process is known but currently unreachable
  not_ready = 14,       ///< a reply is not there yet (manual execution: run the system first)
  no_route = 15,        ///< the address names another process and no gateway knows it
};

/// Short stable name of `code`, e.g. "mailbox_full". Thread-safe.
std::string_view to_string(errc code) noexcept;

/// What failed, with enough context to log it and decide what to do.
struct error {
  errc code = errc::invalid_argument; ///< what kind of failure
  std::string message;                ///< for humans; never parse it
};

/// A value or an `error`.
template <class T> using result = std::expected<T, error>;

/// Shorthand for `std::unexpected(error{code, message})`.
inline std::unexpected<error> make_error(errc code, std::string message) {
  return std::unexpected(error{code, std::move(message)});
}

} // namespace shoal::actors
