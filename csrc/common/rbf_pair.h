// The RBF per-pair body, written once for every fused RBF pass: the C++ host kernel
// (csrc/cpu/rbf_pairs_cpu.cpp, on GCC vector lanes), the CUDA kernel (csrc/cuda/rbf_pairs_cuda.cu,
// one scalar pair per thread) and the CUDA kernel's host twin (csrc/cpu/twins/rbf_pairs_twin.cpp).
// Compiles with g++, nvcc and NVRTC (no headers, no std:: calls).
//
// Every kernel computes the dot products x_i . x_j and y_i . y_j of a tile of sample pairs in
// registers (input dtype T) from rows centred by one global shift, so that the expansion
//   d2 = |x_i|^2 + |x_j|^2 - 2 x_i . x_j           (clamped at 0: rounding can make it < 0)
// does not lose precision. Entries are accumulated as E = 2^m K - c (and F = 2^m' L - c'), one
// power of two 2^m and one constant c per kernel (RbfKernel): both HSIC estimators are unchanged by
// subtracting a constant from every entry (the diagonal, 2^m - c, is handled by the host), CKA by
// scaling a kernel, and the host picks c near the typical entry and 2^m so that the typical entry
// is near 1. So the summed entries stay small whatever the bandwidth: wide (K near 1, c near 1:
// the expm1 form) and narrow (K << 1: without c, the unbiased estimator cancels the -1s of K - 1;
// without 2^m, float32 entries underflow). E and F are evaluated in T; every sum is accumulated
// in double whatever T is.
//
// One diagonal convention everywhere: a block paired with itself (same_block) evaluates only the
// pairs i < j. Each stands for (i, j) and (j, i): its pair sums count twice (kMirrored) and its
// column sums are the row sums of the j rows, scattered to them. E_ii is never evaluated.
//
// API (V = float or double, or a host vector of them; D = double or a host vector of doubles):
//   rbf_exp_shifted(x, c, m)                 2^m exp(x) - c for x <= 0, branch-free (vectorises)
//   rbf_expm1_neg(x)                         expm1(x) = rbf_exp_shifted(x, 1, 0)
//   rbf_entry(dot, norm_i, norm_j, kernel)   E for one pair (one pair per lane)
//   keep_pair(e, i, j, ma, mb, same_block)   e, or 0 for a pair outside the blocks or not i < j
//   accumulate_pair(e, f, row, col, sums)    one pair's E, F into its row, column and pair sums
#pragma once
#include "pcf_common.h"

