// Tile math of the fused RBF-HSIC pass, shared by the C++ host kernel (csrc/cpu/rbf_tiles.cpp)
// and the CUDA kernel (csrc/cuda/rbf_tiles.cu). Compiles with g++, nvcc and NVRTC (no headers,
// no std:: calls).
//
// For a tile of sample pairs (i in block a, j in block b) the caller supplies the dot products
// gx[i][j] = x_i . x_j and gy[i][j] = y_i . y_j (BLAS / cuBLAS, input dtype T) and the squared
// row norms. The rows were centred by one global shift, so that the expansion
//   d2 = |x_i|^2 + |x_j|^2 - 2 x_i . x_j           (clamped at 0: rounding can make it < 0)
// does not lose precision. Entries are accumulated as E = K - 1 = expm1(-gamma_x d2x) and
// F = L - 1: both HSIC estimators are unchanged by subtracting a constant from every kernel
// entry, the diagonal of K - 1 is exactly 0, and wide bandwidths (K close to 1) do not cancel.
// Every sum is accumulated in double whatever T is.
//
// API (T = float or double):
//   rbf_expm1_neg(x)                         expm1(x) for x <= 0, branch-free (vectorises)
//   rbf_entry(dot, norm_i, norm_j, gamma)    E for one pair
//   rbf_row(...)                             one row of a tile: row sums of E and F for row i,
//                                            optional column sums, and the pair sums
//                                            s_kl += E F, s_kk += E^2, s_ll += F^2
#pragma once
#include "pcf_common.h"

// Vectorise a loop with five double sum reductions on the host (see PCF_SIMD_SUM).
#if defined(__CUDA_ARCH__) || defined(__CUDACC_RTC__) || !defined(_OPENMP) && !defined(PCF_OPENMP_SIMD)
#define PCF_SIMD_SUM5(a, b, c, d, e)
#else
#define PCF_RBF_PRAGMA(x) _Pragma(#x)
#define PCF_SIMD_SUM5(a, b, c, d, e) PCF_RBF_PRAGMA(omp simd reduction(+ : a, b, c, d, e))
#endif

