// SipHash: a keyed pseudo-random function of a byte string (Aumasson and
// Bernstein, 2012). poold uses SipHash-1-3 (one compression round per word,
// three finalization rounds) for handle check tags and owner masks: without
// the 128-bit key, an output cannot be predicted from other outputs, so a
// handle cannot be forged from handles one holds.
#ifndef POOLD_WORKER_POOLS_SIP_HASH_H_
#define POOLD_WORKER_POOLS_SIP_HASH_H_

#include <bit>
#include <cstdint>
#include <cstring>

#include "absl/strings/string_view.h"

namespace poold::pools {

static_assert(std::endian::native == std::endian::little,
              "SipHash reads words as little-endian");

// A 128-bit SipHash key.
struct SipKey {
  uint64_t k0 = 0;
  uint64_t k1 = 0;
};

namespace sip_internal {

struct State {
  uint64_t v0, v1, v2, v3;

  explicit State(const SipKey& key)
      : v0(key.k0 ^ 0x736f6d6570736575ULL),
        v1(key.k1 ^ 0x646f72616e646f6dULL),
        v2(key.k0 ^ 0x6c7967656e657261ULL),
        v3(key.k1 ^ 0x7465646279746573ULL) {}

  void Round() {
    v0 += v1;
    v1 = std::rotl(v1, 13) ^ v0;
    v0 = std::rotl(v0, 32);
    v2 += v3;
    v3 = std::rotl(v3, 16) ^ v2;
    v0 += v3;
    v3 = std::rotl(v3, 21) ^ v0;
    v2 += v1;
    v1 = std::rotl(v1, 17) ^ v2;
    v2 = std::rotl(v2, 32);
  }

  template <int kCompressionRounds>
  void Absorb(uint64_t word) {
    v3 ^= word;
    for (int i = 0; i < kCompressionRounds; ++i) Round();
    v0 ^= word;
  }

  template <int kFinalizationRounds>
  uint64_t Finish() {
    v2 ^= 0xff;
    for (int i = 0; i < kFinalizationRounds; ++i) Round();
    return v0 ^ v1 ^ v2 ^ v3;
  }
};

}  // namespace sip_internal

// SipHash-c-d of `data` under `key`. (SipHash-2-4 is the paper's reference
// variant; the tests check it against the paper's vectors.)
template <int kCompressionRounds, int kFinalizationRounds>
uint64_t SipHash(const SipKey& key, absl::string_view data) {
  sip_internal::State state(key);
  const size_t whole = data.size() & ~size_t{7};
  for (size_t i = 0; i < whole; i += 8) {
    uint64_t word;
    std::memcpy(&word, data.data() + i, 8);
    state.Absorb<kCompressionRounds>(word);
  }
  uint64_t last = uint64_t{data.size() & 0xff} << 56;
  for (size_t i = whole; i < data.size(); ++i) {
    last |= uint64_t{static_cast<unsigned char>(data[i])} << (8 * (i - whole));
  }
  state.Absorb<kCompressionRounds>(last);
  return state.Finish<kFinalizationRounds>();
}

// SipHash-1-3 of one 64-bit word (its 8 little-endian bytes), without a
// detour through memory: the handle tags' hot path.
inline uint64_t SipHash13(const SipKey& key, uint64_t word) {
  sip_internal::State state(key);
  state.Absorb<1>(word);
  state.Absorb<1>(uint64_t{8} << 56);
  return state.Finish<3>();
}

// SipHash-1-3 of a byte string.
inline uint64_t SipHash13(const SipKey& key, absl::string_view data) {
  return SipHash<1, 3>(key, data);
}

}  // namespace poold::pools

#endif  // POOLD_WORKER_POOLS_SIP_HASH_H_
