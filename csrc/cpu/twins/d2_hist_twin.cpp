#include "d2_hist_twin.h"

#include <memory>

#include "../../common/d2_hist.h"
#include "../../common/rbf_pairs_grid.h"

namespace pcf {
namespace {

using namespace rbf_grid;

template <typename T>
struct HistTM;  // the instantiations of d2_hist_cuda.cu that pyckafast/_gpu/engine.py launches
template <>
struct HistTM<float> {
  static constexpr int value = 8;
};
template <>
struct HistTM<double> {
  static constexpr int value = 4;
};

// dot_tile.cuh for every thread of a block: each slice stored by all threads, then read by all.
template <typename T, int TM>
void dot_tile(const T* a, std::int64_t ma, const T* b, std::int64_t mb, std::int64_t d,
              std::int64_t i0, std::int64_t j0, Smem<T, TM>& sm, T (*acc)[TM][TM]) {
  constexpr int BM = kSide * TM;
  constexpr int LOADS = BM * kBK / kThreads;
  for (int tid = 0; tid < kThreads; ++tid)
    for (int r = 0; r < TM; ++r)
      for (int c = 0; c < TM; ++c) acc[tid][r][c] = T(0);
  for (std::int64_t k0 = 0; k0 < d; k0 += kBK) {
    for (int tid = 0; tid < kThreads; ++tid) {
      T pa[LOADS], pb[LOADS];
      fetch<T, BM, LOADS>(a, ma, d, i0, k0, tid, pa);
      fetch<T, BM, LOADS>(b, mb, d, j0, k0, tid, pb);
      store<T, BM, LOADS>(pa, sm.a[0], tid);
      store<T, BM, LOADS>(pb, sm.b[0], tid);
    }
    for (int tid = 0; tid < kThreads; ++tid)
      dot_slice<T, TM>(sm.a[0], sm.b[0], thread_x(tid), thread_y(tid), acc[tid]);
  }
}

template <typename T, int TM>
struct HistBlock {
  Smem<T, TM> sm;
  T g[kThreads][TM][TM];
};

// side_pass of d2_hist_cuda.cu for every thread of block (bx, by); the atomics become additions.
template <typename T, int TM>
void run_block(const D2HistTwinArgs<T>& g, unsigned bx, unsigned by, HistBlock<T, TM>& st) {
  if (!tile_runs(bx, by, g.same_block)) return;
  const std::int64_t i0 = tile_origin<TM>(by), j0 = tile_origin<TM>(bx);
  dot_tile<T, TM>(g.a, g.ma, g.b, g.mb, g.d, i0, j0, st.sm, st.g);
  const double scale =
      g.bins > 0 && g.hi > g.lo ? static_cast<double>(g.bins) / (g.hi - g.lo) : 0.0;
  for (int tid = 0; tid < kThreads; ++tid) {
    const int tx = thread_x(tid), ty = thread_y(tid);
    T nbj[TM];
    column_norms<T, TM>(g.nb, g.mb, j0, tx, nbj);
    for (int r = 0; r < TM; ++r) {
      const long long i = i0 + ty + kSide * r;
      const T nai = i < g.ma ? g.na[i] : T(0);
      for (int c = 0; c < TM; ++c) {
        const long long j = j0 + tx + kSide * c;
        if (!d2::counts_pair(i, j, g.ma, g.mb, g.same_block)) continue;
        const double v = d2::pair_sq_distance<T>(st.g[tid][r][c], nai, nbj[c]);
        const long long k = d2::place(v, g.lo, g.hi, scale, g.bins);
        if (k == d2::kBelow) {
          ++*g.below;
        } else if (k >= 0) {
          if (g.bins > 0) {
            ++g.counts[k];
          } else {
            const std::uint64_t slot = (*g.nvalues)++;
            if (slot < static_cast<std::uint64_t>(g.capacity)) g.values[slot] = v;
          }
        }
      }
    }
  }
}

}  // namespace

template <typename T>
void d2_hist_twin(const D2HistTwinArgs<T>& args) {
  constexpr int TM = HistTM<T>::value, BM = kSide * TM;
  const unsigned grid_x = static_cast<unsigned>((args.mb + BM - 1) / BM);
  const unsigned grid_y = static_cast<unsigned>((args.ma + BM - 1) / BM);
  auto state = std::make_unique<HistBlock<T, TM>>();
  for (unsigned by = 0; by < grid_y; ++by)
    for (unsigned bx = 0; bx < grid_x; ++bx) run_block<T, TM>(args, bx, by, *state);
}

template void d2_hist_twin<float>(const D2HistTwinArgs<float>&);
template void d2_hist_twin<double>(const D2HistTwinArgs<double>&);

}  // namespace pcf
