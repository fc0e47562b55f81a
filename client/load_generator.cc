// LoadGenerator: two phases of asynchronous unary calls on one completion
// queue, driven by the calling thread alone.
#include "client/load_generator.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <type_traits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "client/status_convert.h"
#include "grpcpp/completion_queue.h"

namespace poold::client {
namespace {

// Block i holds kPattern-periodic bytes starting at phase i % kPatternPeriod,
// so neighbouring blocks differ and a moved block can be recognised.
constexpr size_t kPatternPeriod = 251;

std::string MakePattern(uint64_t max_size) {
  std::string pattern(max_size + kPatternPeriod, '\0');
  for (size_t i = 0; i < pattern.size(); ++i) {
    pattern[i] = static_cast<char>(i % kPatternPeriod);
  }
  return pattern;
}

// Hands each OK result of a batch for items [begin, end) to `take`, and
// each RESOURCE_EXHAUSTED one to `refused` when it is given; returns the
// first other failed operation's status (the others are still taken).
template <typename Take, typename Refused = std::nullptr_t>
absl::Status TakeBatchResults(const v1::BatchResponse& response, uint64_t begin,
                              uint64_t end, Take take,
                              Refused refused = nullptr) {
  if (static_cast<uint64_t>(response.results_size()) != end - begin) {
    return absl::InternalError(
        absl::StrCat("the server answered ", response.results_size(),
                     " results for ", end - begin, " operations"));
  }
  absl::Status first_error;
  for (uint64_t i = begin; i < end; ++i) {
    const v1::BatchResult& result = response.results(i - begin);
    const auto code = static_cast<absl::StatusCode>(result.code());
    if (code == absl::StatusCode::kOk) {
      take(i, result);
    } else if constexpr (!std::is_same_v<Refused, std::nullptr_t>) {
      if (code == absl::StatusCode::kResourceExhausted) {
        refused(i);
        continue;
      }
    }
    if (code != absl::StatusCode::kOk && first_error.ok()) {
      first_error = absl::Status(code, result.message());
    }
  }
  return first_error;
}

}  // namespace

template <typename Request, typename Response>
struct LoadGenerator::Call {
  uint64_t index = 0;
  uint64_t bytes = 0;
  uint64_t items = 1;
  grpc::ClientContext context;
  Request request;
  Response response;
  grpc::Status status;
  std::unique_ptr<grpc::ClientAsyncResponseReader<Response>> reader;
};

absl::StatusOr<LoadGenerator> LoadGenerator::Create(
    std::shared_ptr<grpc::Channel> channel, LoadOptions options) {
  if (options.concurrency < 1 || options.concurrency > kMaxConcurrency) {
    return absl::InvalidArgumentError(absl::StrCat("concurrency must be in 1..",
                                                   kMaxConcurrency, ", not ",
                                                   options.concurrency));
  }
  if (!(options.free_fraction >= 0.0 && options.free_fraction <= 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "free fraction must be in [0, 1], not ", options.free_fraction));
  }
  if (options.batch < 1 || options.batch > kMaxBatch) {
    return absl::InvalidArgumentError(absl::StrCat(
        "batch must be in 1..", kMaxBatch, ", not ", options.batch));
  }
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("timeout must be positive");
  }
  const uint64_t max_message =
      options.max_message_bytes > 0
          ? static_cast<uint64_t>(options.max_message_bytes)
          : 0;
  if (options.sizes.max_size() + kMessageOverhead > max_message) {
    return absl::InvalidArgumentError(absl::StrCat(
        "blocks of ", options.sizes.max_size(),
        " bytes do not fit in one message (at most ",
        max_message > kMessageOverhead ? max_message - kMessageOverhead : 0,
        " bytes)"));
  }
  return LoadGenerator(std::move(channel), std::move(options));
}

LoadGenerator::LoadGenerator(std::shared_ptr<grpc::Channel> channel,
                             LoadOptions options)
    : channel_(std::move(channel)),
      stub_(v1::PoolService::NewStub(channel_)),
      options_(std::move(options)) {}

void LoadGenerator::set_progress_callback(
    std::function<void(const LoadProgress&)> callback,
    absl::Duration interval) {
  progress_ = std::move(callback);
  progress_interval_ = interval;
}

std::vector<std::pair<uint64_t, uint64_t>> LoadGenerator::Groups(
    uint64_t count, const std::vector<uint64_t>* sizes) const {
  const uint64_t room = std::min<uint64_t>(
      {static_cast<uint64_t>(options_.max_message_bytes) - kMessageOverhead,
       options_.max_in_flight_bytes, options_.max_batch_bytes});
  std::vector<std::pair<uint64_t, uint64_t>> groups;
  uint64_t begin = 0;
  while (begin < count) {
    uint64_t end = begin + 1;
    uint64_t bytes = sizes != nullptr ? (*sizes)[begin] : 0;
    while (end < count && end - begin < static_cast<uint64_t>(options_.batch)) {
      const uint64_t more = sizes != nullptr ? (*sizes)[end] + 64 : 0;
      if (bytes + more > room) break;
      bytes += more;
      ++end;
    }
    groups.emplace_back(begin, end);
    begin = end;
  }
  return groups;
}

