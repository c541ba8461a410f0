#include "d2_pass_cpu.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "micro_tile.h"

namespace pcf {
namespace {

template <typename T>
struct D2Scratch {
  std::vector<T> slabs, panels, norms_a, norms_b;
};

// The values of one pass that fall into its window go to a thread's result.
struct D2Visitor {
  double lo, hi, scale;
  std::int64_t bins;
  D2Pass* out;
  inline void inside(double v) const {
    if (bins > 0)
      ++out->counts[std::min(static_cast<std::int64_t>((v - lo) * scale), bins - 1)];
    else
      out->values.push_back(v);
  }
};

template <typename T, int Bytes, int MR>
struct Distances : MicroTile<T, Bytes, MR> {
  typedef MicroTile<T, Bytes, MR> M;
  using typename M::V;
  using typename M::VT;
  using M::NR;
  using M::W;

  // Every pair (i in block a, j in block b; j > i on a same-block item) of one work item. The dot
  // products come from the micro-kernel; the distance of each pair is formed in double, exactly
  // as the BLAS-tile histogram of pyckafast/_cpu/ops_numba_rbf.py forms it.
  static void item(const View2D<T>& v, const T* shift, const Item& it, D2Scratch<T>& s,
                   const D2Visitor& visit) {
    const std::int64_t ma = it.a_hi - it.a_lo, mb = it.b_hi - it.b_lo, d = v.cols;
    M::centre_rows(v, shift, it.a_lo, it.a_hi, s.slabs.data(), s.norms_a.data());
    M::pack_panels(v, shift, it.b_lo, it.b_hi, s.panels.data(), s.norms_b.data());
    alignas(64) T g[MR][NR];
    for (std::int64_t i0 = 0; i0 < ma; i0 += MR) {
      const std::int64_t first_panel = it.same_block ? (i0 + 1) / NR : 0;
      for (std::int64_t j0 = first_panel * NR; j0 < mb; j0 += NR) {
        V acc[MR][2];
        M::dots(s.slabs.data() + i0 * d, d, s.panels.data() + j0 * d, acc);
        for (int r = 0; r < MR; ++r) {
          VT::store(g[r], acc[r][0]);
          VT::store(g[r] + W, acc[r][1]);
        }
        const std::int64_t c_end = std::min<std::int64_t>(NR, mb - j0);
        for (int r = 0; r < MR && i0 + r < ma; ++r) {
          const std::int64_t c_begin = it.same_block ? std::max<std::int64_t>(0, i0 + r + 1 - j0) : 0;
          row(static_cast<double>(s.norms_a[i0 + r]), s.norms_b.data() + j0, g[r], c_begin,
              c_end, visit);
        }
      }
    }
  }

