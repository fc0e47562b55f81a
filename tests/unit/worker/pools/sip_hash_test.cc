// Tests of SipHash: the reference variant (2-4) against the vectors of the
// SipHash paper, and the one-word fast path of SipHash-1-3 against the
// general function.
#include "worker/pools/sip_hash.h"

#include <cstdint>
#include <cstring>
#include <string>

#include "gtest/gtest.h"

namespace poold::pools {
namespace {

// The paper's key: bytes 00 01 .. 0f.
constexpr SipKey kPaperKey{0x0706050403020100ULL, 0x0f0e0d0c0b0a0908ULL};

// Bytes 00 01 .. n-1, the paper's messages.
std::string PaperMessage(int n) {
  std::string message;
  for (int i = 0; i < n; ++i) message.push_back(static_cast<char>(i));
  return message;
}

TEST(SipHashTest, SipHash24MatchesThePapersVectors) {
  EXPECT_EQ((SipHash<2, 4>(kPaperKey, PaperMessage(0))), 0x726fdb47dd0e0e31ULL);
  EXPECT_EQ((SipHash<2, 4>(kPaperKey, PaperMessage(1))), 0x74f839c593dc67fdULL);
  EXPECT_EQ((SipHash<2, 4>(kPaperKey, PaperMessage(8))), 0x93f5f5799a932462ULL);
  // The worked example of the paper's appendix.
  EXPECT_EQ((SipHash<2, 4>(kPaperKey, PaperMessage(15))),
            0xa129ca6149be45e5ULL);
}

TEST(SipHashTest, OneWordPathEqualsTheByteString) {
  for (uint64_t word :
       {uint64_t{0}, uint64_t{1}, uint64_t{0x0123456789abcdef}, ~uint64_t{0}}) {
    char bytes[8];
    std::memcpy(bytes, &word, 8);
    EXPECT_EQ(SipHash13(kPaperKey, word),
              SipHash13(kPaperKey, std::string(bytes, 8)));
  }
}

TEST(SipHashTest, EveryKeyBitMatters) {
  const uint64_t base = SipHash13(kPaperKey, uint64_t{42});
  for (int bit = 0; bit < 128; ++bit) {
    SipKey key = kPaperKey;
    (bit < 64 ? key.k0 : key.k1) ^= uint64_t{1} << (bit % 64);
    EXPECT_NE(SipHash13(key, uint64_t{42}), base) << bit;
  }
}

}  // namespace
}  // namespace poold::pools
