#include "transport/codec.hpp"

#include <msgpack.hpp>

#include <algorithm>
#include <cassert>
#include <cstring>
#include <string_view>

// Encoding goes through msgpack-cxx's packer (it picks the smallest representation of every
// length and integer, as ENVELOPE.md requires). Decoding is a bounded walker over the raw bytes
// instead of msgpack::unpack: it copies only the fields it keeps, never allocates a zone, and
// checks every declared length against the bytes actually present before touching them.

namespace shoal::transport {
namespace {

// -- wire keys ----------------------------------------------------------------------------------

enum key_bit : std::uint16_t {
  k_v = 1 << 0, k_id = 1 << 1, k_kind = 1 << 2, k_from = 1 << 3, k_to = 1 << 4, k_corr = 1 << 5,
  k_ts = 1 << 6, k_deadline = 1 << 7, k_attempt = 1 << 8, k_gen = 1 << 9, k_hdr = 1 << 10,
  k_body = 1 << 11,
  k_to_present = 1 << 12,  // bookkeeping: "to" held a string (not nil)
  k_hdr_present = 1 << 13, // bookkeeping: "hdr" was decoded into out.hdr
};

// Maps a key to its bit; 0 for keys this version does not know (they are skipped).
std::uint16_t key_of(std::string_view k) noexcept {
  switch (k.size()) {
  case 1: return k == "v" ? k_v : 0;
  case 2: return k == "id" ? k_id : k == "to" ? k_to : k == "ts" ? k_ts : 0;
  case 3: return k == "gen" ? k_gen : k == "hdr" ? k_hdr : 0;
  case 4:
    return k == "kind" ? k_kind : k == "from" ? k_from : k == "corr" ? k_corr
           : k == "body" ? k_body : 0;
  case 7: return k == "attempt" ? k_attempt : 0;
  case 8: return k == "deadline" ? k_deadline : 0;
  default: return 0;
  }
}

// -- UTF-8 --------------------------------------------------------------------------------------

// RFC 3629 well-formedness: no overlongs, no surrogates, nothing above U+10FFFF. O(n).
bool valid_utf8(const std::uint8_t* s, std::size_t n) noexcept {
  std::size_t i = 0;
  while (i < n) {
    // ASCII fast path: 8 bytes at a time while no byte has its high bit set.
    while (n - i >= 8) {
      std::uint64_t w;
      std::memcpy(&w, s + i, 8);
      if (w & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i == n) break;
    if (n >= 8 && n - i < 8) { // tail: the last 8 bytes cover [i, n); ASCII there means done
      std::uint64_t w;
      std::memcpy(&w, s + n - 8, 8);
      if (!(w & 0x8080808080808080ull)) break;
    }
    std::uint8_t c = s[i];
    if (c < 0x80) { ++i; continue; }
    std::size_t len;
    std::uint32_t cp;
    if ((c & 0xe0) == 0xc0) { len = 2; cp = c & 0x1f; }
    else if ((c & 0xf0) == 0xe0) { len = 3; cp = c & 0x0f; }
    else if ((c & 0xf8) == 0xf0) { len = 4; cp = c & 0x07; }
    else return false;
    if (n - i < len) return false;
    for (std::size_t j = 1; j < len; ++j) {
      if ((s[i + j] & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (s[i + j] & 0x3f);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
      return false;
    i += len;
  }
  return true;
}

bool valid_utf8(std::string_view s) noexcept {
  return valid_utf8(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
}

// -- encoding sizes (the smallest representation, as msgpack-cxx's packer writes) ---------------

constexpr std::size_t uint_size(std::uint64_t v) noexcept {
  return v < 128 ? 1 : v < 256 ? 2 : v < 65536 ? 3 : v <= 0xffffffffu ? 5 : 9;
}
constexpr std::size_t str_size(std::size_t n) noexcept {
  return (n < 32 ? 1 : n < 256 ? 2 : n < 65536 ? 3 : 5) + n;
}
constexpr std::size_t bin_size(std::size_t n) noexcept {
  return (n < 256 ? 2 : n < 65536 ? 3 : 5) + n;
}
constexpr std::size_t map_header_size(std::size_t n) noexcept {
  return n < 16 ? 1 : n < 65536 ? 3 : 5;
}

std::size_t entry_count(const envelope& e) noexcept {
  return 5 + (e.to ? 1 : 0) + (e.corr ? 1 : 0) + (e.deadline_ns ? 1 : 0) + (e.attempt ? 1 : 0) +
         (e.gen ? 1 : 0) + (e.hdr.empty() ? 0 : 1) + (e.body.empty() ? 0 : 1);
}

// Bounded output for msgpack::packer: remembers an overflow instead of writing past the end.
struct span_writer {
  std::uint8_t* p;
  std::uint8_t* end;
  bool overflow = false;
  void write(const char* data, std::size_t n) {
    if (static_cast<std::size_t>(end - p) < n) { overflow = true; return; }
    std::memcpy(p, data, n);
    p += n;
  }
};

std::size_t effective_max_frame(const decode_limits& l) noexcept {
  return std::min(l.max_frame_bytes, hard_max_frame_bytes);
}

// -- decoding primitives ------------------------------------------------------------------------

enum class mp : std::uint8_t { nil, boolean, uint, sint, flt, str, bin, array, map, ext };

// One MessagePack header: the type, an integer value, or a length plus the payload pointer.
struct item {
  mp type = mp::nil;
  std::uint64_t u = 0;           // uint value, or the count of an array/map
  std::int64_t i = 0;            // sint value
  std::uint32_t len = 0;         // str/bin/ext payload length
  const std::uint8_t* data = nullptr;
};

struct decode_failure {
  errc code;
  std::string message;
};

class reader {
public:
  reader(const std::uint8_t* p, const std::uint8_t* end) : p_(p), end_(end) {}
  std::size_t remaining() const noexcept { return static_cast<std::size_t>(end_ - p_); }
  bool done() const noexcept { return p_ == end_; }

  // Reads one header (and steps over str/bin/ext payloads). Counts of arrays/maps are checked
  // against the bytes left (every element takes at least one byte), so a huge declared count
  // fails here, in O(1), instead of driving a long loop.
  // Fast path for the forms every envelope is made of (positive fixint, fixstr), inlined into
  // the walker; everything else goes through next_slow.
  [[gnu::always_inline]] errc next(item& it) noexcept {
    if (p_ == end_) return errc::truncated;
    const std::uint8_t c = *p_;
    if (c <= 0x7f) { ++p_; it.type = mp::uint; it.u = c; return {}; }
    if ((c & 0xe0) == 0xa0) { ++p_; return payload(it, mp::str, c & 0x1f); }
    return next_slow(it);
  }

  [[gnu::noinline]] errc next_slow(item& it) noexcept {
    const std::uint8_t c = *p_++;
    if (c <= 0x7f) { it.type = mp::uint; it.u = c; return {}; }
    if (c >= 0xe0) { it.type = mp::sint; it.i = static_cast<std::int8_t>(c); return {}; }
    if ((c & 0xf0) == 0x80) return container(it, mp::map, c & 0x0f);
    if ((c & 0xf0) == 0x90) return container(it, mp::array, c & 0x0f);
    if ((c & 0xe0) == 0xa0) return payload(it, mp::str, c & 0x1f);
    std::uint64_t n = 0;
    switch (c) {
    case 0xc0: it.type = mp::nil; return {};
    case 0xc2: case 0xc3: it.type = mp::boolean; it.u = c & 1; return {};
    case 0xc4: case 0xc5: case 0xc6:
      if (!be(std::size_t{1} << (c - 0xc4), n)) return errc::truncated;
      return payload(it, mp::bin, n);
    case 0xc7: case 0xc8: case 0xc9:
      if (!be(std::size_t{1} << (c - 0xc7), n)) return errc::truncated;
      return payload(it, mp::ext, n + 1); // + the ext type byte
    case 0xca: it.type = mp::flt; return skip(4);
    case 0xcb: it.type = mp::flt; return skip(8);
    case 0xcc: case 0xcd: case 0xce: case 0xcf:
      if (!be(std::size_t{1} << (c - 0xcc), n)) return errc::truncated;
      it.type = mp::uint; it.u = n; return {};
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
      const std::size_t w = std::size_t{1} << (c - 0xd0);
      if (!be(w, n)) return errc::truncated;
      it.type = mp::sint;
      // Sign-extend the w-byte two's complement value.
      it.i = w == 8 ? static_cast<std::int64_t>(n)
                    : static_cast<std::int64_t>(n << (64 - 8 * w)) >> (64 - 8 * w);
      return {};
    }
    case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
      return payload(it, mp::ext, 1 + (std::size_t{1} << (c - 0xd4)));
    case 0xd9: case 0xda: case 0xdb:
      if (!be(std::size_t{1} << (c - 0xd9), n)) return errc::truncated;
      return payload(it, mp::str, n);
    case 0xdc: case 0xdd:
      if (!be(c == 0xdc ? 2 : 4, n)) return errc::truncated;
      return container(it, mp::array, n);
    case 0xde: case 0xdf:
      if (!be(c == 0xde ? 2 : 4, n)) return errc::truncated;
      return container(it, mp::map, n);
    default: // 0xc1 is "never used"
      return errc::malformed;
    }
  }

private:
  bool be(std::size_t w, std::uint64_t& out) noexcept {
    if (remaining() < w) return false;
    out = 0;
    for (std::size_t k = 0; k < w; ++k) out = (out << 8) | p_[k];
    p_ += w;
    return true;
  }
  errc skip(std::size_t n) noexcept {
    if (remaining() < n) return errc::truncated;
    p_ += n;
    return {};
  }
  errc payload(item& it, mp t, std::uint64_t n) noexcept {
    if (remaining() < n) return errc::truncated;
    it.type = t;
    it.len = static_cast<std::uint32_t>(n);
    it.data = p_;
    p_ += n;
    return {};
  }
  errc container(item& it, mp t, std::uint64_t n) noexcept {
    const std::uint64_t min_bytes = t == mp::map ? 2 * n : n;
    if (remaining() < min_bytes) return errc::truncated;
    it.type = t;
    it.u = n;
    return {};
  }

  const std::uint8_t* p_;
  const std::uint8_t* end_;
};

// Skips one complete value whose header is `it`; arrays/maps recurse at most `depth` levels.
errc skip_value(reader& r, const item& it, std::size_t depth) noexcept {
  if (it.type != mp::array && it.type != mp::map) return {};
  if (depth == 0) return errc::limit_exceeded;
  const std::uint64_t n = it.type == mp::map ? 2 * it.u : it.u;
  for (std::uint64_t k = 0; k < n; ++k) {
    item sub;
    if (errc e = r.next(sub); e != errc{}) return e;
    if (errc e = skip_value(r, sub, depth - 1); e != errc{}) return e;
  }
  return {};
}

const char* type_name(mp t) noexcept {
  switch (t) {
  case mp::nil: return "nil";
  case mp::boolean: return "bool";
  case mp::uint: return "uint";
  case mp::sint: return "negative int";
  case mp::flt: return "float";
  case mp::str: return "str";
  case mp::bin: return "bin";
  case mp::array: return "array";
  case mp::map: return "map";
  case mp::ext: return "ext";
  }
  return "?";
}

decode_failure wrong(std::string_view key, const item& it, const char* expected) {
  std::string m = "key '";
  m += key;
  m += "': ";
  m += type_name(it.type);
  m += ", expected ";
  m += expected;
  return {errc::wrong_type, std::move(m)};
}

decode_failure bad(errc code, std::string_view key, std::string what) {
  std::string m = "key '";
  m += key;
  m += "': ";
  m += what;
  return {code, std::move(m)};
}

// An unsigned integer that fits in `max`: any MessagePack int family, value ≥ 0.
bool as_uint(std::string_view key, const item& it, std::uint64_t max, std::uint64_t& out,
             decode_failure& f) {
  if (it.type == mp::uint) {
    out = it.u;
  } else if (it.type == mp::sint) {
    if (it.i < 0) {
      f = bad(errc::invalid_value, key, "negative value " + std::to_string(it.i));
      return false;
    }
    out = static_cast<std::uint64_t>(it.i);
  } else {
    f = wrong(key, it, "uint");
    return false;
  }
  if (out > max) {
    f = bad(errc::invalid_value, key, "value " + std::to_string(out) + " out of range");
    return false;
  }
  return true;
}

bool as_id(std::string_view key, const item& it, message_id& out, decode_failure& f) {
  if (it.type != mp::bin) { f = wrong(key, it, "bin 16"); return false; }
  if (it.len != out.size()) {
    f = bad(errc::invalid_value, key, "bin length " + std::to_string(it.len) + ", expected 16");
    return false;
  }
  std::memcpy(out.data(), it.data, out.size());
  return true;
}

// Same-length strings (the usual case in a receive loop) are overwritten in place.
inline void assign(std::string& out, const std::uint8_t* p, std::size_t n) {
  if (out.size() == n) std::memcpy(out.data(), p, n);
  else out.assign(reinterpret_cast<const char*>(p), n);
}

bool as_str(std::string_view key, const item& it, std::size_t min, std::size_t max,
            std::string& out, decode_failure& f) {
  if (it.type != mp::str) { f = wrong(key, it, "str"); return false; }
  if (it.len < min || it.len > max) {
    f = bad(errc::invalid_value, key,
            "length " + std::to_string(it.len) + " outside " + std::to_string(min) + ".." +
                std::to_string(max) + " bytes");
    return false;
  }
  if (!valid_utf8(it.data, it.len)) { f = bad(errc::invalid_value, key, "not UTF-8"); return false; }
  assign(out, it.data, it.len);
  return true;
}

// Decodes `hdr` into `out`, reusing its nodes and strings when the keys come in the map's own
// (sorted) order, as every encoder following ENVELOPE.md writes them: a warm receive loop then
// allocates nothing for headers.
bool decode_hdr(reader& r, const item& it, const decode_limits& lim,
                std::map<std::string, std::string>& out, decode_failure& f) {
  if (it.type == mp::nil) { out.clear(); return true; }
  if (it.type != mp::map) { f = wrong("hdr", it, "map str→str"); return false; }
  if (it.u > lim.max_hdr_entries) {
    f = bad(errc::limit_exceeded, "hdr",
            std::to_string(it.u) + " entries, limit " + std::to_string(lim.max_hdr_entries));
    return false;
  }
  std::size_t total = 0;
  auto reuse = out.begin(); // next node that may be reused in place
  bool in_place = true;
  for (std::uint64_t k = 0; k < it.u; ++k) {
    item ki, vi;
    if (errc e = r.next(ki); e != errc{}) { f = bad(e, "hdr", "entry name"); return false; }
    if (ki.type != mp::str) { f = wrong("hdr", ki, "str (header name)"); return false; }
    if (ki.len < 1 || ki.len > max_hdr_key_bytes || !valid_utf8(ki.data, ki.len)) {
      f = bad(errc::invalid_value, "hdr", "header name must be 1.." +
                                          std::to_string(max_hdr_key_bytes) + " bytes of UTF-8");
      return false;
    }
    const std::string_view name(reinterpret_cast<const char*>(ki.data), ki.len);
    if (errc e = r.next(vi); e != errc{}) { f = bad(e, "hdr", "entry value"); return false; }
    if (vi.type != mp::str) {
      f = wrong("hdr", vi, "str");
      f.message += " (value of header '" + std::string(name) + "')";
      return false;
    }
    if (vi.len > max_hdr_value_bytes || !valid_utf8(vi.data, vi.len)) {
      f = bad(errc::invalid_value, "hdr", "value of header '" + std::string(name) + "' must be ≤ " +
                                          std::to_string(max_hdr_value_bytes) + " bytes of UTF-8");
      return false;
    }
    const std::string_view value(reinterpret_cast<const char*>(vi.data), vi.len);
    total += name.size() + value.size();
    if (total > lim.max_hdr_bytes) {
      f = bad(errc::limit_exceeded, "hdr",
              "more than " + std::to_string(lim.max_hdr_bytes) + " bytes of names and values");
      return false;
    }
    if (in_place && reuse != out.end() && reuse->first == name) {
      assign(reuse->second, vi.data, vi.len);
      ++reuse;
      continue;
    }
    if (in_place) { // first mismatch: drop the nodes not reused, insert from here on
      out.erase(reuse, out.end());
      in_place = false;
    }
    if (!out.emplace(std::string(name), std::string(value)).second) {
      f = bad(errc::invalid_value, "hdr", "duplicate header name '" + std::string(name) + "'");
      return false;
    }
  }
  if (in_place) out.erase(reuse, out.end());
  return true;
}

// Finds a top-level "v" in a frame whose map header was already read; used only on the error
// path so that a v2 frame reports unsupported_version rather than a v1 rule it broke.
std::optional<std::uint64_t> find_version(std::span<const std::uint8_t> frame,
                                          const decode_limits& lim) {
  reader r(frame.data(), frame.data() + frame.size());
  item m;
  if (r.next(m) != errc{} || m.type != mp::map) return std::nullopt;
  for (std::uint64_t k = 0; k < m.u; ++k) {
    item ki, vi;
    if (r.next(ki) != errc{}) return std::nullopt;
    if (skip_value(r, ki, lim.max_depth) != errc{}) return std::nullopt;
    if (r.next(vi) != errc{}) return std::nullopt;
    if (ki.type == mp::str && ki.len == 1 && ki.data[0] == 'v') {
      if (vi.type == mp::uint) return vi.u;
      return std::nullopt;
    }
    if (skip_value(r, vi, lim.max_depth) != errc{}) return std::nullopt;
  }
  return std::nullopt;
}

const char* key_name(std::uint16_t bit) noexcept {
  switch (bit) {
  case k_v: return "v";
  case k_id: return "id";
  case k_kind: return "kind";
  case k_from: return "from";
  case k_ts: return "ts";
  default: return "?";
  }
}

// The walker proper. Returns true on success; on failure fills `f`.
bool decode_impl(std::span<const std::uint8_t> frame, envelope& out, const decode_limits& lim,
                 decode_failure& f) {
  const std::size_t max_frame = effective_max_frame(lim);
  if (frame.size() > max_frame) {
    f = {errc::frame_too_large, "frame is " + std::to_string(frame.size()) + " bytes, limit " +
                                    std::to_string(max_frame)};
    return false;
  }
  reader r(frame.data(), frame.data() + frame.size());
  item m;
  if (errc e = r.next(m); e != errc{}) {
    f = {e, frame.empty() ? "empty frame" : "bad top-level header"};
    return false;
  }
  if (m.type != mp::map) {
    f = {errc::malformed, std::string("top level is ") + type_name(m.type) + ", expected map"};
    return false;
  }
  std::uint16_t seen = 0;
  // Optional fields are reset only at the end if absent, so a present `to` reuses its string.
  out.corr.reset();
  out.deadline_ns.reset();
  out.attempt.reset();
  out.gen.reset();
  out.body.clear();
  for (std::uint64_t k = 0; k < m.u; ++k) {
    item ki, vi;
    if (errc e = r.next(ki); e != errc{}) { f = {e, "bad key header"}; return false; }
    if (ki.type != mp::str) {
      f = {errc::malformed, std::string("map key is ") + type_name(ki.type) + ", expected str"};
      return false;
    }
    const std::string_view key(reinterpret_cast<const char*>(ki.data), ki.len);
    if (errc e = r.next(vi); e != errc{}) {
      f = bad(e, key, e == errc::truncated ? "value truncated" : "bad value header");
      return false;
    }
    const std::uint16_t bit = key_of(key);
    if (bit == 0) { // unknown key: skip its value, however nested, within max_depth
      if (errc e = skip_value(r, vi, lim.max_depth); e != errc{}) {
        f = bad(e, key, e == errc::limit_exceeded ? "unknown key nested deeper than max_depth"
                                                  : "unknown key's value is invalid");
        return false;
      }
      continue;
    }
    if (seen & bit) { f = bad(errc::invalid_value, key, "duplicate key"); return false; }
    seen |= bit;
    const bool nil = vi.type == mp::nil;
    std::uint64_t u = 0;
    switch (bit) {
    case k_v:
      if (!as_uint(key, vi, UINT64_MAX, u, f)) return false;
      if (u != 1) {
        f = {errc::unsupported_version, "envelope version " + std::to_string(u) + ", expected 1"};
        return false;
      }
      out.v = 1;
      break;
    case k_id:
      if (!as_id(key, vi, out.id, f)) return false;
      break;
    case k_kind:
      if (!as_str(key, vi, 1, max_kind_bytes, out.kind, f)) return false;
      break;
    case k_from:
      if (!as_str(key, vi, 1, max_address_bytes, out.from, f)) return false;
      break;
    case k_to:
      if (nil) { seen &= static_cast<std::uint16_t>(~k_to_present); break; }
      if (!out.to) out.to.emplace();
      if (!as_str(key, vi, 0, max_address_bytes, *out.to, f)) return false;
      seen |= k_to_present;
      break;
    case k_corr:
      if (nil) break;
      if (!as_id(key, vi, out.corr.emplace(), f)) return false;
      break;
    case k_ts:
      if (!as_uint(key, vi, UINT64_MAX, u, f)) return false;
      out.ts_ns = u;
      break;
    case k_deadline:
      if (nil) break;
      if (!as_uint(key, vi, UINT64_MAX, u, f)) return false;
      out.deadline_ns = u;
      break;
    case k_attempt:
      if (nil) break;
      if (!as_uint(key, vi, UINT32_MAX, u, f)) return false;
      if (u == 0) { f = bad(errc::invalid_value, key, "attempts count from 1"); return false; }
      out.attempt = static_cast<std::uint32_t>(u);
      break;
    case k_gen:
      if (nil) break;
      if (!as_uint(key, vi, UINT64_MAX, u, f)) return false;
      out.gen = u;
      break;
    case k_hdr:
      if (!decode_hdr(r, vi, lim, out.hdr, f)) return false;
      seen |= k_hdr_present;
      break;
    case k_body:
      if (nil) break;
      if (vi.type != mp::bin) { f = wrong(key, vi, "bin"); return false; }
      out.body.assign(vi.data, vi.data + vi.len);
      break;
    }
  }
  if (!r.done()) {
    f = {errc::malformed, std::to_string(r.remaining()) + " trailing bytes after the map"};
    return false;
  }
  if (!(seen & k_to_present)) out.to.reset();
  if (!(seen & k_hdr_present)) out.hdr.clear();
  for (std::uint16_t bit : {k_v, k_id, k_kind, k_from, k_ts}) {
    if (!(seen & bit)) {
      f = {errc::missing_field, std::string("required key '") + key_name(bit) + "' is missing"};
      return false;
    }
  }
  return true;
}

} // namespace

// -- public API ---------------------------------------------------------------------------------

namespace {
// Everything but "hdr". O(1).
std::size_t fixed_size(const envelope& e) noexcept {
  std::size_t n = map_header_size(entry_count(e));
  n += 2 + uint_size(1);                                  // "v"
  n += 3 + bin_size(16);                                  // "id"
  n += 5 + str_size(e.kind.size());                       // "kind"
  n += 5 + str_size(e.from.size());                       // "from"
  if (e.to) n += 3 + str_size(e.to->size());              // "to"
  if (e.corr) n += 5 + bin_size(16);                      // "corr"
  n += 3 + uint_size(e.ts_ns);                            // "ts"
  if (e.deadline_ns) n += 9 + uint_size(*e.deadline_ns);  // "deadline"
  if (e.attempt) n += 8 + uint_size(*e.attempt);          // "attempt"
  if (e.gen) n += 4 + uint_size(*e.gen);                  // "gen"
  if (!e.body.empty()) n += 5 + bin_size(e.body.size());  // "body"
  return n;
}
} // namespace

std::size_t encoded_size(const envelope& e) noexcept {
  std::size_t n = fixed_size(e);
  if (!e.hdr.empty()) {
    n += 4 + map_header_size(e.hdr.size());               // "hdr"
    for (const auto& [k, v] : e.hdr) n += str_size(k.size()) + str_size(v.size());
  }
  return n;
}

result<std::size_t> detail::validated_size(const envelope& e, const decode_limits& lim) {
  if (e.v != 1)
    return fail(errc::unsupported_version, "envelope.v is " + std::to_string(e.v) + ", must be 1");
  if (e.kind.empty()) return fail(errc::invalid_argument, "kind is empty");
  if (e.from.empty()) return fail(errc::invalid_argument, "from is empty");
  // The size is summed during the same pass (one walk over the headers instead of three).
  auto check_str = [](const char* key, std::string_view s, std::size_t max) -> result<void> {
    if (s.size() > max)
      return fail(errc::invalid_value, std::string(key) + " is " + std::to_string(s.size()) +
                                           " bytes, limit " + std::to_string(max));
    if (!valid_utf8(s)) return fail(errc::invalid_value, std::string(key) + " is not UTF-8");
    return {};
  };
  if (auto r = check_str("kind", e.kind, max_kind_bytes); !r) return unexpected_error(r.error());
  if (auto r = check_str("from", e.from, max_address_bytes); !r) return unexpected_error(r.error());
  if (e.to)
    if (auto r = check_str("to", *e.to, max_address_bytes); !r) return unexpected_error(r.error());
  if (e.attempt && *e.attempt == 0) return fail(errc::invalid_value, "attempt is 0; attempts count from 1");
  if (e.hdr.size() > lim.max_hdr_entries)
    return fail(errc::limit_exceeded, "hdr has " + std::to_string(e.hdr.size()) +
                                          " entries, limit " + std::to_string(lim.max_hdr_entries));
  std::size_t total = 0;
  std::size_t hdr_size = 0;
  for (const auto& [k, v] : e.hdr) {
    if (k.empty()) return fail(errc::invalid_value, "hdr has an empty header name");
    if (auto r = check_str("hdr name", k, max_hdr_key_bytes); !r) return unexpected_error(r.error());
    if (auto r = check_str("hdr value", v, max_hdr_value_bytes); !r) return unexpected_error(r.error());
    total += k.size() + v.size();
    hdr_size += str_size(k.size()) + str_size(v.size());
  }
  if (total > lim.max_hdr_bytes)
    return fail(errc::limit_exceeded, "hdr holds " + std::to_string(total) + " bytes, limit " +
                                          std::to_string(lim.max_hdr_bytes));
  const std::size_t size = fixed_size(e) + (e.hdr.empty() ? 0 : 4 + map_header_size(e.hdr.size()) + hdr_size);
  if (size > effective_max_frame(lim))
    return fail(errc::frame_too_large, "encoded envelope is " + std::to_string(size) +
                                           " bytes, limit " + std::to_string(effective_max_frame(lim)));
  return size;
}

result<void> validate(const envelope& e, const decode_limits& lim) {
  if (auto r = detail::validated_size(e, lim); !r) return unexpected_error(std::move(r).error());
  return {};
}

result<std::size_t> encode_to(const envelope& e, std::span<std::uint8_t> out,
                              const decode_limits& lim) {
  auto size = detail::validated_size(e, lim);
  if (!size) return size;
  if (out.size() < *size)
    return fail(errc::invalid_argument, "output buffer holds " + std::to_string(out.size()) +
                                            " bytes, encoding needs " + std::to_string(*size));
  return detail::encode_validated(e, out.first(*size));
}

std::size_t detail::encode_validated(const envelope& e, std::span<std::uint8_t> out) noexcept {
  span_writer w{out.data(), out.data() + out.size()};
  msgpack::packer<span_writer> pk(w);
  // Keys are fixstr constants: written pre-encoded in one piece ("\xa2" "id" = fixstr 2 + "id").
  auto key = [&w](std::string_view encoded) { w.write(encoded.data(), encoded.size()); };
  auto str = [&pk](std::string_view v) {
    pk.pack_str(static_cast<std::uint32_t>(v.size()));
    pk.pack_str_body(v.data(), static_cast<std::uint32_t>(v.size()));
  };
  auto bin = [&pk](const std::uint8_t* p, std::size_t n) {
    pk.pack_bin(static_cast<std::uint32_t>(n));
    pk.pack_bin_body(reinterpret_cast<const char*>(p), static_cast<std::uint32_t>(n));
  };
  // Keys in the order of ENVELOPE.md §3; "v" first so a decoder can reject other versions early.
  pk.pack_map(static_cast<std::uint32_t>(entry_count(e)));
  key("\xa1" "v");
  pk.pack_uint64(1);
  key("\xa2" "id");
  bin(e.id.data(), e.id.size());
  key("\xa4" "kind");
  str(e.kind);
  key("\xa4" "from");
  str(e.from);
  if (e.to) { key("\xa2" "to"); str(*e.to); }
  if (e.corr) { key("\xa4" "corr"); bin(e.corr->data(), e.corr->size()); }
  key("\xa2" "ts");
  pk.pack_uint64(e.ts_ns);
  if (e.deadline_ns) { key("\xa8" "deadline"); pk.pack_uint64(*e.deadline_ns); }
  if (e.attempt) { key("\xa7" "attempt"); pk.pack_uint64(*e.attempt); }
  if (e.gen) { key("\xa3" "gen"); pk.pack_uint64(*e.gen); }
  if (!e.hdr.empty()) {
    key("\xa3" "hdr");
    pk.pack_map(static_cast<std::uint32_t>(e.hdr.size()));
    for (const auto& [k, v] : e.hdr) { str(k); str(v); }
  }
  if (!e.body.empty()) { key("\xa4" "body"); bin(e.body.data(), e.body.size()); }
  // `out` was sized by validated_size; a mismatch would be a bug in the size functions, which
  // the tests and the fuzz target check on every input.
  assert(!w.overflow && w.p == out.data() + out.size());
  return static_cast<std::size_t>(w.p - out.data());
}

result<void> encode(const envelope& e, std::vector<std::uint8_t>& out, const decode_limits& lim) {
  auto size = detail::validated_size(e, lim);
  if (!size) {
    out.clear();
    return unexpected_error(std::move(size).error());
  }
  out.resize(*size);
  detail::encode_validated(e, out);
  return {};
}

result<std::vector<std::uint8_t>> encode(const envelope& e, const decode_limits& lim) {
  std::vector<std::uint8_t> out;
  if (auto r = encode(e, out, lim); !r) return unexpected_error(std::move(r).error());
  return out;
}

result<void> decode_into(std::span<const std::uint8_t> frame, envelope& out,
                         const decode_limits& lim) {
  decode_failure f{errc{}, {}};
  if (decode_impl(frame, out, lim, f)) return {};
  // A frame of another version may break v1 rules before its "v" is read; report the version.
  if (f.code != errc::unsupported_version && f.code != errc::frame_too_large) {
    if (auto v = find_version(frame, lim); v && *v != 1)
      return fail(errc::unsupported_version, "envelope version " + std::to_string(*v) + ", expected 1");
  }
  return fail(f.code, std::move(f.message));
}

result<envelope> decode(std::span<const std::uint8_t> frame, const decode_limits& lim) {
  envelope e;
  if (auto r = decode_into(frame, e, lim); !r) return unexpected_error(std::move(r).error());
  return e;
}

} // namespace shoal::transport