  // Columns [c_begin, c_end) of one micro-tile row. Counting is branch-free and vectorised: near
  // the median half the values fall below the window in random order, and a branch on that
  // mispredicted half the time (measured: passes 2.4x slower than the first). Values inside the
  // window are visited only for rows that have any (rare once the window is narrow).
  static inline void row(double na, const T* nb, const T* g, std::int64_t c_begin,
                         std::int64_t c_end, const D2Visitor& visit) {
    alignas(64) double d2[NR];
    for (int c = 0; c < NR; ++c) {
      const double v = na + static_cast<double>(nb[c]) - 2.0 * static_cast<double>(g[c]);
      d2[c] = v > 0.0 ? v : 0.0;
    }
    const double lo = visit.lo, hi = visit.hi;
    std::int64_t below = 0, inside = 0;
#pragma omp simd reduction(+ : below, inside)
    for (std::int64_t c = c_begin; c < c_end; ++c) {
      below += d2[c] < lo;
      inside += (d2[c] >= lo) & (d2[c] <= hi);
    }
    visit.out->below += below;
    if (inside == 0) return;
    for (std::int64_t c = c_begin; c < c_end; ++c)
      if ((d2[c] >= lo) & (d2[c] <= hi)) visit.inside(d2[c]);
  }
};

template <typename T>
using D2Fn = void (*)(const View2D<T>&, const T*, const Item&, D2Scratch<T>&, const D2Visitor&);

template <typename T>
void d2_generic(const View2D<T>& v, const T* shift, const Item& it, D2Scratch<T>& s,
                const D2Visitor& visit) {
  Distances<T, 16, 4>::item(v, shift, it, s, visit);
}
#if defined(PCF_SIMD_DISPATCH)
template <typename T>
PCF_TARGET_AVX2 void d2_avx2(const View2D<T>& v, const T* shift, const Item& it,
                             D2Scratch<T>& s, const D2Visitor& visit) {
  Distances<T, 32, 6>::item(v, shift, it, s, visit);
}
template <typename T>
PCF_TARGET_AVX512 void d2_avx512(const View2D<T>& v, const T* shift, const Item& it,
                                 D2Scratch<T>& s, const D2Visitor& visit) {
  Distances<T, 64, 8>::item(v, shift, it, s, visit);
}
#endif

template <typename T>
D2Fn<T> d2_variant(simd::Isa isa, int& mr, int& nr) {
#if defined(PCF_SIMD_DISPATCH)
  if (isa == simd::Isa::avx512) {
    mr = 8, nr = Distances<T, 64, 8>::NR;
    return &d2_avx512<T>;
  }
  if (isa == simd::Isa::avx2) {
    mr = 6, nr = Distances<T, 32, 6>::NR;
    return &d2_avx2<T>;
  }
#endif
  (void)isa;
  mr = 4, nr = Distances<T, 16, 4>::NR;
  return &d2_generic<T>;
}

// The k-th block pair (a, b), a <= b, of the upper triangle of nb blocks in row order: row a
// starts at index a nb - a (a - 1) / 2. The square root's estimate is corrected by integer
// steps, so rounding cannot pick a wrong row.
inline std::pair<std::int64_t, std::int64_t> triangle_pair(std::int64_t k, std::int64_t nb) {
  const auto start = [nb](std::int64_t a) { return a * nb - a * (a - 1) / 2; };
  const double m = 2.0 * static_cast<double>(nb) + 1.0;
  auto a = static_cast<std::int64_t>((m - std::sqrt(std::max(0.0, m * m - 8.0 * k))) / 2.0);
  a = std::min(std::max<std::int64_t>(a, 0), nb - 1);
  while (a > 0 && start(a) > k) --a;
  while (a + 1 < nb && start(a + 1) <= k) ++a;
  return {a, a + (k - start(a))};
}

}  // namespace

// All block pairs a <= b in one parallel loop: counts and `below` are integers and the values
// are sorted by the caller, so per-thread results add up to the same answer in any order.
template <typename T>
D2Pass pair_distance_pass(const View2D<T>& rows, const T* shift, const D2Window& window,
                          std::int64_t block, simd::Isa isa) {
  int mr = 0, nr = 0;
  const D2Fn<T> fn = d2_variant<T>(isa, mr, nr);
  const std::int64_t n = rows.rows, d = rows.cols, nb = (n + block - 1) / block;
  // The block pairs are walked by index, never stored: a list of them is O((n / block)^2)
  // memory (7.6 GB for one median pass at n = 10^7), breaking the pass's O(n) promise.
  const std::int64_t pairs = nb * (nb + 1) / 2;
  const int threads = static_cast<int>(
      std::max<std::int64_t>(1, std::min<std::int64_t>(max_threads(), pairs)));
  const double scale = window.bins > 0 && window.hi > window.lo
                           ? static_cast<double>(window.bins) / (window.hi - window.lo)
                           : 0.0;
  std::vector<D2Pass> parts(threads);
  std::vector<D2Scratch<T>> scratch(threads);
  const std::int64_t pa = (block + mr - 1) / mr * mr, pb = (block + nr - 1) / nr * nr;
  for (int t = 0; t < threads; ++t) {
    parts[t].counts.assign(static_cast<std::size_t>(std::max<std::int64_t>(0, window.bins)), 0);
    scratch[t].slabs.resize(pa * d);
    scratch[t].norms_a.resize(pa);
    scratch[t].panels.resize(pb * d);
    scratch[t].norms_b.resize(pb);
  }
  parallel_for(pairs, threads, [&](int t, std::int64_t k) {
    const D2Visitor visit{window.lo, window.hi, scale, window.bins, &parts[t]};
    const auto [a, b] = triangle_pair(k, nb);
    const Item item{a * block, std::min(n, (a + 1) * block), b * block,
                    std::min(n, (b + 1) * block), a == b};
    fn(rows, shift, item, scratch[t], visit);
  });
  D2Pass total = std::move(parts[0]);
  for (int t = 1; t < threads; ++t) {
    total.below += parts[t].below;
    for (std::size_t b = 0; b < total.counts.size(); ++b) total.counts[b] += parts[t].counts[b];
    total.values.insert(total.values.end(), parts[t].values.begin(), parts[t].values.end());
  }
  return total;
}

template D2Pass pair_distance_pass<float>(const View2D<float>&, const float*, const D2Window&,
                                          std::int64_t, simd::Isa);
template D2Pass pair_distance_pass<double>(const View2D<double>&, const double*,
                                           const D2Window&, std::int64_t, simd::Isa);

}  // namespace pcf
