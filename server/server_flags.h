// server_flags: poold's command-line flags (abseil), defined once for every
// binary that runs a PooldServer (poold, and poold_bench_server for the
// benchmarks), so that they take the same flags with the same meaning and
// defaults. README.md documents them.
#ifndef POOLD_SERVER_SERVER_FLAGS_H_
#define POOLD_SERVER_SERVER_FLAGS_H_

#include "server/poold_server.h"

namespace poold {

// The options the flags ask for. Call after absl::ParseCommandLine.
PooldServer::Options ServerOptionsFromFlags();

}  // namespace poold

#endif  // POOLD_SERVER_SERVER_FLAGS_H_