namespace pcf {

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

// Lane types. The tile math below is written once for "lanes" V: a scalar (float, double: the CUDA
// kernel, one pair per thread) or, on the host, a GCC vector of them (csrc/cpu/simd.h
// specialises Lanes for those: the fused CPU kernel evaluates 8 or 16 pairs per instruction).
// Lanes<V> gives the scalar type, the same-width integer type, the column-index type of a lane
// and the operations that are not plain arithmetic: bit reinterpretation, max against a scalar
// and select (keep a lane or zero it).
template <typename V>
struct Lanes;

template <>
struct Lanes<float> {
  typedef float Scalar;
  typedef int Bits;
  typedef long long Index;  // a column index per lane (keep_pair)
  typedef long long IndexScalar;
  static PCF_HD float select(bool keep, float v) { return keep ? v : 0.0f; }
  static PCF_HD Bits to_bits(float v) { return rbf_detail::float_to_bits(v); }
  static PCF_HD float from_bits(Bits b) { return rbf_detail::bits_to_float(b); }
  static PCF_HD float max(float a, float b) { return a > b ? a : b; }
};

template <>
struct Lanes<double> {
  typedef double Scalar;
  typedef long long Bits;
  typedef long long Index;
  typedef long long IndexScalar;
  static PCF_HD double select(bool keep, double v) { return keep ? v : 0.0; }
  static PCF_HD Bits to_bits(double v) { return rbf_detail::double_to_bits(v); }
  static PCF_HD double from_bits(Bits b) { return rbf_detail::bits_to_double(b); }
  static PCF_HD double max(double a, double b) { return a > b ? a : b; }
};

// expm1(x) for x <= 0 (x > 0 is not used: -gamma d2 <= 0). x = k ln2 + r with |r| <= ln2/2,
// expm1(x) = 2^k expm1(r) + (2^k - 1): for k = 0 this is expm1(r) itself (no cancellation near 0),
// and 2^k - 1 is exact for the k that matter. k is found with the round-to-nearest shifter
// 1.5 * 2^52 (1.5 * 2^23 in float), whose low mantissa bits then hold k, so 2^k is built with
// integer ops: no branch, no library call, so it vectorises. expm1(r) is its Taylor series to
// r^kDegree (|r| <= 0.347: truncation < 1e-17 relative in double, < 3e-9 in float). Max relative
// error about 2 ulp (checked against expm1 in the tests, scalar and vector lanes).
//
// The constants, one table per scalar type. pyckafast/_cpu/ops_numba_rbf.py reads the double
// table from this file (the Numba epilogue evaluates the same function), so every entry stays a
// plain literal, one `static constexpr <type> kName = <literal>;` per line.
template <typename S>
struct ExpM1Table;

template <>
struct ExpM1Table<double> {
  static constexpr double kShifter = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr double kMin = -708.0;  // exp(-708) - 1 == -1 in double; keeps 2^k normal
  static constexpr double kLog2e = 1.4426950408889634;
  static constexpr double kLn2Hi = 6.93147180369123816490e-01;  // ln 2 = kLn2Hi + kLn2Lo
  static constexpr double kLn2Lo = 1.90821492927058770002e-10;
  static constexpr int kDegree = 13;
  static constexpr long long kExponentBias = 1023;
  static constexpr int kMantissaBits = 52;
  static constexpr int kMaxScale = 400;  // 2^m: (2^400)^2 n^2 sums stay finite
};

template <>
struct ExpM1Table<float> {
  static constexpr float kShifter = 12582912.0f;  // 1.5 * 2^23
  static constexpr float kMin = -87.0f;           // expf(-87) - 1 == -1 in float; keeps 2^k normal
  static constexpr float kLog2e = 1.44269504f;
  static constexpr float kLn2Hi = 0.693145752f;
  static constexpr float kLn2Lo = 1.42860677e-06f;
  static constexpr int kDegree = 8;
  static constexpr int kExponentBias = 127;
  static constexpr int kMantissaBits = 23;
  static constexpr int kMaxScale = 100;  // 2^m: q = 2^(k+m) <= 2^100 stays finite
};

namespace rbf_detail {

template <int K>
struct Factorial {
  static constexpr long long value = K * Factorial<K - 1>::value;
};
template <>
struct Factorial<0> {
  static constexpr long long value = 1;
};

// 1/k! correctly rounded in S (k! is exact in S for every k used).
template <typename S, int K>
struct InvFactorial {
  static constexpr S value = S(1) / S(Factorial<K>::value);
};

// sum_{k=K}^{D} r^(k-K) / k!, by Horner from the highest term (unrolled at compile time).
template <typename S, int K, int D>
struct TaylorTail {
  template <typename V>
  static PCF_HD V eval(V r) {
    if constexpr (K + 1 == D)
      return r * InvFactorial<S, D>::value + InvFactorial<S, K>::value;
    else
      return TaylorTail<S, K + 1, D>::eval(r) * r + InvFactorial<S, K>::value;
  }
};

}  // namespace rbf_detail

// How one kernel's entries are evaluated: E = 2^m exp(-gamma d2) - c (see the top of the file).
// m >= 0 and at most kMaxScale of the scalar type (2^m E^2 stays finite in double).
template <typename S>
struct RbfKernel {
  S gamma, c;
  int m;
};

// 2^m exp(x) - c for x <= 0. With x = k ln2 + r, |r| <= ln2/2 and q = 2^(k+m):
//   2^m exp(x) - c = q expm1(r) + (q - c),
// where q is exact and expm1(r) has a relative error of about 2 ulp, so the error is at most
// about 2 eps (|q expm1(r)| + |q - c|) + eps |E| <= 2 eps (0.6 K' + |K' - c| + 0.6 K') + eps |E|
// with K' = 2^m exp(x) (|expm1(r)| <= 0.42 and K' >= 0.7 q): at most ~4 eps (K' + |E|) in all,
// and for k = 0 (K' near 2^m: the wide-bandwidth regime with m = 0, c near 1) q - c is exact
// (Sterbenz) and the error is ~2 eps |E| (the expm1 accuracy). x is clamped at kMin - m ln2, so
// that 2^(k+m) is a normal number: entries 2^m K below exp(kMin) (1e-38 in float, 1e-308 in
// double) come out as about exp(kMin) - c.
template <typename V>
PCF_HD V rbf_exp_shifted(V x, typename Lanes<V>::Scalar c, int m) {
  typedef Lanes<V> L;
  typedef typename L::Scalar S;
  typedef ExpM1Table<S> C;
  x = L::max(x, C::kMin - S(m) * C::kLn2Hi);
  const V t = x * C::kLog2e + C::kShifter;
  const V k = t - C::kShifter;
  const V r = (x - k * C::kLn2Hi) - k * C::kLn2Lo;
  V p = rbf_detail::TaylorTail<S, 2, C::kDegree>::eval(r);  // (expm1(r) - r) / r^2
  p = p * r * r + r;
  const typename L::Bits kbits = L::to_bits(t) - Lanes<S>::to_bits(C::kShifter);
  const V q = L::from_bits((kbits + (C::kExponentBias + m)) << C::kMantissaBits);
  return q * p + (q - c);
}

// expm1(x) for x <= 0 (2 ^ 0 exp(x) - 1).
template <typename V>
PCF_HD V rbf_expm1_neg(V x) {
  return rbf_exp_shifted(x, typename Lanes<V>::Scalar(1), 0);
}

// E = 2^m exp(-gamma * max(0, |a|^2 + |b|^2 - 2 a.b)) - c for one pair, or one pair per lane.
// 2 a.b is written dot + dot: exact, and valid for vector lanes too.
template <typename V>
PCF_HD V rbf_entry(V dot, V norm_i, V norm_j, const RbfKernel<typename Lanes<V>::Scalar>& kernel) {
  typedef typename Lanes<V>::Scalar S;
  const V d2 = Lanes<V>::max(norm_i + norm_j - (dot + dot), S(0));
  return rbf_exp_shifted(-kernel.gamma * d2, kernel.c, kernel.m);
}

// The pair-sum weight of an evaluated pair (i, j) that also stands for (j, i): every pair i < j of
// a same-block pass, and every pair of the CUDA kernel (its caller runs each unordered block
// pair once).
constexpr double kMirrored = 2.0;

// e for a pair (i, j) -- j one column index per lane -- that the pass owns, 0 otherwise: pairs
// past the ragged end of either block (ma rows of a, mb of b: the tile padding) and, for a
// same-block pass, every pair with j <= i (the diagonal is the host's; j < i is the mirror).
template <typename V>
PCF_HD V keep_pair(V e, long long i, typename Lanes<V>::Index j, long long ma, long long mb,
                   bool same_block) {
  typedef typename Lanes<V>::IndexScalar I;
  const I first = static_cast<I>(same_block ? i + 1 : 0);  // columns j >= first are kept
  const I end = static_cast<I>(i < ma ? mb : 0);           // a padding row keeps none
  return Lanes<V>::select((j >= first) & (j < end), e);
}

// The pair sums sum E F, sum E^2, sum F^2 (double, or double lanes D on the host).
template <typename D>
struct PairSums {
  D kl, kk, ll;
};

// One pair's E and F (or one pair per lane), in double: into the row sums of its row i, the
// column sums of its column j (the row sums of j under the mirror) and the pair sums.
template <typename D>
PCF_HD void accumulate_pair(D e, D f, D& row_k, D& row_l, D& col_k, D& col_l, PairSums<D>& s) {
  row_k += e;
  row_l += f;
  col_k += e;
  col_l += f;
  s.kl += e * f;
  s.kk += e * e;
  s.ll += f * f;
}

}  // namespace pcf
