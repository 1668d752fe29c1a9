// Prefill attention through cuDNN's fused flash attention (its backend graph API: Q·Kᵀ, scale, causal mask,
// softmax with per-row LSE, ·V, one kernel). cuDNN is loaded at run time (dlopen of libcudnn.so.9, or the file
// STRATA_CUDNN_LIBRARY names), so Strata builds and runs without it: Attention (attention.h) uses cuDNN for
// the shapes it serves when it loads, and the own tensor-core kernel otherwise, and logs which.
#ifndef STRATA_KERNELS_CUDNN_ATTENTION_H_
#define STRATA_KERNELS_CUDNN_ATTENTION_H_

#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "kernels/attention.h"

namespace strata::kernels {

// Which kernel Attention runs for the prefill shapes both serve. Process-wide; kAuto (the default, or
// STRATA_PREFILL_ATTENTION=auto|cudnn|own) is cuDNN when it loads.
enum class PrefillKernel { kAuto, kCudnn, kOwn };
void SetPrefillKernel(PrefillKernel kernel);
PrefillKernel GetPrefillKernel();

// Whether libcudnn loaded (9.6 or newer); CudnnDescription says which file and version, or why not.
bool CudnnAttentionLoaded();
std::string CudnnDescription();

// Whether cuDNN can run `args`: BF16, head_dim 64 or 128, contiguous (not paged) K/V at one position per
// call, no sliding window, and either causal with the queries' keys at the end of [kv_begin, kv_end) or every
// key visible to every row (a chunk wholly in the past).
bool CudnnServes(const AttentionArgs& args);

// When a plan for a new shape is built (~0.1 s: cuDNN compiles its kernel): at once, or once the own kernel
// has spent about as long on that shape (until then CudnnAttention answers FailedPrecondition).
enum class CudnnPlanBuild { kAlways, kWhenAmortized };

// Runs `args` (CudnnServes) on cuDNN. Unavailable when cuDNN did not load; another error when cuDNN rejects
// the graph (the shape is then not tried again). Plans are built once per shape and thread.
absl::Status CudnnAttention(const AttentionArgs& args, cudaStream_t stream,
                            CudnnPlanBuild build = CudnnPlanBuild::kAlways);

struct CudnnAttentionStats {
  int64_t plans_built = 0;
  double build_seconds = 0;  // total time spent building plans
  int64_t runs = 0;
};
CudnnAttentionStats GetCudnnAttentionStats();  // of the calling thread

}  // namespace strata::kernels

#endif  // STRATA_KERNELS_CUDNN_ATTENTION_H_
