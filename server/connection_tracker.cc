// ConnectionTracker: admission against the limits, and finding the
// connections gRPC has closed by their descriptors' identity.
#include "server/connection_tracker.h"

#include <sys/stat.h>

#include <cerrno>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace poold {

absl::Status ConnectionTracker::Admit(int fd, const std::string& address,
                                      absl::Time now, Limit* reached) {
  struct stat st;
  if (fstat(fd, &st) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "fstat of connection ", fd, ": ",
        std::error_code(errno, std::generic_category()).message()));
  }
  // The number is free again: whatever held it before has been closed.
  if (auto it = by_fd_.find(fd); it != by_fd_.end()) Forget(it);
  if (Full(address) && now - last_prune_ >= kFullPruneInterval) Prune(now);
  if (limits_.max_connections > 0 && by_fd_.size() >= limits_.max_connections) {
    if (reached != nullptr) *reached = Limit::kMaxConnections;
    return absl::ResourceExhaustedError(
        absl::StrCat(by_fd_.size(),
                     " connections open, the most allowed "
                     "(--max_connections)"));
  }
  if (limits_.max_per_address > 0 &&
      open_from(address) >= limits_.max_per_address) {
    if (reached != nullptr) *reached = Limit::kMaxPerAddress;
    return absl::ResourceExhaustedError(
        absl::StrCat(open_from(address), " connections open from ", address,
                     ", the most allowed from one address "
                     "(--max_connections_per_address)"));
  }
  by_fd_[fd] = Connection{st.st_dev, st.st_ino, address};
  ++per_address_[address];
  return absl::OkStatus();
}

size_t ConnectionTracker::Prune(absl::Time now) {
  last_prune_ = now;
  for (auto it = by_fd_.begin(); it != by_fd_.end();) {
    struct stat st;
    const bool same = fstat(it->first, &st) == 0 &&
                      st.st_dev == it->second.device &&
                      st.st_ino == it->second.inode;
    if (same) {
      ++it;
    } else {
      Forget(it++);
    }
  }
  return by_fd_.size();
}

size_t ConnectionTracker::open_from(const std::string& address) const {
  auto it = per_address_.find(address);
  return it == per_address_.end() ? 0 : it->second;
}

bool ConnectionTracker::Full(const std::string& address) const {
  return (limits_.max_connections > 0 &&
          by_fd_.size() >= limits_.max_connections) ||
         (limits_.max_per_address > 0 &&
          open_from(address) >= limits_.max_per_address);
}

void ConnectionTracker::Forget(
    absl::flat_hash_map<int, Connection>::iterator it) {
  auto count = per_address_.find(it->second.address);
  if (--count->second == 0) per_address_.erase(count);
  by_fd_.erase(it);
}

}  // namespace poold
