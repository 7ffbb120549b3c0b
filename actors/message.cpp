#include "actors/message.hpp"

namespace shoal::actors {

namespace detail {
std::vector<std::uint8_t>& scratch_buffer() {
  thread_local std::vector<std::uint8_t> buf = [] {
    std::vector<std::uint8_t> b;
    b.reserve(256);
    return b;
  }();
  return buf;
}

bool reference_all(msgpack::type::object_type, std::size_t, void*) { return true; }

msgpack::unpack_limit body_limits(std::size_t bytes) noexcept {
  // msgpack-cxx allocates an array's or map's objects as soon as it reads the declared count:
  // without a bound, 5 bytes declaring 2^32 - 1 elements ask for ~100 GB.
  return msgpack::unpack_limit(bytes, bytes, bytes, bytes, bytes, max_body_depth);
}
} // namespace detail

void encode_reply_error(std::vector<std::uint8_t>& out, const error& err) {
  auto& s = detail::scratch_buffer();
  s.clear();
  detail::byte_writer w{&s};
  msgpack::packer<detail::byte_writer> pk(w);
  pk.pack_array(3);
  pk.pack_uint8(static_cast<std::uint8_t>(err.code));
  pk.pack(err.message);
  pk.pack_nil();
  out.assign(s.begin(), s.end());
}

std::string_view to_string(errc code) noexcept {
  switch (code) {
  case errc::invalid_argument: return "invalid_argument";
  case errc::mailbox_full: return "mailbox_full";
  case errc::timeout: return "timeout";
  case errc::not_found: return "not_found";
  case errc::duplicate_name: return "duplicate_name";
  case errc::actor_down: return "actor_down";
  case errc::init_failed: return "init_failed";
  case errc::handler_failed: return "handler_failed";
  case errc::unknown_kind: return "unknown_kind";
  case errc::decode: return "decode";
  case errc::transport: return "transport";
  case errc::escalated: return "escalated";
  case errc::peer_down: return "peer_down";
  case errc::not_ready: return "not_ready";
  case errc::no_route: return "no_route";
  }
  return "unknown";
}

} // namespace shoal::actors