template <typename Request, typename Response, typename Prepare, typename Start,
          typename Done>
absl::Status LoadGenerator::RunPhase(const char* phase, uint64_t calls,
                                     uint64_t items, Prepare prepare,
                                     Start start, Done done) {
  const uint64_t total = calls;
  using CallT = Call<Request, Response>;
  grpc::CompletionQueue queue;
  // Slot k holds the call whose tag is k; free_slots the unused ones.
  std::vector<std::unique_ptr<CallT>> slots(options_.concurrency);
  std::vector<size_t> free_slots(slots.size());
  std::iota(free_slots.rbegin(), free_slots.rend(), 0);

  const absl::Time began = absl::Now();
  absl::Time last_report = began;
  uint64_t next = 0;
  uint64_t completed_items = 0;
  uint64_t in_flight_bytes = 0;
  absl::Status first_error;
  // Call `next`, prepared but waiting for room under max_in_flight_bytes.
  std::unique_ptr<CallT> pending;
  auto report = [&](bool final) {
    if (!progress_) return;
    const absl::Time now = absl::Now();
    if (!final && now - last_report < progress_interval_) return;
    last_report = now;
    progress_(LoadProgress{phase, completed_items, items, now - began, final});
  };

  while (true) {
    while (first_error.ok() && next < total && !free_slots.empty()) {
      if (pending == nullptr) {
        pending = std::make_unique<CallT>();
        pending->index = next;
        const CallSize size = prepare(next, &pending->request);
        pending->bytes = size.bytes;
        pending->items = size.items;
      }
      if (free_slots.size() < slots.size() &&
          in_flight_bytes + pending->bytes > options_.max_in_flight_bytes) {
        break;  // wait for room
      }
      std::unique_ptr<CallT> call = std::move(pending);
      // The deadline counts from the start of the call.
      if (options_.timeout != absl::InfiniteDuration()) {
        call->context.set_deadline(
            absl::ToChronoTime(absl::Now() + options_.timeout));
      }
      const size_t slot = free_slots.back();
      free_slots.pop_back();
      call->reader = start(&call->context, call->request, &queue);
      call->reader->StartCall();
      call->reader->Finish(&call->response, &call->status,
                           reinterpret_cast<void*>(slot));
      in_flight_bytes += call->bytes;
      slots[slot] = std::move(call);
      ++next;
    }
    if (free_slots.size() == slots.size()) break;  // nothing in flight

    void* tag = nullptr;
    bool ok = false;
    if (!queue.Next(&tag, &ok)) break;  // not reached: shut down below
    const size_t slot = reinterpret_cast<size_t>(tag);
    std::unique_ptr<CallT> call = std::move(slots[slot]);
    free_slots.push_back(slot);
    in_flight_bytes -= call->bytes;
    completed_items += call->items;
    absl::Status status = FromGrpcStatus(call->status);
    if (status.ok()) status = done(call->index, call->response);
    if (!status.ok() && first_error.ok()) {
      first_error = absl::Status(
          status.code(), absl::StrCat(status.message(), " (", phase, " call ",
                                      call->index + 1, " of ", total, ")"));
    }
    report(/*final=*/false);
  }
  report(/*final=*/true);
  queue.Shutdown();
  void* tag = nullptr;
  bool ok = false;
  while (queue.Next(&tag, &ok)) {
  }
  return first_error;
}

