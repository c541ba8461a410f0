// Host twin of the CUDA distance-histogram kernel (csrc/cuda/d2_hist_cuda.cu): one side of one
// launch, the kernel's grid, blocks and threads run serially on the same tile decomposition
// (csrc/common/rbf_pairs_grid.h) and the same per-pair code (csrc/common/d2_hist.h), so that CI
// (no GPU) runs the kernel's indexing; the GPU driver runs on it through tests/gpu_emulation.py.
#pragma once
#include <cstdint>

namespace pcf {

template <typename T>
struct D2HistTwinArgs {
  const T *a, *b, *na, *nb;  // centred rows (C-contiguous) and their squared norms
  std::int64_t ma, mb, d;
  bool same_block;
  double lo, hi;
  std::int64_t bins;  // 0: collect the values in [lo, hi]
  std::uint64_t* below;
  std::uint64_t* counts;  // bins entries
  double* values;         // capacity entries
  std::int64_t capacity;
  std::uint64_t* nvalues;  // may end above capacity, as on the GPU
};

template <typename T>
void d2_hist_twin(const D2HistTwinArgs<T>& args);

}  // namespace pcf
