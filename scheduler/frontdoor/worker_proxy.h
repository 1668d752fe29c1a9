// The front door's way to the workers: which live worker serves which model (asked once per
// registration through Worker.Info, since the scheduler's registry knows fingerprints, not names), one
// gRPC channel per worker address, and a request's Generate stream turned into text pieces.
#ifndef STRATA_SCHEDULER_FRONTDOOR_WORKER_PROXY_H_
#define STRATA_SCHEDULER_FRONTDOOR_WORKER_PROXY_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/grpc_security.h"
#include "common/sha256.h"
#include "proto/worker.grpc.pb.h"
#include "scheduler/frontdoor/logprobs.h"
#include "scheduler/frontdoor/request.h"
#include "scheduler/frontdoor/text_stream.h"
#include "scheduler/scheduler.h"
#include "model/tokenizer.h"

namespace strata::frontdoor {

struct WorkerModel {
  std::string worker_id;
  std::string address;
  std::string model_name;
  Sha256Digest fingerprint{};
  uint32_t block_tokens = 0;
  uint32_t max_context_tokens = 0;
  std::vector<int32_t> eos_token_ids;
};

// Thread-safe. Watches each known worker's channel (a thread of its own, every `watch_interval`): a
// worker whose connection is refused or reset is marked unreachable in the scheduler at once, which takes
// it out of placement without waiting for its lease, and marked reachable when its channel is ready
// again. gRPC retries a dead worker's connection at 100 ms, backing off to 1 s.
class WorkerDirectory {
 public:
  // `scheduler` must outlive the directory. `info_timeout` bounds each Worker.Info call. Channels to
  // workers carry `security`'s certificate and token (default: plaintext, no token).
  WorkerDirectory(scheduler::Scheduler* scheduler, absl::Duration info_timeout,
                  std::shared_ptr<const RpcSecurity> security = RpcSecurity::Insecure(),
                  absl::Duration watch_interval = absl::Milliseconds(100));
  ~WorkerDirectory();  // stops the watcher

  // The live workers (per the scheduler's registry) that serve `model_name`. A worker not seen before is
  // asked for its Info now; one that does not answer is skipped and asked again a few seconds later.
  std::vector<WorkerModel> WorkersOf(const std::string& model_name);
  // How many live workers serve each model name.
  absl::flat_hash_map<std::string, int> ModelCounts();

  // The cached channel's stub for `address`.
  std::shared_ptr<proto::Worker::Stub> Stub(const std::string& address);

  // A call to the worker's registration `epoch` failed with its connection refused or reset / went
  // through. Tells the scheduler (Scheduler::MarkUnreachable / MarkReachable) when that changes.
  void ReportUnreachable(const std::string& worker_id, uint64_t epoch);
  void ReportReachable(const std::string& worker_id, uint64_t epoch);

 private:
  struct Known {
    uint64_t epoch = 0;
    std::optional<WorkerModel> model;  // nullopt: Info failed; retry after `retry_after`
    absl::Time retry_after;
    bool unreachable = false;  // as last reported to the scheduler
  };
  struct Connection {
    std::shared_ptr<grpc::Channel> channel;
    std::shared_ptr<proto::Worker::Stub> stub;
  };
  std::vector<WorkerModel> Refresh();
  Connection ConnectionTo(const std::string& address);
  void Watch();

  scheduler::Scheduler* scheduler_;
  absl::Duration info_timeout_;
  const std::shared_ptr<const RpcSecurity> security_;
  const absl::Duration watch_interval_;
  absl::Mutex info_mutex_ ABSL_ACQUIRED_BEFORE(mutex_);  // held by the one caller asking workers for Info
  absl::Mutex mutex_;
  absl::flat_hash_map<std::string, Known> known_ ABSL_GUARDED_BY(mutex_);  // by holder id
  absl::flat_hash_map<std::string, Connection> connections_ ABSL_GUARDED_BY(mutex_);  // by address
  bool stopping_ ABSL_GUARDED_BY(mutex_) = false;
  std::thread watcher_;
};

// A request ready for a worker: tokens, limits and sampling resolved.
struct PreparedRequest {
  std::string model;
  std::vector<int32_t> prompt_ids;
  uint32_t max_tokens = 16;
  float temperature = 1.0f;
  float top_p = 1.0f;
  uint32_t top_k = 0;
  float min_p = 0.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  float repetition_penalty = 1.0f;
  uint64_t seed = 0;
  std::vector<std::string> stop;
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  std::string cache_salt;
  bool disable_prefix_cache = false;
  std::string request_id;  // for the worker's logs; empty: the worker makes one
  int top_logprobs = -1;   // -1: no logprobs; else each token's with this many alternatives
  bool prompt_logprobs = false;  // the prompt's too (echo); the worker then skips its prefix cache
};

// One piece of the output: text never ends inside a character; the last piece has `finished`.
struct Piece {
  std::string text;
  std::vector<int32_t> token_ids;
  bool finished = false;
  std::string finish_reason;  // "stop" or "length" when finished
  Usage usage;                // complete when finished
  // With PreparedRequest::top_logprobs >= 0: one per token_ids entry.
  std::vector<TokenLogprobs> logprobs;
  // With PreparedRequest::prompt_logprobs, on the first piece: the prompt's tokens, the first without a
  // logprob (it has no context).
  std::vector<TokenLogprobs> prompt_logprobs;
};

// One request's stream from its worker. Not thread-safe (one reader), except Cancel().
class GenerationStream {
 public:
  ~GenerationStream();  // cancels a call still running and reaps it

