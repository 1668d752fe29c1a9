#include "worker/service/engine_loop.h"

#include <algorithm>
#include <numeric>
#include <optional>

#include "common/log.h"
#include "common/strings.h"

namespace strata::worker {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

}  // namespace

struct EngineLoop::Active {
  GenerationRequest request;
  std::shared_ptr<GenerationStream> stream;
  std::optional<engine::Sequence> sequence;
  std::optional<engine::Sampler> sampler;
  PromptPrefix prefix;  // its blocks across the tiers (empty without the prefix cache)
  // From the kvstores; guarded by the loop's mutex until the fetch is reported done.
  std::vector<std::shared_ptr<const BlockPayload>> fetched;
  int64_t prefilled = 0;        // prompt tokens whose KV is in the sequence
  int32_t last_token = 0;
  int64_t generated = 0;
  std::vector<int32_t> output;  // the generated tokens
  std::vector<engine::PositionLogprobs> prompt_logprobs;  // request.prompt_logprobs: so far
  bool exported = false;        // the prompt's blocks were stored
  GenerationSummary summary;
  Clock::time_point admitted, prefill_started, first_token, last_token_at;

  int64_t prompt_tokens() const { return static_cast<int64_t>(request.prompt.size()); }
  bool decoding() const { return prefilled == prompt_tokens() && generated > 0; }
};

EngineLoop::EngineLoop(engine::Engine* engine, const EngineLoopOptions& options, const BlockKeyContext& key_context,
                       PrefixCache::Tiers tiers, WorkerMetrics* metrics)
    : engine_(engine), options_(options), prefix_cache_(*engine, key_context, tiers), metrics_(metrics) {}

EngineLoop::~EngineLoop() { Stop(); }

void EngineLoop::Start() { thread_ = std::thread([this] { Run(); }); }

absl::StatusOr<std::shared_ptr<GenerationStream>> EngineLoop::Submit(GenerationRequest request) {
  auto active = std::make_unique<Active>();
  active->stream = std::make_shared<GenerationStream>();
  active->admitted = Clock::now();
  active->request = std::move(request);
  std::shared_ptr<GenerationStream> stream = active->stream;
  absl::MutexLock lock(&mutex_);
  if (!accepting_ || stop_) return absl::UnavailableError("the worker is draining: send the request to another worker");
  if (static_cast<int>(waiting_.size()) >= options_.max_queued_requests) {
    return absl::ResourceExhaustedError(StrCat("the worker's queue is full (", waiting_.size(),
                                               " requests waiting): try another worker"));
  }
  waiting_tokens_ += active->request.prompt.size();
  waiting_.push_back(std::move(active));
  return stream;
}

void EngineLoop::StopAccepting() {
  absl::MutexLock lock(&mutex_);
  accepting_ = false;
}

bool EngineLoop::WaitIdle(std::chrono::milliseconds timeout) {
  absl::MutexLock lock(&mutex_);
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) { return waiting_.empty() && running_count_ == 0; };
  return mutex_.AwaitWithTimeout(absl::Condition(&idle), absl::FromChrono(timeout));
}

void EngineLoop::Stop() {
  {
    absl::MutexLock lock(&mutex_);
    if (stop_ && !thread_.joinable()) return;
    stop_ = true;
    accepting_ = false;
  }
  if (thread_.joinable()) thread_.join();
  const absl::Status stopping = absl::UnavailableError("the worker stopped before the request finished");
  {
    // Fetches under way report into fetched_: wait for each (bounded by the kvstore transfer timeout)
    // before their requests go.
    absl::MutexLock lock(&mutex_);
    auto all_back = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) { return fetched_.size() == fetching_.size(); };
    mutex_.Await(absl::Condition(&all_back));
    fetched_.clear();
  }
  for (auto& active : fetching_) active->stream->Fail(stopping);
  fetching_.clear();
  for (auto& active : running_) active->stream->Fail(stopping);
  running_.clear();
  absl::MutexLock lock(&mutex_);
  for (auto& active : waiting_) active->stream->Fail(stopping);
  waiting_.clear();
  waiting_tokens_ = 0;
  running_count_ = 0;
}

