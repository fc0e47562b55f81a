// ScopedFd: a file descriptor closed when it goes out of scope.
#ifndef POOLD_SERVER_SCOPED_FD_H_
#define POOLD_SERVER_SCOPED_FD_H_

#include <unistd.h>

#include <utility>

namespace poold {

class ScopedFd {
 public:
  ScopedFd() = default;
  explicit ScopedFd(int fd) : fd_(fd) {}
  ~ScopedFd() { Reset(); }
  ScopedFd(ScopedFd&& other) noexcept : fd_(other.Release()) {}
  ScopedFd& operator=(ScopedFd&& other) noexcept {
    if (this != &other) {
      Reset();
      fd_ = other.Release();
    }
    return *this;
  }
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;

  // The descriptor, or -1.
  int get() const { return fd_; }

  // Gives the descriptor up without closing it; -1 from then on.
  int Release() { return std::exchange(fd_, -1); }

  // Closes the descriptor (if any); -1 from then on.
  void Reset() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

}  // namespace poold

#endif  // POOLD_SERVER_SCOPED_FD_H_