namespace pcf {

// Pair sums of one tile (or one row of it).
struct RbfSums {
  double s_kl, s_kk, s_ll;
};

namespace rbf_detail {

// Bit reinterpretation without <cstring> / std::bit_cast, on host and device.
PCF_HD double bits_to_double(long long b) {
#if defined(__CUDA_ARCH__)
  return __longlong_as_double(b);
#else
  return __builtin_bit_cast(double, b);
#endif
}
PCF_HD long long double_to_bits(double v) {
#if defined(__CUDA_ARCH__)
  return __double_as_longlong(v);
#else
  return __builtin_bit_cast(long long, v);
#endif
}
PCF_HD float bits_to_float(int b) {
#if defined(__CUDA_ARCH__)
  return __int_as_float(b);
#else
  return __builtin_bit_cast(float, b);
#endif
}
PCF_HD int float_to_bits(float v) {
#if defined(__CUDA_ARCH__)
  return __float_as_int(v);
#else
  return __builtin_bit_cast(int, v);
#endif
}

}  // namespace rbf_detail

// expm1(x) for x <= 0 (x > 0 is not used: -gamma d2 <= 0). x = k ln2 + r with |r| <= ln2/2,
// expm1(x) = 2^k expm1(r) + (2^k - 1): for k = 0 this is expm1(r) itself (no cancellation near 0),
// and 2^k - 1 is exact for the k that matter. k is found with the round-to-nearest shifter
// 1.5 * 2^52, whose low mantissa bits then hold k, so 2^k is built with integer ops: no branch,
// no library call, so compilers vectorise it. Max relative error about 2 ulp (checked against
// expm1 in the tests through the host kernel).
PCF_HD double rbf_expm1_neg(double x) {
  const double shifter = 6755399441055744.0;  // 1.5 * 2^52
  x = x < -708.0 ? -708.0 : x;                // exp(-708) - 1 == -1 in double; keeps 2^k normal
  const double t = x * 1.4426950408889634 + shifter;
  const double k = t - shifter;
  const double r = (x - k * 6.93147180369123816490e-01) - k * 1.90821492927058770002e-10;
  // expm1(r) by its Taylor series to r^13 (|r| <= 0.347: truncation < 1e-17 relative)
  double p = 1.0 / 6227020800.0;
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r * r + r;
  const long long kbits = rbf_detail::double_to_bits(t) - rbf_detail::double_to_bits(shifter);
  const double two_k = rbf_detail::bits_to_double((kbits + 1023LL) << 52);
  return two_k * p + (two_k - 1.0);
}

PCF_HD float rbf_expm1_neg(float x) {
  const float shifter = 12582912.0f;  // 1.5 * 2^23
  x = x < -87.0f ? -87.0f : x;        // expf(-87) - 1 == -1 in float; keeps 2^k normal
  const float t = x * 1.44269504f + shifter;
  const float k = t - shifter;
  const float r = (x - k * 0.693145752f) - k * 1.42860677e-06f;
  // Taylor to r^8 (|r| <= 0.347: truncation < 3e-9 relative)
  float p = 1.0f / 40320.0f;
  p = p * r + 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r * r + r;
  const int kbits = rbf_detail::float_to_bits(t) - rbf_detail::float_to_bits(shifter);
  const float two_k = rbf_detail::bits_to_float((kbits + 127) << 23);
  return two_k * p + (two_k - 1.0f);
}

// E = expm1(-gamma * max(0, |a|^2 + |b|^2 - 2 a.b)) for one pair (T = float or double).
template <typename T>
PCF_HD T rbf_entry(T dot, T norm_i, T norm_j, T gamma) {
  T d2 = norm_i + norm_j - T(2) * dot;
  d2 = d2 > T(0) ? d2 : T(0);
  return rbf_expm1_neg(-gamma * d2);
}

// One row i of a tile, columns j in [j_begin, j_end) (indices into the tile's column block b):
//   gx, gy      : row i of the dot-product tiles (gx[j] = x_i . x_j)
//   nxi, nyi    : |x_i|^2, |y_i|^2;  nxb, nyb: squared norms of the b rows
//   col_k, col_l: if not null, col_k[j] += E_ij, col_l[j] += F_ij (row sums of the b side)
//   skip_j      : a column whose entry is forced to 0 (the diagonal i == j), or -1 for none
// Adds sum_j E_ij to *row_k, sum_j F_ij to *row_l and the pair sums to *sums.
// C is the type E and F are evaluated in (default T). The host kernel uses C = double for float
// tiles too: measured faster on x86 (no float/double mixing in the vector loop) and more exact.
template <typename T, typename C = T>
PCF_HD void rbf_row(const T* gx, const T* gy, T nxi, T nyi, const T* nxb, const T* nyb,
                    pcf_index j_begin, pcf_index j_end, T gamma_x, T gamma_y, pcf_index skip_j,
                    double* col_k, double* col_l, double* row_k, double* row_l, RbfSums* sums) {
  double rk = 0.0, rl = 0.0, skl = 0.0, skk = 0.0, sll = 0.0;
  if (col_k != nullptr) {
    PCF_SIMD_SUM5(rk, rl, skl, skk, sll)
    for (pcf_index j = j_begin; j < j_end; ++j) {
      const bool keep = j != skip_j;
      const double e = keep ? static_cast<double>(rbf_entry<C>(C(gx[j]), C(nxi), C(nxb[j]), C(gamma_x))) : 0.0;
      const double f = keep ? static_cast<double>(rbf_entry<C>(C(gy[j]), C(nyi), C(nyb[j]), C(gamma_y))) : 0.0;
      rk += e;
      rl += f;
      col_k[j] += e;
      col_l[j] += f;
      skl += e * f;
      skk += e * e;
      sll += f * f;
    }
  } else {
    PCF_SIMD_SUM5(rk, rl, skl, skk, sll)
    for (pcf_index j = j_begin; j < j_end; ++j) {
      const bool keep = j != skip_j;
      const double e = keep ? static_cast<double>(rbf_entry<C>(C(gx[j]), C(nxi), C(nxb[j]), C(gamma_x))) : 0.0;
      const double f = keep ? static_cast<double>(rbf_entry<C>(C(gy[j]), C(nyi), C(nyb[j]), C(gamma_y))) : 0.0;
      rk += e;
      rl += f;
      skl += e * f;
      skk += e * e;
      sll += f * f;
    }
  }
  *row_k += rk;
  *row_l += rl;
  sums->s_kl += skl;
  sums->s_kk += skk;
  sums->s_ll += sll;
}

}  // namespace pcf
