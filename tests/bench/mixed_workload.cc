// MixedWorkload: the size mix and the interleaved schedule of frees.
#include "tests/bench/mixed_workload.h"

#include <cmath>
#include <cstring>
#include <random>

namespace poold::bench {
namespace {

constexpr double kSurvivors = 0.15;

// Log-uniform in [lo, hi).
uint32_t LogUniform(std::mt19937_64& rng, double lo, double hi) {
  std::uniform_real_distribution<double> u(std::log(lo), std::log(hi));
  return static_cast<uint32_t>(std::exp(u(rng)));
}

uint32_t RandomSize(std::mt19937_64& rng) {
  std::uniform_int_distribution<int> kind(0, 99);
  const int k = kind(rng);
  if (k < 80) return LogUniform(rng, 16, 1024);
  if (k < 99) return LogUniform(rng, 1024, 65536);
  return LogUniform(rng, 65536, 1 << 20);
}

int PoolOf(uint32_t size) { return size < 1024 ? 0 : size < 65536 ? 1 : 2; }

}  // namespace

MixedWorkload MixedWorkload::Make(uint64_t live_bytes, uint64_t seed) {
  MixedWorkload w;
  std::mt19937_64 rng(seed);
  std::bernoulli_distribution survives(kSurvivors);
  std::vector<uint8_t> survivor;
  while (w.live_bytes_ < live_bytes) {
    const uint32_t size = RandomSize(rng);
    w.sizes_.push_back(size);
    w.allocated_bytes_ += size;
    const bool keep = survives(rng);
    survivor.push_back(keep);
    if (keep) {
      w.live_bytes_ += size;
      ++w.live_blocks_;
      w.live_by_pool_[PoolOf(size)] += size;
    }
  }
  // Each freed block goes within the next eighth of the sequence.
  const uint32_t n = static_cast<uint32_t>(w.sizes_.size());
  const uint32_t window = std::max<uint32_t>(1, n / 8);
  std::uniform_int_distribution<uint32_t> delay(1, window);
  std::vector<std::vector<uint32_t>> frees_after(n);
  std::vector<uint32_t> at_end;
  for (uint32_t i = 0; i < n; ++i) {
    if (survivor[i]) continue;
    const uint64_t when = uint64_t{i} + delay(rng);
    if (when < n) {
      frees_after[when].push_back(i);
    } else {
      at_end.push_back(i);
    }
  }
  w.events_.reserve(2 * n);
  for (uint32_t i = 0; i < n; ++i) {
    w.events_.push_back({i, true});
    for (uint32_t j : frees_after[i]) w.events_.push_back({j, false});
  }
  for (uint32_t j : at_end) w.events_.push_back({j, false});
  return w;
}

void MixedWorkload::Fill(uint32_t block, uint64_t size, char* out) {
  std::memset(out, static_cast<int>(block * 31 + 7), size);
  std::memcpy(out, &block, std::min<uint64_t>(size, sizeof(block)));
}

}  // namespace poold::bench
