#pragma once
// Typed messages: plain structs with MSGPACK_DEFINE, carried MessagePack-encoded in the body of
// an envelope and dispatched by the envelope's `kind`.
//
// A message's kind is `M::kind` when the struct declares one
// (`static constexpr std::string_view kind = "persist.record";`), otherwise its qualified type
// name ("shoal::workers::job_started"). Declare `kind` for anything that crosses a process.

#include "actors/error.hpp"

#include <msgpack.hpp>

#include <concepts>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace shoal::actors {

// -- built-in messages -------------------------------------------------------------------------

/// Asks an actor to stop. If its behavior has no handler for it, the actor quits.
struct stop_request {
  static constexpr std::string_view kind = "actors.stop";
  std::uint8_t reserved = 0; // keeps the body a non-empty array; ignored
  MSGPACK_DEFINE(reserved);
};

/// Kind of the reply envelopes that carry request results (corr = the request's corr).
inline constexpr std::string_view reply_kind = "actors.reply";

// -- kinds -------------------------------------------------------------------------------------

/// True when `M` declares its own `static constexpr std::string_view kind`.
template <class M>
concept has_declared_kind = requires {
  { M::kind } -> std::convertible_to<std::string_view>;
};

namespace detail {
/// Qualified name of `T` from the compiler, e.g. "shoal::workers::job_started".
template <class T> constexpr std::string_view type_name() {
  std::string_view p = __PRETTY_FUNCTION__; // "... [with T = ns::foo; std::string_view = ...]"
  auto start = p.find("T = ") + 4;
  auto end = p.find_first_of(";]", start);
  return p.substr(start, end - start);
}
} // namespace detail

/// The envelope kind that carries `M`. Pure, constexpr.
template <class M> constexpr std::string_view kind_of() {
  if constexpr (has_declared_kind<M>)
    return std::string_view(M::kind);
  else
    return detail::type_name<M>();
}

// -- body codec --------------------------------------------------------------------------------

namespace detail {
/// msgpack packer buffer that appends to a byte vector.
struct byte_writer {
  std::vector<std::uint8_t>* out; // borrowed
  void write(const char* p, std::size_t n) {
    out->insert(out->end(), reinterpret_cast<const std::uint8_t*>(p),
                reinterpret_cast<const std::uint8_t*>(p) + n);
  }
};
/// Per-thread scratch buffer, so an encode costs one exact-size allocation.
std::vector<std::uint8_t>& scratch_buffer();
/// Tells msgpack to reference str/bin bytes in the input instead of copying them into the zone.
bool reference_all(msgpack::type::object_type, std::size_t, void*);
/// msgpack-cxx unpack limits for a body of `bytes` bytes (see decode_body).
msgpack::unpack_limit body_limits(std::size_t bytes) noexcept;
} // namespace detail

/// Deepest nesting of arrays and maps a message body may have. Message structs nest a few
/// levels (fleet_assign's host list: 3); deeper input is refused before it is walked.
inline constexpr std::size_t max_body_depth = 32;

/// Encodes `m` as MessagePack into `out`, replacing its contents but reusing its capacity (a
/// recycled envelope body makes this allocation-free). Owner thread of `out`.
template <class M> void encode_body(const M& m, std::vector<std::uint8_t>& out) {
  out.clear();
  if (out.capacity() < 64)
    out.reserve(64);
  detail::byte_writer w{&out};
  msgpack::packer<detail::byte_writer> pk(w);
  pk.pack(m);
}

/// Decodes `bytes` into an `M`. `zone` is scratch memory the caller reuses (cleared here).
/// Bounded: no array or map may declare more elements than the body has bytes (each takes at
/// least one), no str/bin/ext more bytes than the body, and nesting stops at max_body_depth, so
/// a hostile body costs at most O(its size) in time and zone memory.
/// Errors: decode (malformed MessagePack, a limit broken, or wrong shape). Never throws.
template <class M> result<M> decode_body(std::span<const std::uint8_t> bytes, msgpack::zone& zone) {
  try {
    zone.clear();
    std::size_t off = 0;
    msgpack::object obj = msgpack::unpack(zone, reinterpret_cast<const char*>(bytes.data()),
                                          bytes.size(), off, &detail::reference_all, nullptr,
                                          detail::body_limits(bytes.size()));
    M m{};
    obj.convert(m);
    return m;
  } catch (const std::exception& e) {
    return make_error(errc::decode, std::string("cannot decode ") + std::string(kind_of<M>()) + ": " + e.what());
  }
}

// -- reply codec: [code (0 = ok), message, value] ----------------------------------------------

/// Encodes a successful reply carrying `value` (pass nothing for a void reply).
template <class... T> void encode_reply_ok(std::vector<std::uint8_t>& out, const T&... value) {
  static_assert(sizeof...(T) <= 1);
  auto& s = detail::scratch_buffer();
  s.clear();
  detail::byte_writer w{&s};
  msgpack::packer<detail::byte_writer> pk(w);
  pk.pack_array(3);
  pk.pack_uint8(0);
  pk.pack_str(0);
  if constexpr (sizeof...(T) == 0)
    pk.pack_nil();
  else
    (pk.pack(value), ...);
  out.assign(s.begin(), s.end());
}

/// Encodes a failed reply carrying `err`.
void encode_reply_error(std::vector<std::uint8_t>& out, const error& err);

/// Decodes a reply body into `result<R>` (`R` may be void), within decode_body's limits. A
/// remote error comes back as that error; a malformed body as errc::decode. Never throws.
template <class R> result<R> decode_reply(std::span<const std::uint8_t> bytes, msgpack::zone& zone) {
  try {
    zone.clear();
    std::size_t off = 0;
    msgpack::object obj = msgpack::unpack(zone, reinterpret_cast<const char*>(bytes.data()),
                                          bytes.size(), off, &detail::reference_all, nullptr,
                                          detail::body_limits(bytes.size()));
    if (obj.type != msgpack::type::ARRAY || obj.via.array.size != 3)
      return make_error(errc::decode, "reply is not a 3-element array");
    auto code = obj.via.array.ptr[0].as<std::uint8_t>();
    if (code != 0)
      return make_error(static_cast<errc>(code), obj.via.array.ptr[1].as<std::string>());
    if constexpr (std::is_void_v<R>) {
      return {};
    } else {
      R v{};
      obj.via.array.ptr[2].convert(v);
      return v;
    }
  } catch (const std::exception& e) {
    return make_error(errc::decode, std::string("cannot decode reply: ") + e.what());
  }
}

} // namespace shoal::actors
