#include "transport/envelope.hpp"

#include <chrono>
#include <random>

namespace shoal::transport {

message_id new_message_id() {
  // One 64-bit Mersenne Twister per thread, seeded from the OS; ids need uniqueness, not secrecy.
  thread_local std::mt19937_64 gen{[] {
    std::random_device rd;
    std::seed_seq seq{rd(), rd(), rd(), rd()};
    return std::mt19937_64(seq);
  }()};
  const auto ms = static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                std::chrono::system_clock::now().time_since_epoch())
                                                .count());
  message_id id;
  for (int i = 0; i < 6; ++i) // 48-bit big-endian time prefix: later ids sort later
    id[i] = static_cast<std::uint8_t>(ms >> (8 * (5 - i)));
  const std::uint64_t a = gen(), b = gen();
  for (int i = 0; i < 8; ++i)
    id[6 + i] = static_cast<std::uint8_t>(a >> (8 * i));
  id[14] = static_cast<std::uint8_t>(b);
  id[15] = static_cast<std::uint8_t>(b >> 8);
  return id;
}

std::uint64_t unix_now_ns() noexcept {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
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
