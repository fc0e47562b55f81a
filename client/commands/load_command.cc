// poolctl load: allocate --count blocks with --sizes, fill them, free
// --free_fraction of them at random; prints a summary. Fragments a server
// on purpose, so defragmentation can be watched.
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/commands/commands.h"
#include "client/exit_codes.h"
#include "client/human_units.h"
#include "client/load_generator.h"
#include "client/poolctl_flags.h"
#include "client/size_distribution.h"

namespace poold::client {
namespace {

// One progress line on stderr, rewritten in place.
void ShowProgress(const LoadProgress& progress) {
  const double percent =
      progress.total == 0 ? 100.0 : 100.0 * progress.done / progress.total;
  std::cerr << absl::StrFormat("\r%-8s %llu/%llu blocks (%.0f%%), %s, %s   ",
                               progress.phase, progress.done, progress.total,
                               percent, HumanDuration(progress.elapsed),
                               HumanRate(progress.done, progress.elapsed));
  if (progress.finished) std::cerr << "\n";
  std::cerr << std::flush;
}

absl::Status WriteHandles(const std::string& path,
                          const std::vector<uint64_t>& handles) {
  std::ofstream out(path, std::ios::trunc);
  for (uint64_t handle : handles) out << handle << '\n';
  out.close();
  if (!out) {
    return absl::DataLossError(
        absl::StrCat("cannot write the kept handles to ", path));
  }
  return absl::OkStatus();
}

}  // namespace

int RunLoad(CommandEnv& env, const Args& /*args*/) {
  absl::StatusOr<SizeDistribution> sizes =
      SizeDistribution::Parse(absl::GetFlag(FLAGS_sizes));
  if (!sizes.ok()) return env.UsageError(sizes.status());
  LoadOptions options;
  options.count = absl::GetFlag(FLAGS_count);
  options.sizes = *std::move(sizes);
  options.free_fraction = absl::GetFlag(FLAGS_free_fraction);
  options.concurrency = absl::GetFlag(FLAGS_concurrency);
  options.batch = absl::GetFlag(FLAGS_batch);
  options.seed = absl::GetFlag(FLAGS_seed);
  options.timeout = env.client().timeout();
  absl::StatusOr<LoadGenerator> generator =
      LoadGenerator::Create(env.client().channel(), std::move(options));
  if (!generator.ok()) return env.UsageError(generator.status());
  if (absl::GetFlag(FLAGS_progress) || isatty(STDERR_FILENO) == 1) {
    generator->set_progress_callback(&ShowProgress, absl::Milliseconds(200));
  }

  if (int code = env.Connect(); code != kExitOk) return code;
  LoadSummary summary;
  const absl::Status run = generator->Run(&summary);

  // Report what was done even when a call failed: the blocks left behind
  // stay allocated on the server.
  int code = env.Print(env.formatter().Load(summary));
  const std::string keep_path = absl::GetFlag(FLAGS_keep_handles);
  if (!keep_path.empty()) {
    absl::Status kept = WriteHandles(keep_path, summary.kept_handles);
    if (!kept.ok()) code = env.Failed(kept);
  }
  if (!run.ok()) return env.Failed(run);
  return code;
}

}  // namespace poold::client