  // The next piece. After a finished piece or an error, nothing more comes. An error is Unavailable (502
  // attached) when the worker died or failed mid-stream.
  absl::StatusOr<Piece> Next();
  // With PreparedRequest::prompt_logprobs: the prompt's logprobs (the first token's without a value), from
  // the worker's first message, which Start has read; later calls (and Next's pieces) then have none.
  std::vector<TokenLogprobs> TakePromptLogprobs();
  // Cancels the worker's call (the client went away).
  void Cancel() { context_.TryCancel(); }
  double ttft_s() const { return usage_.ttft_s; }
  const std::string& worker_id() const { return usage_.worker_id; }
  const std::string& worker_address() const { return worker_address_; }
  uint64_t worker_epoch() const { return worker_epoch_; }
  // The fingerprint of the model that answers (the one the request was sent for).
  const Sha256Digest& model_fingerprint() const { return fingerprint_; }

 private:
  friend class WorkerProxy;
  GenerationStream(const model::Tokenizer& tokenizer, std::vector<std::string> stops) : text_(tokenizer, std::move(stops)) {}
  std::vector<int32_t> eos_token_ids_;  // for StartBeside
  absl::Status Reap();  // drains and finishes the call once
  // The prompt's logprobs in `message` (the first), once; empty afterwards.
  std::vector<TokenLogprobs> PromptLogprobsOf(const proto::GenerateResponse& message);

  grpc::ClientContext context_;
  std::shared_ptr<proto::Worker::Stub> stub_;  // keeps the channel alive for the call
  std::unique_ptr<grpc::ClientReader<proto::GenerateResponse>> reader_;
  std::optional<proto::GenerateResponse> first_;
  TextStream text_;
  absl::flat_hash_set<int32_t> stop_ids_;  // their text is not output
  std::string worker_address_;
  uint64_t worker_epoch_ = 0;
  std::vector<int32_t> prompt_ids_;  // for prompt_logprobs
  Sha256Digest fingerprint_{};
  Usage usage_;
  bool done_ = false;
  bool reaped_ = false;
};

// Routes a prepared request and opens its worker stream. Thread-safe.
class WorkerProxy {
 public:
  // All must outlive the proxy. `cache_report` goes into every stream's usage.
  WorkerProxy(scheduler::Scheduler* scheduler, WorkerDirectory* directory, absl::Duration request_timeout,
              CacheReport cache_report = CacheReport::kShown)
      : scheduler_(scheduler), directory_(directory), request_timeout_(request_timeout), cache_report_(cache_report) {}

  // Picks the worker (scheduler Route by token ids, tenant and cache_salt), starts its Generate and waits
  // for the first token, so that errors before any output are plain HTTP errors: Unavailable (503) when
  // no live worker serves the model or the chosen one cannot be reached, InvalidArgument for what the
  // worker refuses, ResourceExhausted when its queue is full. A worker that is unreachable (UNAVAILABLE:
  // it leaves placement at once, WorkerDirectory::ReportUnreachable) or full before any output is retried
  // twice, round-robin. `arrived`: when the request came in (TTFT).
  // The worker's call ends at the sooner of `caller_deadline` and now + the request timeout.
  absl::StatusOr<std::unique_ptr<GenerationStream>> Start(const PreparedRequest& request, const std::string& tenant,
                                                          const model::Tokenizer& tokenizer, absl::Time arrived,
                                                          absl::Time caller_deadline = absl::InfiniteFuture());
  // The same on the worker that serves `sibling`, without routing or retries: a further choice (n > 1) of
  // one prompt, which finds the prompt's KV there (the worker's prefix cache shares its blocks).
  absl::StatusOr<std::unique_ptr<GenerationStream>> StartBeside(const GenerationStream& sibling,
                                                                const PreparedRequest& request,
                                                                const std::string& tenant,
                                                                const model::Tokenizer& tokenizer, absl::Time arrived,
                                                                absl::Time caller_deadline = absl::InfiniteFuture());

 private:
  struct Target {
    std::string worker_id;
    std::string address;
    uint64_t epoch = 0;
  };
  // One attempt on `target`: the call, then its first message. The error is the worker's gRPC status
  // (as BeforeOutput reads it) when it ended without output.
  absl::StatusOr<std::unique_ptr<GenerationStream>> Open(const Target& target, const proto::GenerateRequest& generate,
                                                         const PreparedRequest& request,
                                                         const Sha256Digest& fingerprint,
                                                         const std::vector<int32_t>& eos_token_ids,
                                                         const model::Tokenizer& tokenizer, absl::Time arrived,
                                                         absl::Time caller_deadline, grpc::Status& worker_status);

  scheduler::Scheduler* scheduler_;
  WorkerDirectory* directory_;
  absl::Duration request_timeout_;
  CacheReport cache_report_;
};

}  // namespace strata::frontdoor

#endif  // STRATA_SCHEDULER_FRONTDOOR_WORKER_PROXY_H_
