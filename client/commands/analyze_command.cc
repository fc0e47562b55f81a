// poolctl analyze [--pools=...]: what a defragmentation would do now.
#include "absl/flags/flag.h"
#include "client/commands/commands.h"
#include "client/exit_codes.h"
#include "client/poolctl_args.h"
#include "client/poolctl_flags.h"

namespace poold::client {

int RunAnalyze(CommandEnv& env, const Args& /*args*/) {
  absl::StatusOr<std::vector<v1::Pool>> pools =
      ParsePools(absl::GetFlag(FLAGS_pools));
  if (!pools.ok()) return env.UsageError(pools.status());
  if (int code = env.Connect(); code != kExitOk) return code;
  absl::StatusOr<v1::FragmentationReport> report =
      env.client().AnalyzeFragmentation(*pools);
  if (!report.ok()) return env.Failed(report.status());
  return env.Print(env.formatter().Analysis(*report));
}

}  // namespace poold::client
