#include "rbf_tiles.h"

#include <algorithm>
#include <atomic>
#include <thread>
#include <type_traits>
#include <vector>

#include "linear_moments.h"  // max_threads

// The exp-heavy loop is compiled for several instruction sets and picked at run time (the
// extension is built for baseline x86-64, which would run it four to eight times narrower).
// flatten inlines the template body, so that it is really compiled for that target. Feature
// lists, not "arch=" targets: measured 2.7 vs 15 ns per pair for the AVX-512 build (arch= tuning
// kept the loop scalar).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define PCF_X86_DISPATCH 1
#define PCF_TARGET_AVX512 __attribute__((target("avx512f,avx512dq,avx512vl,avx2,fma"), flatten))
#define PCF_TARGET_AVX2 __attribute__((target("avx2,fma"), flatten))
#endif

namespace pcf {
namespace {

constexpr std::int64_t kChunkRows = 64;  // rows per work item; column partials per chunk

template <typename T>
void widen(const T* from, std::int64_t count, double* to) {
  for (std::int64_t j = 0; j < count; ++j) to[j] = static_cast<double>(from[j]);
}

// Rows [lo, hi) of a tile. Diagonal tiles evaluate j > i only and send E to both ends.
// Entries are evaluated in double: float tiles are widened a row at a time into buffers first
// (a float load inside the exp loop kept it from vectorising: measured 12 vs 3 ns per pair).
template <typename T>
RbfSums rows_chunk(const T* gx, const T* gy, const T* nxa, const T* nya, const T* nxb,
                   const T* nyb, std::int64_t lo, std::int64_t hi, std::int64_t mb, T gamma_x,
                   T gamma_y, bool diagonal, double* row_k_a, double* row_l_a, double* col_k,
                   double* col_l) {
  RbfSums sums{0.0, 0.0, 0.0};
  std::vector<double> wide(std::is_same<T, double>::value ? 0 : 4 * mb);
  const double *nxb_d, *nyb_d;
  double *gx_d = nullptr, *gy_d = nullptr;
  if constexpr (std::is_same<T, double>::value) {
    nxb_d = nxb;
    nyb_d = nyb;
  } else {
    widen(nxb, mb, wide.data());
    widen(nyb, mb, wide.data() + mb);
    nxb_d = wide.data();
    nyb_d = wide.data() + mb;
    gx_d = wide.data() + 2 * mb;
    gy_d = wide.data() + 3 * mb;
  }
  for (std::int64_t i = lo; i < hi; ++i) {
    const std::int64_t j0 = diagonal ? i + 1 : 0;
    const double *rx, *ry;
    if constexpr (std::is_same<T, double>::value) {
      rx = gx + i * mb;
      ry = gy + i * mb;
    } else {
      widen(gx + i * mb + j0, mb - j0, gx_d + j0);
      widen(gy + i * mb + j0, mb - j0, gy_d + j0);
      rx = gx_d;
      ry = gy_d;
    }
    rbf_row<double>(rx, ry, nxa[i], nya[i], nxb_d, nyb_d, j0, mb, gamma_x, gamma_y, -1, col_k,
                    col_l, row_k_a + i, row_l_a + i, &sums);
  }
  return sums;
}

#define PCF_CHUNK_ARGS(T)                                                                    \
  const T *gx, const T *gy, const T *nxa, const T *nya, const T *nxb, const T *nyb,         \
      std::int64_t lo, std::int64_t hi, std::int64_t mb, T gamma_x, T gamma_y, bool diagonal, \
      double *rka, double *rla, double *ck, double *cl
#define PCF_CHUNK_CALL(T) \
  rows_chunk<T>(gx, gy, nxa, nya, nxb, nyb, lo, hi, mb, gamma_x, gamma_y, diagonal, rka, rla, ck, cl)

#ifdef PCF_X86_DISPATCH
template <typename T>
PCF_TARGET_AVX512 RbfSums chunk_avx512(PCF_CHUNK_ARGS(T)) { return PCF_CHUNK_CALL(T); }
template <typename T>
PCF_TARGET_AVX2 RbfSums chunk_avx2(PCF_CHUNK_ARGS(T)) { return PCF_CHUNK_CALL(T); }
#endif

template <typename T>
RbfSums chunk(PCF_CHUNK_ARGS(T)) {
#ifdef PCF_X86_DISPATCH
  static const int level = __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")
                               ? 2
                               : (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"));
  if (level == 2) return chunk_avx512<T>(gx, gy, nxa, nya, nxb, nyb, lo, hi, mb, gamma_x, gamma_y,
                                         diagonal, rka, rla, ck, cl);
  if (level == 1) return chunk_avx2<T>(gx, gy, nxa, nya, nxb, nyb, lo, hi, mb, gamma_x, gamma_y,
                                       diagonal, rka, rla, ck, cl);
#endif
  return PCF_CHUNK_CALL(T);
}

}  // namespace

// Threads are started per call and handed chunks through an atomic counter (as in the linear
// pass: this alternates with BLAS GEMMs whose idle workers spin). Every chunk keeps its own
// column partials and pair sums, reduced in chunk order, so the result is independent of the
// scheduling and the thread count.
template <typename T>
RbfSums rbf_tile_terms(const T* gx, const T* gy, const T* nxa, const T* nya, const T* nxb,
                       const T* nyb, std::int64_t ma, std::int64_t mb, T gamma_x, T gamma_y,
                       bool diagonal, double* row_k_a, double* row_l_a, double* row_k_b,
                       double* row_l_b) {
  const std::int64_t nchunks = std::max<std::int64_t>(1, (ma + kChunkRows - 1) / kChunkRows);
  std::vector<double> cols(static_cast<std::size_t>(nchunks * 2 * mb), 0.0);
  std::vector<RbfSums> sums(nchunks, RbfSums{0.0, 0.0, 0.0});
  std::atomic<std::int64_t> next{0};
  auto worker = [&]() {
    for (std::int64_t c; (c = next.fetch_add(1)) < nchunks;) {
      const std::int64_t lo = c * kChunkRows, hi = std::min(ma, lo + kChunkRows);
      double* ck = cols.data() + c * 2 * mb;
      sums[c] = chunk(gx, gy, nxa, nya, nxb, nyb, lo, hi, mb, gamma_x, gamma_y, diagonal,
                      row_k_a, row_l_a, ck, ck + mb);
    }
  };
  const int nt = static_cast<int>(std::min<std::int64_t>(max_threads(), nchunks));
  std::vector<std::thread> pool;
  for (int t = 1; t < nt; ++t) pool.emplace_back(worker);
  worker();
  for (auto& th : pool) th.join();

  RbfSums total{0.0, 0.0, 0.0};
  double* to_k = diagonal ? row_k_a : row_k_b;
  double* to_l = diagonal ? row_l_a : row_l_b;
  for (std::int64_t c = 0; c < nchunks; ++c) {
    const double* ck = cols.data() + c * 2 * mb;
    for (std::int64_t j = 0; j < mb; ++j) {
      to_k[j] += ck[j];
      to_l[j] += ck[mb + j];
    }
    total.s_kl += sums[c].s_kl;
    total.s_kk += sums[c].s_kk;
    total.s_ll += sums[c].s_ll;
  }
  if (diagonal) {  // each unordered pair i < j stands for (i, j) and (j, i)
    total.s_kl *= 2.0;
    total.s_kk *= 2.0;
    total.s_ll *= 2.0;
  }
  return total;
}

template RbfSums rbf_tile_terms<float>(const float*, const float*, const float*, const float*,
                                       const float*, const float*, std::int64_t, std::int64_t,
                                       float, float, bool, double*, double*, double*, double*);
template RbfSums rbf_tile_terms<double>(const double*, const double*, const double*,
                                        const double*, const double*, const double*,
                                        std::int64_t, std::int64_t, double, double, bool, double*,
                                        double*, double*, double*);

}  // namespace pcf