LoadSnapshot EngineLoop::Load() const {
  absl::MutexLock lock(&mutex_);
  LoadSnapshot load;
  load.queued_requests = waiting_.size();
  load.queued_prefill_tokens = waiting_tokens_ + running_unprefilled_;
  load.running_tokens = running_tokens_;
  load.running_requests = running_count_;
  load.kv_pool_free_blocks = kv_pool_free_blocks_;
  return load;
}

void EngineLoop::PublishLoad() {
  uint64_t tokens = 0, unprefilled = 0;
  for (const auto& active : running_) {
    tokens += static_cast<uint64_t>(active->prefilled + active->generated);
    unprefilled += static_cast<uint64_t>(active->prompt_tokens() - active->prefilled);
  }
  for (const auto& active : fetching_) unprefilled += static_cast<uint64_t>(active->prompt_tokens());
  const engine::KvPool* pool = engine_->pool();  // read here: the pool is the engine thread's
  absl::MutexLock lock(&mutex_);
  running_count_ = static_cast<uint32_t>(running_.size() + fetching_.size());
  running_tokens_ = tokens;
  running_unprefilled_ = unprefilled;
  kv_pool_free_blocks_ = pool != nullptr ? static_cast<uint64_t>(pool->free_blocks()) : 0;
}

void EngineLoop::Run() {
  std::vector<Active*> fetched;
  while (true) {
    std::vector<std::unique_ptr<Active>> admitted;
    {
      absl::MutexLock lock(&mutex_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
        return stop_ || !waiting_.empty() || !running_.empty() || !fetched_.empty();
      };
      mutex_.Await(absl::Condition(&ready));
      if (stop_) return;
      fetched.swap(fetched_);
      while (!waiting_.empty() && static_cast<int>(running_.size() + fetching_.size() + admitted.size()) <
                                      options_.max_running_requests) {
        waiting_tokens_ -= waiting_.front()->request.prompt.size();
        admitted.push_back(std::move(waiting_.front()));
        waiting_.pop_front();
      }
      // Counted as running from here, so that WaitIdle never sees a request in neither place.
      running_count_ = static_cast<uint32_t>(running_.size() + fetching_.size() + admitted.size());
    }
    for (Active* done : fetched) {
      auto it = std::find_if(fetching_.begin(), fetching_.end(), [&](const auto& a) { return a.get() == done; });
      std::unique_ptr<Active> active = std::move(*it);
      fetching_.erase(it);
      if (active->stream->cancelled()) {
        if (metrics_ != nullptr) metrics_->requests_cancelled.Increment();
        continue;
      }
      prefix_cache_.LoadFetched(active->prefix, *active->sequence, active->fetched, active->request.request_id);
      active->fetched.clear();
      Ready(*active);
      running_.push_back(std::move(active));
    }
    fetched.clear();
    std::vector<std::unique_ptr<Active>> deferred;
    for (auto& active : admitted) {
      const Began began = deferred.empty() ? Begin(*active) : Began::kDeferred;  // keep admission order
      if (began == Began::kReady) running_.push_back(std::move(active));
      if (began == Began::kFetching) fetching_.push_back(std::move(active));
      if (began == Began::kDeferred) deferred.push_back(std::move(active));
    }
    if (!deferred.empty()) {
      absl::MutexLock lock(&mutex_);
      for (auto it = deferred.rbegin(); it != deferred.rend(); ++it) {
        waiting_tokens_ += (*it)->request.prompt.size();
        waiting_.push_front(std::move(*it));
      }
    }
    Step();
    PublishLoad();
  }
}

