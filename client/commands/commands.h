// The poolctl subcommands. Each takes its positional arguments (the flags
// are read with absl::GetFlag), does its work through `env`, prints the
// result on stdout and returns the exit code (see exit_codes.h).
#ifndef POOLD_CLIENT_COMMANDS_COMMANDS_H_
#define POOLD_CLIENT_COMMANDS_COMMANDS_H_

#include <string>
#include <vector>

#include "client/commands/command_env.h"

namespace poold::client {

using Args = std::vector<std::string>;

// stats [--classes] [--history]: GetStats.
int RunStats(CommandEnv& env, const Args& args);
// analyze [--pools=...]: AnalyzeFragmentation.
int RunAnalyze(CommandEnv& env, const Args& args);
// defrag [--pools=...]: TriggerDefragmentation.
int RunDefrag(CommandEnv& env, const Args& args);
// alloc [--size=N] [--data=...]: Allocate.
int RunAlloc(CommandEnv& env, const Args& args);
// read HANDLE [--offset=N] [--length=N] [--out=FILE]: Read.
int RunRead(CommandEnv& env, const Args& args);
// write HANDLE [--offset=N] --data=...: Write.
int RunWrite(CommandEnv& env, const Args& args);
// free HANDLE: Free.
int RunFree(CommandEnv& env, const Args& args);
// health [--service=NAME]: grpc.health.v1.Health/Check.
int RunHealth(CommandEnv& env, const Args& args);
// watch [--interval=D] [--iterations=N] [--classes]: stats, refreshed.
int RunWatch(CommandEnv& env, const Args& args);
// load [--count --sizes --free_fraction ...]: the workload generator.
int RunLoad(CommandEnv& env, const Args& args);

}  // namespace poold::client

#endif  // POOLD_CLIENT_COMMANDS_COMMANDS_H_
