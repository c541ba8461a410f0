#include "rbf_tiles.h"

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

#include "linear_moments.h"  // max_threads

// The exp-heavy loop is compiled for several instruction sets and picked at load time (the
// wheel is built for baseline x86-64, which would run it two or four times narrower). flatten
// inlines the template body into each clone, so that it is really compiled for that target.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define PCF_MULTIVERSION \
  __attribute__((flatten, target_clones("arch=skylake-avx512", "arch=haswell", "default")))
#else
#define PCF_MULTIVERSION
#endif

namespace pcf {
namespace {

constexpr std::int64_t kChunkRows = 64;  // rows per work item; column partials per chunk

// Rows [lo, hi) of a tile. Diagonal tiles evaluate j > i only and send E to both ends.
template <typename T>
RbfSums rows_chunk(const T* gx, const T* gy, const T* nxa, const T* nya, const T* nxb,
                   const T* nyb, std::int64_t lo, std::int64_t hi, std::int64_t mb, T gamma_x,
                   T gamma_y, bool diagonal, double* row_k_a, double* row_l_a, double* col_k,
                   double* col_l) {
  RbfSums sums{0.0, 0.0, 0.0};
  for (std::int64_t i = lo; i < hi; ++i) {
    const std::int64_t j0 = diagonal ? i + 1 : 0;
    rbf_row<T>(gx + i * mb, gy + i * mb, nxa[i], nya[i], nxb, nyb, j0, mb, gamma_x, gamma_y, -1,
               col_k, col_l, row_k_a + i, row_l_a + i, &sums);
  }
  return sums;
}

PCF_MULTIVERSION RbfSums chunk_f32(const float* gx, const float* gy, const float* nxa,
                                   const float* nya, const float* nxb, const float* nyb,
                                   std::int64_t lo, std::int64_t hi, std::int64_t mb, float gx_,
                                   float gy_, bool diagonal, double* rka, double* rla,
                                   double* ck, double* cl) {
  return rows_chunk<float>(gx, gy, nxa, nya, nxb, nyb, lo, hi, mb, gx_, gy_, diagonal, rka, rla,
                           ck, cl);
}

PCF_MULTIVERSION RbfSums chunk_f64(const double* gx, const double* gy, const double* nxa,
                                   const double* nya, const double* nxb, const double* nyb,
                                   std::int64_t lo, std::int64_t hi, std::int64_t mb, double gx_,
                                   double gy_, bool diagonal, double* rka, double* rla,
                                   double* ck, double* cl) {
  return rows_chunk<double>(gx, gy, nxa, nya, nxb, nyb, lo, hi, mb, gx_, gy_, diagonal, rka, rla,
                            ck, cl);
}

RbfSums chunk(const float* gx, const float* gy, const float* nxa, const float* nya,
              const float* nxb, const float* nyb, std::int64_t lo, std::int64_t hi,
              std::int64_t mb, float gx_, float gy_, bool diagonal, double* rka, double* rla,
              double* ck, double* cl) {
  return chunk_f32(gx, gy, nxa, nya, nxb, nyb, lo, hi, mb, gx_, gy_, diagonal, rka, rla, ck, cl);
}

RbfSums chunk(const double* gx, const double* gy, const double* nxa, const double* nya,
              const double* nxb, const double* nyb, std::int64_t lo, std::int64_t hi,
              std::int64_t mb, double gx_, double gy_, bool diagonal, double* rka, double* rla,
              double* ck, double* cl) {
  return chunk_f64(gx, gy, nxa, nya, nxb, nyb, lo, hi, mb, gx_, gy_, diagonal, rka, rla, ck, cl);
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