EngineLoop::Began EngineLoop::Begin(Active& active) {
  if (active.stream->cancelled()) {
    if (metrics_ != nullptr) metrics_->requests_cancelled.Increment();
    return Began::kFailed;
  }
  const GenerationRequest& r = active.request;
  if (r.use_prefix_cache) active.prefix = prefix_cache_.Find(r.prompt, r.tenant_salt);
  // Tier G's run of the prompt's blocks joins the sequence as it is, shared.
  const int64_t capacity = active.prompt_tokens() + r.max_new_tokens;
  absl::StatusOr<engine::Sequence> sequence = engine_->pool() != nullptr
                                                  ? engine_->NewSequence(capacity, active.prefix.resident)
                                                  : engine_->NewSequence(capacity);
  if (!sequence.ok() && sequence.status().code() != absl::StatusCode::kInvalidArgument && !running_.empty()) {
    return Began::kDeferred;  // memory comes back as running requests finish
  }
  if (!sequence.ok()) {
    // Out of memory for this context is the environment, not the request: the caller may retry elsewhere.
    const absl::Status status =
        sequence.status().code() == absl::StatusCode::kInvalidArgument
            ? absl::InvalidArgumentError(StrCat("request ", r.request_id, ": ", sequence.status().message()))
            : absl::ResourceExhaustedError(StrCat("request ", r.request_id, ": no KV memory for ", capacity,
                                                  " tokens: ", sequence.status().message()));
    active.stream->Fail(status);
    if (metrics_ != nullptr) metrics_->requests_failed.Increment();
    return Began::kFailed;
  }
  active.sequence.emplace(*std::move(sequence));
  active.sampler.emplace(r.sampling, r.prompt);
  active.prefill_started = Clock::now();
  if (r.use_prefix_cache) {
    prefix_cache_.LoadHost(active.prefix, *active.sequence, r.request_id);
    Active* raw = &active;
    const bool fetching =
        prefix_cache_.FetchMissingAsync(active.prefix, [this, raw](std::vector<std::shared_ptr<const BlockPayload>> found) {
          absl::MutexLock lock(&mutex_);
          raw->fetched = std::move(found);
          fetched_.push_back(raw);
        });
    if (fetching) return Began::kFetching;
    if (active.prefix.fetch_skipped && metrics_ != nullptr) metrics_->kvstore_fetches_skipped.Increment();
  }
  Ready(active);
  return Began::kReady;
}

void EngineLoop::Ready(Active& active) {
  active.prefilled = active.sequence->length();
  const int64_t block_tokens = options_.block_tokens;
  GenerationSummary& s = active.summary;
  s.prompt_tokens = active.prompt_tokens();
  s.prefill_tokens = active.prompt_tokens() - active.prefilled;
  s.cached_tokens_gpu = static_cast<int64_t>(active.prefix.gpu) * block_tokens;
  s.cached_tokens_host = static_cast<int64_t>(active.prefix.host) * block_tokens;
  s.cached_tokens_kvstore = static_cast<int64_t>(active.prefix.kvstore) * block_tokens;
  s.queue_s = Seconds(active.admitted, active.prefill_started);
  if (metrics_ != nullptr) {
    metrics_->queue_seconds.Observe(s.queue_s);
    metrics_->prompt_tokens.Increment(static_cast<double>(s.prompt_tokens));
    metrics_->prefill_tokens.Increment(static_cast<double>(s.prefill_tokens));
    metrics_->cached_tokens_gpu.Increment(static_cast<double>(s.cached_tokens_gpu));
    metrics_->cached_tokens_host.Increment(static_cast<double>(s.cached_tokens_host));
    metrics_->cached_tokens_kvstore.Increment(static_cast<double>(s.cached_tokens_kvstore));
  }
}

