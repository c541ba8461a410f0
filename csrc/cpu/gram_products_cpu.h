// The products of one batch's Grams that the minibatch estimate needs
// (pyckafast/_core/minibatch_terms.py), in one pass over the Grams as they are (float32 or
// float64) with float64 sums: no float64 copy of the Gram stacks is made.
#pragma once
#include <cstdint>
#include <vector>

namespace pcf {

// For side a's Grams K_l and side b's L_m (each n x n, C-contiguous), with their diagonals
// taken as zero (K~, L~):
//   trace[l * Lb + m] = tr(K~_l L~_m) = sum_ij K~_l[i][j] L~_m[i][j]   (the Grams are symmetric)
//   sq_a[l] = tr(K~_l K~_l), rows_a[l * n + i] = (K~_l 1)_i, and the same for side b.
// Symmetric (b empty): trace is La x La (both triangles written), sq_b and rows_b untouched.
// One thread; the caller releases the GIL.
template <typename T>
void gram_products(const std::vector<const T*>& a, const std::vector<const T*>& b,
                   std::int64_t n, double* trace, double* sq_a, double* rows_a, double* sq_b,
                   double* rows_b);

}  // namespace pcf
