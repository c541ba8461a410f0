// Host kernel of the fused RBF-HSIC tile pass (the CPU twin of csrc/cuda/rbf_tiles.cu).
#pragma once
#include <cstdint>

#include "../common/rbf_tile.h"

namespace pcf {

// One tile pair (block a: ma rows, block b: mb rows). gx, gy: C-contiguous ma x mb dot-product
// tiles; nxa, nya (ma) and nxb, nyb (mb): squared row norms. Adds the row sums of E (and F) to
// row_k_a/row_l_a (ma) and, for an off-diagonal pair, the column sums to row_k_b/row_l_b (mb).
// diagonal: a is b (ma == mb), only pairs i < j are evaluated, the pair sums are doubled (all
// ordered pairs) and both ends of each pair go to row_*_a; row_*_b are not touched.
// Returns the pair sums. The result does not depend on the number of threads.
template <typename T>
RbfSums rbf_tile_terms(const T* gx, const T* gy, const T* nxa, const T* nya, const T* nxb,
                       const T* nyb, std::int64_t ma, std::int64_t mb, T gamma_x, T gamma_y,
                       bool diagonal, double* row_k_a, double* row_l_a, double* row_k_b,
                       double* row_l_b);

}  // namespace pcf