void EngineLoop::Step() {
  // Cancelled requests leave before the step; their KV goes with them.
  std::erase_if(running_, [this](const std::unique_ptr<Active>& active) {
    if (!active->stream->cancelled()) return false;
    if (metrics_ != nullptr) metrics_->requests_cancelled.Increment();
    return true;
  });
  if (running_.empty()) return;

  struct Planned {
    Active* active;
    int64_t prefill_tokens;     // 0: a decode step
    bool samples;               // its last row's logits pick a token
    std::vector<int64_t> rows;  // the rows whose logits are wanted (the last one samples)
  };
  std::vector<Planned> planned;
  int64_t budget = options_.step_token_budget;
  for (auto& active : running_) {
    if (active->decoding()) {
      planned.push_back({active.get(), 0, true, {0}});
      --budget;
    }
  }
  bool prefill_planned = false;
  for (auto& active : running_) {
    if (active->decoding()) continue;
    const int64_t rest = active->prompt_tokens() - active->prefilled;
    // Decodes may use up the budget; the first prefill still gets a chunk, so that a full batch of
    // decoding requests never starves a new one.
    const int64_t allowed = prefill_planned ? budget : std::max<int64_t>(budget, options_.prefill_chunk_tokens);
    const int64_t chunk = std::min({rest, options_.prefill_chunk_tokens, allowed});
    if (chunk <= 0) break;
    prefill_planned = true;
    Planned p{active.get(), chunk, chunk == rest, {}};
    if (active->request.prompt_logprobs) {
      p.rows.resize(chunk);
      std::iota(p.rows.begin(), p.rows.end(), 0);
    } else if (p.samples) {
      p.rows.push_back(chunk - 1);
    }
    planned.push_back(std::move(p));
    budget -= chunk;
  }
  if (planned.empty()) return;

  std::vector<engine::Engine::BatchItem> items;
  items.reserve(planned.size());
  int64_t batch_tokens = 0;
  double prefill_linear = 0, prefill_quadratic = 0;  // the step's prefill work, for the fetch policy
  for (Planned& p : planned) {
    prefill_linear += FetchPolicy::Linear(p.active->prefilled, p.prefill_tokens);
    prefill_quadratic += FetchPolicy::Quadratic(p.active->prefilled, p.prefill_tokens);
    engine::Engine::BatchItem item;
    item.sequence = &*p.active->sequence;
    if (p.prefill_tokens == 0) {
      item.ids = {&p.active->last_token, 1};
    } else {
      item.ids = absl::MakeConstSpan(p.active->request.prompt).subspan(p.active->prefilled, p.prefill_tokens);
    }
    item.logit_rows = p.rows;
    batch_tokens += static_cast<int64_t>(item.ids.size());
    items.push_back(item);
  }
  const auto step_start = Clock::now();
  absl::StatusOr<std::vector<std::vector<float>>> logits = engine_->ForwardBatch(items);
  const auto step_end = Clock::now();
  if (metrics_ != nullptr) {
    metrics_->batch_requests.Observe(static_cast<double>(items.size()));
    metrics_->batch_tokens.Observe(static_cast<double>(batch_tokens));
    metrics_->step_seconds.Observe(Seconds(step_start, step_end));
  }
  if (logits.ok() && prefill_linear > 0) {
    prefix_cache_.ObservePrefill(prefill_linear, prefill_quadratic, Seconds(step_start, step_end));
  }
  std::vector<bool> failed(planned.size(), false);
  if (!logits.ok() && items.size() > 1) {
    // The batch failed and changed no sequence: run each item alone, so that one bad request (or one
    // that no longer fits) fails by itself and its batch-mates go on.
    LogWarning(StrCat("error=engine_batch_failed requests=", items.size(), " tokens=", batch_tokens, " message=\"",
                      logits.status().message(), "\" effect=retry_one_by_one"));
    std::vector<std::vector<float>> each(items.size());
    for (size_t i = 0; i < items.size(); ++i) {
      absl::StatusOr<std::vector<std::vector<float>>> one = engine_->ForwardBatch({&items[i], 1});
      if (one.ok()) {
        each[i] = std::move((*one)[0]);
        continue;
      }
      failed[i] = true;
      LogError(StrCat("error=engine_step_failed request=", planned[i].active->request.request_id, " message=\"",
                      one.status().message(), "\""));
      planned[i].active->stream->Fail(absl::InternalError(StrCat("engine: ", one.status().message())));
    }
    logits = std::move(each);
  } else if (!logits.ok()) {
    LogError(StrCat("error=engine_step_failed request=", planned[0].active->request.request_id, " message=\"",
                    logits.status().message(), "\""));
    planned[0].active->stream->Fail(absl::InternalError(StrCat("engine: ", logits.status().message())));
    failed[0] = true;
    logits = std::vector<std::vector<float>>(1);
  }

  std::vector<Active*> finished_prefill;
  std::vector<Active*> done;
  for (size_t i = 0; i < planned.size(); ++i) {
    Active& a = *planned[i].active;
    if (failed[i]) {  // already told; its KV goes with it
      if (metrics_ != nullptr) metrics_->requests_failed.Increment();
      a.exported = true;
      done.push_back(&a);
      continue;
    }
    const int64_t chunk_start = a.prefilled;
    a.prefilled += planned[i].prefill_tokens;
    const int64_t vocab = engine_->config().vocab_size;
    const absl::Span<const float> rows = (*logits)[i];
    if (a.request.prompt_logprobs && planned[i].prefill_tokens > 0) {
      // Row r of the chunk predicts prompt token chunk_start + r + 1.
      for (int64_t r = 0; r < planned[i].prefill_tokens && chunk_start + r + 1 < a.prompt_tokens(); ++r) {
        a.prompt_logprobs.push_back(engine::LogprobsOf(rows.subspan(r * vocab, vocab),
                                                       a.request.prompt[chunk_start + r + 1],
                                                       std::max(a.request.top_logprobs, 0)));
      }
    }
    if (!planned[i].samples) continue;
    const absl::Span<const float> last = rows.subspan(rows.size() - vocab, vocab);
    absl::StatusOr<int32_t> token = a.sampler->Sample(last);
    if (!token.ok()) {
      a.stream->Fail(absl::InternalError(StrCat("sampling: ", token.status().message())));
      if (metrics_ != nullptr) metrics_->requests_failed.Increment();
      a.exported = true;
      done.push_back(&a);
      continue;
    }
    a.last_token = *token;
    ++a.generated;
    a.output.push_back(*token);
    if (a.generated == 1 && a.request.prompt_logprobs) a.stream->PushPromptLogprobs(std::move(a.prompt_logprobs));
    std::optional<engine::PositionLogprobs> logprobs;
    if (a.request.top_logprobs >= 0) logprobs = engine::LogprobsOf(last, *token, a.request.top_logprobs);
    a.stream->Push(*token, std::move(logprobs));
    if (metrics_ != nullptr) metrics_->generated_tokens.Increment();
    if (a.generated > 1 && metrics_ != nullptr) metrics_->inter_token_seconds.Observe(Seconds(a.last_token_at, step_end));
    a.last_token_at = step_end;
    if (a.generated == 1) {
      a.first_token = step_end;
      a.summary.ttft_s = Seconds(a.admitted, step_end);
      if (metrics_ != nullptr) metrics_->ttft_seconds.Observe(a.summary.ttft_s);
      finished_prefill.push_back(&a);
    }
    const auto& stops = a.request.stop_token_ids;
    if (std::find(stops.begin(), stops.end(), *token) != stops.end()) {
      Finish(a, engine::FinishReason::kStopToken);
      done.push_back(&a);
    } else if (a.generated == a.request.max_new_tokens) {
      Finish(a, engine::FinishReason::kLength);
      done.push_back(&a);
    }
  }
  // After the step's tokens are on their way: the new blocks into tier H and the kvstores' queue.
  for (Active* a : finished_prefill) {
    if (!a->exported) Export(*a);
  }
  std::erase_if(running_, [&](const std::unique_ptr<Active>& a) {
    return std::find(done.begin(), done.end(), a.get()) != done.end();
  });
}

