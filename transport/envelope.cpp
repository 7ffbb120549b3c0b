#include "transport/envelope.hpp"

#include <random>

namespace shoal::transport {

message_id new_message_id() {
  // One 64-bit Mersenne Twister per thread, seeded from the OS; ids need uniqueness, not secrecy.
  thread_local std::mt19937_64 gen{[] {
    std::random_device rd;
    std::seed_seq seq{rd(), rd(), rd(), rd()};
    return std::mt19937_64(seq);
  }()};
  message_id id;
  for (int half = 0; half < 2; ++half) {
    auto x = gen();
    for (int i = 0; i < 8; ++i)
      id[half * 8 + i] = static_cast<std::uint8_t>(x >> (8 * i));
  }
  return id;
}

std::string to_hex(const message_id& id) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out(32, '0');
  for (std::size_t i = 0; i < id.size(); ++i) {
    out[2 * i] = digits[id[i] >> 4];
    out[2 * i + 1] = digits[id[i] & 0xf];
  }
  return out;
}

} // namespace shoal::transport
