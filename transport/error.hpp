#pragma once
// Errors of shoal::transport: values, never exceptions (STYLE.md §2.1).

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <version>

#if defined(__cpp_lib_expected)
#include <expected>
#else
#include <cassert>
#include <optional>
#include <variant>
#endif

namespace shoal::transport {

/// Stable error codes. Logged, counted and carried in envelopes: append new values, never
/// renumber. Codes 2–9 are decode errors (a received frame was rejected, see ENVELOPE.md §6).
enum class errc : std::uint8_t {
  invalid_argument = 1,     ///< caller input rejected: bad endpoint, option, key text, envelope
  frame_too_large = 2,      ///< frame longer than decode_limits::max_frame_bytes
  truncated = 3,            ///< frame ends inside a MessagePack value
  malformed = 4,            ///< not MessagePack, top level not a map, non-str key, trailing bytes
  missing_field = 5,        ///< a required key (v, id, kind, from, ts) is absent
  wrong_type = 6,           ///< a known key holds a MessagePack type its spec does not accept
  invalid_value = 7,        ///< right type, bad value: bin length ≠ 16, string too long or not
                            ///< UTF-8, integer out of range, attempt 0, duplicate key
  limit_exceeded = 8,       ///< hdr entry count or bytes, or nesting depth of an unknown value
  unsupported_version = 9,  ///< v is not 1
  would_block = 10,         ///< non-blocking send found the high-water mark reached (dropped)
  unroutable = 11,          ///< ROUTER has no peer with that routing id (EHOSTUNREACH)
  timeout = 12,             ///< nothing arrived before the deadline
  closed = 13,              ///< the ZeroMQ context was terminated (ETERM) or the socket closed
  io = 14,                  ///< file-system error (key files, allow-list)
  security = 15,            ///< insecure key-file permissions, CURVE unavailable, ZAP bind failed
  zmq = 16,                 ///< any other libzmq failure; error::sys_errno has zmq_errno()
};

/// Name of `c`, e.g. "frame_too_large". Never empty. Thread-safe (pure).
std::string_view to_string(errc c) noexcept;

/// What failed, with enough context to log it and to decide what to do.
struct error {
  errc code = errc::invalid_argument; ///< stable code; switch on this, never on `message`
  int sys_errno = 0;                  ///< errno / zmq_errno() when a system call failed, else 0
  std::string message;                ///< for humans; never parse it

  /// One line for logs: "frame_too_large: frame is 2000000 bytes, limit 1048576".
  std::string describe() const;
};

#if defined(__cpp_lib_expected)
/// `T` or an error. std::expected where the standard library has it.
template <class T> using result = std::expected<T, error>;
/// Wraps an error for returning from a function that returns `result<T>`.
using unexpected_error = std::unexpected<error>;
#else
// Drop-in for toolchains without std::expected (clang 14 with libstdc++ 12 disables it; the
// libFuzzer build uses that compiler). Only the subset this library uses.
/// Wraps an error for returning from a function that returns `result<T>`.
class unexpected_error {
public:
  explicit unexpected_error(error e) : e_(std::move(e)) {}
  const error& error() const& { return e_; }
  ::shoal::transport::error&& error() && { return std::move(e_); }

private:
  ::shoal::transport::error e_;
};
/// `T` or an error (fallback for std::expected<T, error>).
template <class T> class result {
public:
  result() : v_(std::in_place_index<0>) {}
  result(T value) : v_(std::in_place_index<0>, std::move(value)) {}
  result(unexpected_error u) : v_(std::in_place_index<1>, std::move(u).error()) {}
  bool has_value() const { return v_.index() == 0; }
  explicit operator bool() const { return has_value(); }
  T& value() & { assert(has_value()); return std::get<0>(v_); }
  const T& value() const& { assert(has_value()); return std::get<0>(v_); }
  T&& value() && { assert(has_value()); return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  const ::shoal::transport::error& error() const& { assert(!has_value()); return std::get<1>(v_); }
  ::shoal::transport::error& error() & { assert(!has_value()); return std::get<1>(v_); }

private:
  std::variant<T, ::shoal::transport::error> v_;
};
/// `void` or an error (fallback for std::expected<void, error>).
template <> class result<void> {
public:
  result() = default;
  result(unexpected_error u) : e_(std::move(u).error()) {}
  bool has_value() const { return !e_.has_value(); }
  explicit operator bool() const { return has_value(); }
  void value() const { assert(has_value()); }
  void operator*() const {}
  const ::shoal::transport::error& error() const& { assert(!has_value()); return *e_; }
  ::shoal::transport::error& error() & { assert(!has_value()); return *e_; }

private:
  std::optional<::shoal::transport::error> e_;
};
#endif

/// Shorthand: `return fail(errc::timeout, "no reply in 2 s");`.
inline unexpected_error fail(errc code, std::string message, int sys_errno = 0) {
  return unexpected_error(error{code, sys_errno, std::move(message)});
}

} // namespace shoal::transport
