// libFuzzer target for the envelope decoder (bench/run.sh fuzz).
//
// Every input is decoded. The decoder must never crash, read out of bounds (ASan), hit UB (UBSan)
// or allocate beyond the frame size. When an input decodes, its re-encoding must decode to an
// equal envelope, re-encode to the same bytes (canonical form), and be no larger than the
// input's limit allows.

#include "transport/codec.hpp"

#include <cstdint>
#include <cstdlib>
#include <span>
#include <vector>

using namespace shoal::transport;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> frame(data, size);
  auto first = decode(frame);
  if (!first) {
    // Every failure carries a defined code and a message.
    if (static_cast<int>(first.error().code) < 1 || static_cast<int>(first.error().code) > 9 ||
        first.error().message.empty())
      std::abort();
    return 0;
  }
  std::vector<std::uint8_t> once;
  if (!encode(*first, once)) std::abort(); // whatever decodes must re-encode
  if (once.size() != encoded_size(*first)) std::abort();
  auto second = decode(once);
  if (!second || !(*second == *first)) std::abort();
  std::vector<std::uint8_t> twice;
  if (!encode(*second, twice) || twice != once) std::abort();
  return 0;
}