absl::Status LoadGenerator::Run(LoadSummary* summary) {
  *summary = LoadSummary();
  std::mt19937_64 random(options_.seed);
  const std::string pattern = MakePattern(options_.sizes.max_size());

  // Sizes are drawn in index order, so a seed always gives the same ones.
  std::vector<uint64_t> sizes(options_.count);
  for (uint64_t& size : sizes) size = options_.sizes.Sample(random);
  std::vector<uint64_t> handles(options_.count, 0);

  absl::Time began = absl::Now();
  // Records block i's allocation.
  auto allocated = [&](uint64_t i, const v1::AllocateResponse& response) {
    handles[i] = response.handle();
    ++summary->blocks_allocated;
    summary->bytes_allocated += sizes[i];
    summary->slot_bytes_allocated += response.slot_bytes();
    ++summary->blocks_by_pool[response.pool()];
  };
  auto block_data = [&](uint64_t i) {
    return pattern.substr(i % kPatternPeriod, sizes[i]);
  };
  // Allocates blocks blocks[0..] one call each.
  auto allocate_alone = [&](const char* phase,
                            const std::vector<uint64_t>& blocks) {
    return RunPhase<v1::AllocateRequest, v1::AllocateResponse>(
        phase, blocks.size(), blocks.size(),
        [&](uint64_t k, v1::AllocateRequest* request) {
          request->set_size(sizes[blocks[k]]);
          request->set_data(block_data(blocks[k]));
          return CallSize{.bytes = sizes[blocks[k]]};
        },
        [&](grpc::ClientContext* context, const v1::AllocateRequest& request,
            grpc::CompletionQueue* queue) {
          return stub_->PrepareAsyncAllocate(context, request, queue);
        },
        [&](uint64_t k, const v1::AllocateResponse& response) {
          allocated(blocks[k], response);
          return absl::OkStatus();
        });
  };
  absl::Status status;
  if (options_.batch == 1) {
    std::vector<uint64_t> all(options_.count);
    std::iota(all.begin(), all.end(), uint64_t{0});
    status = allocate_alone("allocate", all);
  } else {
    // Blocks a batch could not allocate for lack of room (under the
    // server's --memory_limit_bytes an allocation in a batch does not wait
    // for a defragmentation): allocated alone afterwards, which waits.
    std::vector<uint64_t> refused;
    const std::vector<std::pair<uint64_t, uint64_t>> groups =
        Groups(options_.count, &sizes);
    status = RunPhase<v1::BatchRequest, v1::BatchResponse>(
        "allocate", groups.size(), options_.count,
        [&](uint64_t g, v1::BatchRequest* request) {
          CallSize size{.bytes = 0, .items = 0};
          for (uint64_t i = groups[g].first; i < groups[g].second; ++i) {
            v1::AllocateRequest* allocate =
                request->add_operations()->mutable_allocate();
            allocate->set_size(sizes[i]);
            allocate->set_data(block_data(i));
            size.bytes += sizes[i];
            ++size.items;
          }
          return size;
        },
        [&](grpc::ClientContext* context, const v1::BatchRequest& request,
            grpc::CompletionQueue* queue) {
          return stub_->PrepareAsyncBatch(context, request, queue);
        },
        [&](uint64_t g, const v1::BatchResponse& response) {
          return TakeBatchResults(
              response, groups[g].first, groups[g].second,
              [&](uint64_t i, const v1::BatchResult& result) {
                allocated(i, result.allocate());
              },
              [&](uint64_t i) { refused.push_back(i); });
        });
    if (status.ok() && !refused.empty()) {
      std::sort(refused.begin(), refused.end());
      summary->blocks_refused_in_batches = refused.size();
      const uint64_t before = summary->blocks_allocated;
      status = allocate_alone("allocate (retrying alone)", refused);
      summary->blocks_allocated_alone = summary->blocks_allocated - before;
    }
  }
  summary->allocate_time = absl::Now() - began;

  // The blocks that exist, in allocation order.
  std::vector<uint64_t> live;
  live.reserve(summary->blocks_allocated);
  for (uint64_t i = 0; i < options_.count; ++i) {
    if (handles[i] != 0) live.push_back(i);
  }
  std::vector<bool> freed(options_.count, false);
  if (status.ok()) {
    // A random subset of the live blocks: the first `to_free` of a shuffle.
    const uint64_t to_free = static_cast<uint64_t>(std::llround(
        options_.free_fraction * static_cast<double>(live.size())));
    std::vector<uint64_t> victims = live;
    std::shuffle(victims.begin(), victims.end(), random);
    victims.resize(std::min<uint64_t>(to_free, victims.size()));

    began = absl::Now();
    auto was_freed = [&](uint64_t k) {
      freed[victims[k]] = true;
      ++summary->blocks_freed;
      summary->bytes_freed += sizes[victims[k]];
    };
    if (options_.batch == 1) {
      status = RunPhase<v1::FreeRequest, v1::FreeResponse>(
          "free", victims.size(), victims.size(),
          [&](uint64_t k, v1::FreeRequest* request) {
            request->set_handle(handles[victims[k]]);
            return CallSize();
          },
          [&](grpc::ClientContext* context, const v1::FreeRequest& request,
              grpc::CompletionQueue* queue) {
            return stub_->PrepareAsyncFree(context, request, queue);
          },
          [&](uint64_t k, const v1::FreeResponse& /*response*/) {
            was_freed(k);
            return absl::OkStatus();
          });
    } else {
      const std::vector<std::pair<uint64_t, uint64_t>> groups =
          Groups(victims.size(), nullptr);
      status = RunPhase<v1::BatchRequest, v1::BatchResponse>(
          "free", groups.size(), victims.size(),
          [&](uint64_t g, v1::BatchRequest* request) {
            CallSize size{.bytes = 0, .items = 0};
            for (uint64_t k = groups[g].first; k < groups[g].second; ++k) {
              request->add_operations()->mutable_free()->set_handle(
                  handles[victims[k]]);
              ++size.items;
            }
            return size;
          },
          [&](grpc::ClientContext* context, const v1::BatchRequest& request,
              grpc::CompletionQueue* queue) {
            return stub_->PrepareAsyncBatch(context, request, queue);
          },
          [&](uint64_t g, const v1::BatchResponse& response) {
            return TakeBatchResults(
                response, groups[g].first, groups[g].second,
                [&](uint64_t k, const v1::BatchResult& /*result*/) {
                  was_freed(k);
                });
          });
    }
    summary->free_time = absl::Now() - began;
  }

  for (uint64_t i : live) {
    if (freed[i]) continue;
    summary->kept_handles.push_back(handles[i]);
    summary->bytes_kept += sizes[i];
  }
  return status;
}

}  // namespace poold::client