void EngineLoop::Export(Active& active) {
  active.exported = true;
  if (!active.request.use_prefix_cache) return;
  prefix_cache_.StorePrompt(active.prefix, *active.sequence, active.prompt_tokens(), active.request.request_id);
}

void EngineLoop::Finish(Active& active, engine::FinishReason reason) {
  if (!active.exported) Export(active);
  GenerationSummary& s = active.summary;
  s.finish_reason = reason;
  s.completion_tokens = active.generated;
  const Clock::time_point now = Clock::now();
  s.decode_s = Seconds(active.first_token, now);
  active.stream->Finish(s);
  if (metrics_ != nullptr) {
    metrics_->requests_ok.Increment();
    metrics_->e2e_seconds.Observe(Seconds(active.admitted, now));
  }
  // The blocks that generated tokens completed, as a next turn of a conversation (prompt + this answer +
  // more) reuses them. The last token has no KV (it was never run): the tiers see only full blocks of
  // the sequence's length.
  if (!active.request.use_prefix_cache) return;
  std::vector<int32_t> tokens = active.request.prompt;
  tokens.insert(tokens.end(), active.output.begin(), active.output.end());
  prefix_cache_.StoreGenerated(active.prefix, *active.sequence, tokens, active.request.request_id);
}

}  // namespace strata::worker
