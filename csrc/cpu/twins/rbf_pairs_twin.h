// Host twin of the CUDA RBF tile kernel (csrc/cuda/rbf_pairs_cuda.cu): its grid, block and thread
// loops run serially with the kernel's own index math (csrc/common/rbf_pairs_grid.h). CI has no
// GPU, so this is where the kernel's tiles, slices, masks, mirror, column scatter, row and pair
// reductions and slots are executed; tests/gpu_emulation.py runs the GPU driver on it.
#pragma once
#include <cstdint>

#include "../../common/rbf_pair.h"

namespace pcf {

// One block of rows as the kernel takes it: centred rows of x (rows x dx) and y (rows x dy),
// C-contiguous, and their squared norms.
template <typename T>
struct RbfTwinBlock {
  const T *x, *y, *nx, *ny;
  std::int64_t rows;
};

// The kernel's arguments: blocks a and b (the same when same_block), bandwidths, the float64
// row-sum arrays the kernel adds to (row_*_b aliases row_*_a when same_block) and the nslots x 3
// pair-sum slots.
template <typename T>
struct RbfTwinArgs {
  RbfTwinBlock<T> a, b;
  std::int64_t dx, dy;
  RbfKernel<T> kx, ky;  // E = 2^m exp(-gamma d2) - c per side (rbf_pair.h)
  bool same_block;
  double *row_k_a, *row_l_a, *row_k_b, *row_l_b, *sums;
  int nslots;
};

// One launch of pcf_rbf_tiles<T, TM> with TM the instantiation the engine launches (8 for float,
// 4 for double), run serially; adds to the row sums and slots exactly where the kernel does.
template <typename T>
void rbf_pairs_twin(const RbfTwinArgs<T>& args);

// Rows per tile side of that instantiation (16 TM).
template <typename T>
int rbf_twin_tile_rows();

}  // namespace pcf
