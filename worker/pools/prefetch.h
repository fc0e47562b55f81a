// PrefetchForRead: a hint to the CPU to bring a cache line in soon.
#ifndef POOLD_WORKER_POOLS_PREFETCH_H_
#define POOLD_WORKER_POOLS_PREFETCH_H_

namespace poold::pools {

// Asks the CPU to fetch the cache line of `address` into all its caches.
// Never faults and changes nothing, whatever the address. On x86-64 it is
// written as the instruction itself: GCC 12 drops some __builtin_prefetch
// calls whose address it computes from a member loaded in the same
// function (seen in HandleTable::PrefetchHandle).
inline void PrefetchForRead(const void* address) {
#if defined(__x86_64__)
  asm volatile("prefetcht0 (%0)" : : "r"(address));
#else
  __builtin_prefetch(address, 0, 3);
#endif
}

}  // namespace poold::pools

#endif  // POOLD_WORKER_POOLS_PREFETCH_H_
