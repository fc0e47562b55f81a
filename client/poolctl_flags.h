// The flags of poolctl, defined in poolctl_flags.cc. Global flags apply to
// every subcommand; the others only to the subcommands that list them (see
// subcommands.cc).
#ifndef POOLD_CLIENT_POOLCTL_FLAGS_H_
#define POOLD_CLIENT_POOLCTL_FLAGS_H_

#include <cstdint>
#include <string>

#include "absl/flags/declare.h"
#include "absl/time/time.h"

// Global.
ABSL_DECLARE_FLAG(std::string, target);
ABSL_DECLARE_FLAG(absl::Duration, timeout);
ABSL_DECLARE_FLAG(absl::Duration, connect_timeout);
ABSL_DECLARE_FLAG(std::string, tls_ca_file);
ABSL_DECLARE_FLAG(std::string, tls_cert_file);
ABSL_DECLARE_FLAG(std::string, tls_key_file);
ABSL_DECLARE_FLAG(std::string, tls_server_name);
ABSL_DECLARE_FLAG(std::string, output);

// stats
ABSL_DECLARE_FLAG(bool, classes);
ABSL_DECLARE_FLAG(bool, history);
ABSL_DECLARE_FLAG(bool, consistent);
// watch
ABSL_DECLARE_FLAG(absl::Duration, interval);
ABSL_DECLARE_FLAG(uint64_t, iterations);
// analyze, defrag
ABSL_DECLARE_FLAG(std::string, pools);
// alloc, write
ABSL_DECLARE_FLAG(std::string, size);
ABSL_DECLARE_FLAG(std::string, data);
// read, write
ABSL_DECLARE_FLAG(uint64_t, offset);
ABSL_DECLARE_FLAG(uint64_t, length);
ABSL_DECLARE_FLAG(std::string, out);
// health
ABSL_DECLARE_FLAG(std::string, service);
// load
ABSL_DECLARE_FLAG(uint64_t, count);
ABSL_DECLARE_FLAG(std::string, sizes);
ABSL_DECLARE_FLAG(double, free_fraction);
ABSL_DECLARE_FLAG(int32_t, concurrency);
ABSL_DECLARE_FLAG(int32_t, batch);
ABSL_DECLARE_FLAG(uint64_t, seed);
ABSL_DECLARE_FLAG(bool, progress);
ABSL_DECLARE_FLAG(std::string, keep_handles);

#endif  // POOLD_CLIENT_POOLCTL_FLAGS_H_
