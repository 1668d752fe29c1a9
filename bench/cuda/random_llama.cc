#include "bench/cuda/random_llama.h"

#include <cuda_runtime_api.h>

#include <random>

#include "common/status.h"
#include "kernels/cuda_status.h"
#include "kernels/elementwise.h"

namespace strata::bench {
namespace {

using engine::Backend;
using engine::LlamaLayerWeights;
using engine::LlamaModel;
using engine::Tensor;

absl::StatusOr<Tensor> RandomTensor(Backend& backend, int64_t rows, int64_t cols, uint64_t seed, float stddev) {
  STRATA_ASSIGN_OR_RETURN(Tensor t, backend.Allocate(DType::kBF16, rows, cols));
  STRATA_RETURN_IF_ERROR(kernels::FillNormal(DType::kBF16, t.data(), t.elements(), stddev, seed, nullptr));
  return t;
}

// Norm weights near 1 (1 + N(0, 0.02)) so activations keep their scale through 32 layers.
absl::StatusOr<Tensor> NormWeight(Backend& backend, int64_t width, uint64_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(1.0f, 0.02f);
  std::vector<uint16_t> host(width);
  for (auto& h : host) h = F32ToBf16(dist(rng));
  STRATA_ASSIGN_OR_RETURN(Tensor t, backend.Allocate(DType::kBF16, 1, width));
  STRATA_CUDA_RETURN_IF_ERROR(cudaMemcpy(t.data(), host.data(), width * 2, cudaMemcpyHostToDevice));
  return t;
}

}  // namespace

model::ModelConfig Llama3_8B() {
  model::ModelConfig c;
  c.architecture = model::Architecture::kLlama;
  c.vocab_size = 128256;
  c.hidden_size = 4096;
  c.intermediate_size = 14336;
  c.num_layers = 32;
  c.num_heads = 32;
  c.num_kv_heads = 8;
  c.head_dim = 128;
  c.rms_norm_eps = 1e-5;
  c.rope.theta = 500000.0;
  c.layer_window.assign(c.num_layers, 0);
  c.max_position_embeddings = 1 << 22;
  return c;
}

absl::StatusOr<BenchModel> MakeModel(engine::DecodeGraphs graphs) {
  BenchModel m;
  m.config = Llama3_8B();
  const auto& c = m.config;
  STRATA_ASSIGN_OR_RETURN(m.backend, engine::CreateCudaBackend({.dtype = DType::kBF16, .decode_graphs = graphs}));
  Backend& b = *m.backend;
  uint64_t seed = 100;
  constexpr float kStd = 0.02f;  // transformers' initializer_range for Llama
  STRATA_ASSIGN_OR_RETURN(m.embed, RandomTensor(b, c.vocab_size, c.hidden_size, seed++, kStd));
  STRATA_ASSIGN_OR_RETURN(m.lm_head, RandomTensor(b, c.vocab_size, c.hidden_size, seed++, kStd));
  STRATA_ASSIGN_OR_RETURN(m.final_norm, NormWeight(b, c.hidden_size, seed++));
  for (int64_t i = 0; i < c.num_layers; ++i) {
    LlamaLayerWeights w;
    STRATA_ASSIGN_OR_RETURN(w.attn_norm, NormWeight(b, c.hidden_size, seed++));
    STRATA_ASSIGN_OR_RETURN(w.mlp_norm, NormWeight(b, c.hidden_size, seed++));
    STRATA_ASSIGN_OR_RETURN(w.q, RandomTensor(b, c.q_dim(), c.hidden_size, seed++, kStd));
    STRATA_ASSIGN_OR_RETURN(w.k, RandomTensor(b, c.kv_dim(), c.hidden_size, seed++, kStd));
    STRATA_ASSIGN_OR_RETURN(w.v, RandomTensor(b, c.kv_dim(), c.hidden_size, seed++, kStd));
    STRATA_ASSIGN_OR_RETURN(w.o, RandomTensor(b, c.hidden_size, c.q_dim(), seed++, kStd));
    STRATA_ASSIGN_OR_RETURN(w.gate, RandomTensor(b, c.intermediate_size, c.hidden_size, seed++, kStd));
    STRATA_ASSIGN_OR_RETURN(w.up, RandomTensor(b, c.intermediate_size, c.hidden_size, seed++, kStd));
    STRATA_ASSIGN_OR_RETURN(w.down, RandomTensor(b, c.hidden_size, c.intermediate_size, seed++, kStd));
    m.layers.push_back(std::move(w));
  }
  STRATA_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
  STRATA_ASSIGN_OR_RETURN(LlamaModel model, LlamaModel::FromWeights(c, m.embed, m.final_norm, m.lm_head, m.layers, b));
  m.model = std::make_unique<LlamaModel>(std::move(model));
  return m;
}

std::vector<int32_t> RandomTokenIds(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> dist(0, 127999);
  std::vector<int32_t> ids(n);
  for (auto& id : ids) id = dist(rng);
  return ids;
}

}  // namespace strata::bench
