// One pass over a batch's Grams for the minibatch estimate (see gram_products_cpu.h).
//
// Row by row: each Gram's row i is widened to double once into a scratch row (n values; a few
// KB for all layers, so they stay in L1), which gives its row sum, its square norm and its dot
// products with the other side's rows i. The widening and the float64 FMAs vectorise inside
// functions compiled for AVX-512 or AVX2 and picked at run time.
#include "gram_products_cpu.h"

#include "simd.h"

namespace pcf {
namespace {

// Sixteen partial sums (four AVX2 vectors of doubles, two AVX-512 ones): independent FMA
// chains, so the loop runs at the FMA units' throughput rather than one chain's latency.
constexpr std::int64_t kLanes = 16;

inline double dot(const double* x, const double* y, std::int64_t n) {
  double acc[kLanes] = {};
  std::int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
#if defined(PCF_OPENMP_SIMD)
#pragma omp simd
#endif
    for (std::int64_t q = 0; q < kLanes; ++q) acc[q] += x[j + q] * y[j + q];
  }
  double s = 0.0;
  for (; j < n; ++j) s += x[j] * y[j];
  for (std::int64_t q = 0; q < kLanes; ++q) s += acc[q];
  return s;
}

// Row i of every Gram of one side, widened to double once (a widening per product would bound
// the loop by the conversions), its diagonal entry set to 0; its row sum and square norm added.
template <typename T>
inline void side_row(const std::vector<const T*>& g, std::int64_t n, std::int64_t i,
                     double* wide, double* sq, double* rows) {
  for (std::size_t l = 0; l < g.size(); ++l) {
    const T* r = g[l] + i * n;
    double* w = wide + l * n;
    double s = 0.0;
#if defined(PCF_OPENMP_SIMD)
#pragma omp simd reduction(+ : s)
#endif
    for (std::int64_t j = 0; j < n; ++j) {
      w[j] = static_cast<double>(r[j]);
      s += w[j];
    }
    w[i] = 0.0;
    rows[l * n + i] = s - static_cast<double>(r[i]);
    sq[l] += dot(w, w, n);
  }
}

template <typename T>
void products(const std::vector<const T*>& a, const std::vector<const T*>& b, std::int64_t n,
              double* trace, double* sq_a, double* rows_a, double* sq_b, double* rows_b) {
  const bool symmetric = b.empty();
  const std::size_t la = a.size(), lb = symmetric ? a.size() : b.size();
  std::vector<double> wide_a(la * n), wide_b(symmetric ? 0 : lb * n);
  const double* other = symmetric ? wide_a.data() : wide_b.data();
  for (std::size_t k = 0; k < la * lb; ++k) trace[k] = 0.0;
  for (std::size_t l = 0; l < la; ++l) sq_a[l] = 0.0;
  if (!symmetric)
    for (std::size_t m = 0; m < lb; ++m) sq_b[m] = 0.0;
  for (std::int64_t i = 0; i < n; ++i) {
    side_row(a, n, i, wide_a.data(), sq_a, rows_a);
    if (!symmetric) side_row(b, n, i, wide_b.data(), sq_b, rows_b);
    for (std::size_t l = 0; l < la; ++l)
      // symmetric: the pairs l < m (the diagonal is sq_a, the lower triangle a mirror)
      for (std::size_t m = symmetric ? l + 1 : 0; m < lb; ++m)
        trace[l * lb + m] += dot(wide_a.data() + l * n, other + m * n, n);
  }
  if (symmetric) {
    for (std::size_t l = 0; l < la; ++l) {
      trace[l * la + l] = sq_a[l];
      for (std::size_t m = l + 1; m < la; ++m) trace[m * la + l] = trace[l * la + m];
    }
  }
}

template <typename T>
using ProductsFn = void (*)(const std::vector<const T*>&, const std::vector<const T*>&,
                            std::int64_t, double*, double*, double*, double*, double*);

#if defined(PCF_SIMD_DISPATCH)
template <typename T>
PCF_TARGET_AVX2 void products_avx2(const std::vector<const T*>& a, const std::vector<const T*>& b,
                                   std::int64_t n, double* trace, double* sq_a, double* rows_a,
                                   double* sq_b, double* rows_b) {
  products<T>(a, b, n, trace, sq_a, rows_a, sq_b, rows_b);
}
template <typename T>
PCF_TARGET_AVX512 void products_avx512(const std::vector<const T*>& a,
                                       const std::vector<const T*>& b, std::int64_t n,
                                       double* trace, double* sq_a, double* rows_a, double* sq_b,
                                       double* rows_b) {
  products<T>(a, b, n, trace, sq_a, rows_a, sq_b, rows_b);
}
#endif

template <typename T>
ProductsFn<T> variant() {
#if defined(PCF_SIMD_DISPATCH)
  const simd::Isa isa = simd::detected_isa();
  if (isa == simd::Isa::avx512) return &products_avx512<T>;
  if (isa == simd::Isa::avx2) return &products_avx2<T>;
#endif
  return &products<T>;
}

}  // namespace

template <typename T>
void gram_products(const std::vector<const T*>& a, const std::vector<const T*>& b,
                   std::int64_t n, double* trace, double* sq_a, double* rows_a, double* sq_b,
                   double* rows_b) {
  static const ProductsFn<T> fn = variant<T>();
  fn(a, b, n, trace, sq_a, rows_a, sq_b, rows_b);
}

template void gram_products<float>(const std::vector<const float*>&,
                                   const std::vector<const float*>&, std::int64_t, double*,
                                   double*, double*, double*, double*);
template void gram_products<double>(const std::vector<const double*>&,
                                    const std::vector<const double*>&, std::int64_t, double*,
                                    double*, double*, double*, double*);

}  // namespace pcf
