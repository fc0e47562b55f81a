// Definitions of poolctl's flags. Their help strings are what
// `poolctl --help` prints.
#include "client/poolctl_flags.h"

#include "absl/flags/flag.h"

ABSL_FLAG(std::string, target, "127.0.0.1:50051",
          "poold to talk to: host:port, [ipv6]:port, or unix:/path/to/socket");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(30),
          "deadline of each RPC, e.g. 500ms, 30s, 5m, or inf for none; a "
          "defrag of a large heap may need more than the default");
ABSL_FLAG(absl::Duration, connect_timeout, absl::Seconds(5),
          "how long to wait for the connection to poold before giving up "
          "(exit code 2)");
ABSL_FLAG(std::string, tls_ca_file, "",
          "connect over TLS, trusting the CAs in this PEM file for the "
          "server's certificate");
ABSL_FLAG(std::string, tls_cert_file, "",
          "this client's PEM certificate, for mutual TLS (with "
          "--tls_key_file)");
ABSL_FLAG(std::string, tls_key_file, "", "the PEM key of --tls_cert_file");
ABSL_FLAG(std::string, tls_server_name, "",
          "the name to expect in the server's certificate, when --target's "
          "host is not that name (an IP address, say); implies TLS");
ABSL_FLAG(std::string, output, "table",
          "table (readable) or json (the protobuf JSON mapping of the "
          "response, for scripts)");

ABSL_FLAG(bool, classes, false, "also print the statistics of each size class");
ABSL_FLAG(bool, history, false,
          "also print the server's last defragmentations (any origin: RPC, "
          "memory limit, automatic), oldest first");
ABSL_FLAG(bool, consistent, false,
          "stats: ask the worker, after every request queued before this one "
          "(exact after your own writes, but it waits behind them), instead "
          "of reading its latest snapshot (at most 100 ms old)");
ABSL_FLAG(absl::Duration, interval, absl::Seconds(1),
          "watch: time between two refreshes");
ABSL_FLAG(uint64_t, iterations, 0,
          "watch: refreshes before exiting; 0: until interrupted");
ABSL_FLAG(std::string, pools, "",
          "comma-separated pools: small, medium, large; empty or all: every "
          "pool");
ABSL_FLAG(std::string, size, "",
          "block size in bytes, or with a binary unit (4KiB, 1MiB); may be "
          "omitted with --data, then the block is as long as the data");
ABSL_FLAG(std::string, data, "",
          "bytes to store: TEXT, @FILE for the contents of FILE, or @- for "
          "standard input");
ABSL_FLAG(uint64_t, offset, 0, "byte offset in the block");
ABSL_FLAG(uint64_t, length, 0, "bytes to read; 0: to the end of the block");
ABSL_FLAG(std::string, out, "",
          "write the bytes read to this file instead of standard output");
ABSL_FLAG(std::string, service, "",
          "health service to check: empty for the server as a whole, or "
          "poold.v1.PoolService");
ABSL_FLAG(uint64_t, count, 10000, "blocks to allocate");
ABSL_FLAG(std::string, sizes, "100:150",
          "block sizes: SIZE or MIN:MAX (uniform, inclusive), comma-separated "
          "for a mix where each range is equally likely, e.g. "
          "100:150,4KiB:8KiB,1MiB");
ABSL_FLAG(double, free_fraction, 0.5,
          "fraction of the allocated blocks to free again, chosen at random, "
          "in [0, 1]");
ABSL_FLAG(int32_t, concurrency, 32, "RPCs in flight at once (1..1024)");
ABSL_FLAG(int32_t, batch, 64,
          "blocks per call (1..1024): above 1, Batch calls of up to this many "
          "allocations or frees (an allocation a batch was refused for lack "
          "of room is made again alone, which waits for the server to make "
          "room); 1: one Allocate or Free call per block");
ABSL_FLAG(uint64_t, seed, 1,
          "seed of the random sizes and choice of blocks to free; the same "
          "seed gives the same workload");
ABSL_FLAG(bool, progress, false,
          "show progress on stderr even when it is not a terminal");
ABSL_FLAG(std::string, keep_handles, "",
          "write the handles of the blocks left allocated to this file, one "
          "decimal handle per line");
