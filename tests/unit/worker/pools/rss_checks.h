// Whether the process's RSS is a trustworthy measure in this build: the
// sanitizers' allocators, quarantines and shadow memory move it on their own,
// so tests compare RSS drops with counted bytes only in plain builds.
#ifndef POOLD_TESTS_UNIT_WORKER_POOLS_RSS_CHECKS_H_
#define POOLD_TESTS_UNIT_WORKER_POOLS_RSS_CHECKS_H_

namespace poold::pools {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool kRssIsMeaningful = false;
#else
inline constexpr bool kRssIsMeaningful = true;
#endif

}  // namespace poold::pools

#endif  // POOLD_TESTS_UNIT_WORKER_POOLS_RSS_CHECKS_H_
