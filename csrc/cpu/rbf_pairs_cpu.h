// Fused RBF-HSIC pass on the CPU: the host counterpart of csrc/cuda/rbf_pairs_cuda.cu.
//
// Dot products are computed in registers by a small register-tiled GEMM (MR rows x 2 vectors of
// columns), turned into E = 2^m K - c and F = 2^m' L - c' by the shared per-pair math of
// csrc/common/rbf_pair.h on vector lanes, and accumulated in double. No dot-product tile is
// written to memory and no BLAS call is made: the pass is one loop nest per block pair.
#pragma once
#include <cstdint>

#include "parallel.h"  // View2D
#include "simd.h"

namespace pcf {

// Pair sums of E and F (kl: sum E F, kk: sum E^2, ll: sum F^2).
typedef PairSums<double> RbfSums;

inline RbfSums& operator+=(RbfSums& a, const RbfSums& b) {
  a.kl += b.kl;
  a.kk += b.kk;
  a.ll += b.ll;
  return a;
}

// The sums of a same-block pass, whose pairs i < j each stand for (i, j) and (j, i).
inline RbfSums mirrored(RbfSums s) { return {kMirrored * s.kl, kMirrored * s.kk, kMirrored * s.ll}; }

// One side (x or y) of the pass: the rows of set a and set b (the same view when same_block),
// the shift every row is centred by, and the kernel (gamma = 1 / (2 sigma^2), c, m: rbf_pair.h).
template <typename T>
struct RbfSide {
  View2D<T> a, b;
  const T* shift;
  RbfKernel<T> kernel;
};

// Sums over the pairs (i in set a, j in set b) of E_ij = 2^m exp(-gamma |x_i - x_j|^2) - c and F_ij
// (likewise for y), rows centred by the sides' shifts (in T, as the input dtype would).
//   same_block = false: every pair (i, j) once; adds row sums of E, F to row_k_a, row_l_a (length
//     of set a) and column sums to row_k_b, row_l_b (length of set b).
//   same_block = true: a and b are one set; the diagonal convention of rbf_pair.h (pairs i < j,
//     pair sums doubled, column sums scattered): row_*_b must alias row_*_a.
// `block` rows per work item. The result does not depend on the thread count or scheduling:
// every partial is reduced in a fixed order.
template <typename T>
RbfSums rbf_pair_terms(const RbfSide<T>& x, const RbfSide<T>& y, bool same_block,
                       std::int64_t block, simd::Isa isa, double* row_k_a, double* row_l_a,
                       double* row_k_b, double* row_l_b);

// The same sums for one tile pair whose dot products come from BLAS (for wide rows, where a
// cache-blocked GEMM beats the register-tiled one): gx, gy are C-contiguous ma x mb tiles of the
// centred rows' dot products, nx*, ny* their squared norms. same_block: a is b (ma == mb), pairs
// i < j only, pair sums doubled, column sums added to row_*_a (row_*_b untouched).
template <typename T>
RbfSums rbf_tile_terms(const T* gx, const T* gy, const T* nxa, const T* nya, const T* nxb,
                       const T* nyb, std::int64_t ma, std::int64_t mb, const RbfKernel<T>& kx,
                       const RbfKernel<T>& ky, bool same_block, simd::Isa isa, double* row_k_a, double* row_l_a,
                       double* row_k_b, double* row_l_b);

// expm1(x) for x <= 0 through the shared lanes math, for the tests: scalar or vector lanes.
template <typename T>
void expm1_neg_lanes(const T* x, std::int64_t n, bool vector_lanes, simd::Isa isa, T* out);

}  // namespace pcf
