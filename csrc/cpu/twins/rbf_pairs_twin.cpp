#include "rbf_pairs_twin.h"

#include <memory>

#include "../../common/rbf_pairs_grid.h"

namespace pcf {
namespace {

using namespace rbf_grid;

template <typename T>
struct KernelTM;  // the instantiations of rbf_pairs_cuda.cu that pyckafast/_gpu/engine.py launches
template <>
struct KernelTM<float> {
  static constexpr int value = 8;
};
template <>
struct KernelTM<double> {
  static constexpr int value = 4;
};

// The registers and shared memory of one thread block, for all its threads at once.
template <typename T, int TM>
struct BlockState {
  Smem<T, TM> sm;
  T gx[kThreads][TM][TM], gy[kThreads][TM][TM];
  T nxj[kThreads][TM], nyj[kThreads][TM];
  double rk[kThreads][TM], rl[kThreads][TM], ck[kThreads][TM], cl[kThreads][TM];
  PairSums<double> s[kThreads];
};

// reduce.cuh's shuffle reductions (warp_sum: span 32, group_sum: span 16): every lane adds the
// lane whose index differs in one bit, for offsets span/2 down to 1, all lanes at once (as
// __shfl_xor_sync does); the result is lane 0's, the one the kernel writes.
double xor_reduce_lane0(double (&v)[kWarpLanes], int span) {
  for (int offset = span >> 1; offset > 0; offset >>= 1) {
    double next[kWarpLanes];
    for (int l = 0; l < span; ++l) next[l] = v[l] + v[l ^ offset];
    for (int l = 0; l < span; ++l) v[l] = next[l];
  }
  return v[0];
}

// dot_tile for every thread: each slice is stored by all threads, then read by all threads,
// as the kernel's barriers order it (the prefetch into the other buffer only overlaps the loads).
template <typename T, int TM>
void dot_tile(const T* a, std::int64_t ma, const T* b, std::int64_t mb, std::int64_t d,
              std::int64_t i0, std::int64_t j0, Smem<T, TM>& sm, T (*acc)[TM][TM]) {
  constexpr int BM = kSide * TM;
  constexpr int LOADS = BM * kBK / kThreads;
  for (int tid = 0; tid < kThreads; ++tid)
    for (int r = 0; r < TM; ++r)
      for (int c = 0; c < TM; ++c) acc[tid][r][c] = T(0);
  int cur = 0;
  for (std::int64_t k0 = 0; k0 < d; k0 += kBK) {
    for (int tid = 0; tid < kThreads; ++tid) {
      T pa[LOADS], pb[LOADS];
      fetch<T, BM, LOADS>(a, ma, d, i0, k0, tid, pa);
      fetch<T, BM, LOADS>(b, mb, d, j0, k0, tid, pb);
      store<T, BM, LOADS>(pa, sm.a[cur], tid);
      store<T, BM, LOADS>(pb, sm.b[cur], tid);
    }
    for (int tid = 0; tid < kThreads; ++tid)
      dot_slice<T, TM>(sm.a[cur], sm.b[cur], thread_x(tid), thread_y(tid), acc[tid]);
    cur ^= 1;
  }
}

// Every thread's epilogue rows: its row, column and pair partials, before any reduction.
template <typename T, int TM>
void epilogues(const RbfTwinArgs<T>& g, std::int64_t i0, std::int64_t j0, bool diagonal,
               BlockState<T, TM>& st) {
  for (int tid = 0; tid < kThreads; ++tid) {
    const int tx = thread_x(tid), ty = thread_y(tid);
    column_norms<T, TM>(g.b.nx, g.b.rows, j0, tx, st.nxj[tid]);
    column_norms<T, TM>(g.b.ny, g.b.rows, j0, tx, st.nyj[tid]);
    const ThreadSide<T, TM> x{st.gx[tid], st.nxj[tid], g.a.nx, g.kx};
    const ThreadSide<T, TM> y{st.gy[tid], st.nyj[tid], g.a.ny, g.ky};
    st.s[tid] = PairSums<double>{0.0, 0.0, 0.0};
    for (int c = 0; c < TM; ++c) st.ck[tid][c] = st.cl[tid][c] = 0.0;
    for (int r = 0; r < TM; ++r)
      epilogue_row<T, TM>(r, x, y, i0, j0, tx, ty, g.a.rows, g.b.rows, diagonal, st.rk[tid][r],
                          st.rl[tid][r], st.ck[tid], st.cl[tid], st.s[tid]);
  }
}

// Row sums: the 16 threads of a row of threads reduce each row (group_sum), thread tx = 0 adds.
template <typename T, int TM>
void add_rows(const RbfTwinArgs<T>& g, std::int64_t i0, const BlockState<T, TM>& st) {
  for (int ty = 0; ty < kThreads / kSide; ++ty)
    for (int r = 0; r < TM; ++r) {
      double vk[kWarpLanes], vl[kWarpLanes];
      for (int tx = 0; tx < kSide; ++tx) {
        vk[tx] = st.rk[ty * kSide + tx][r];
        vl[tx] = st.rl[ty * kSide + tx][r];
      }
      const double rk = xor_reduce_lane0(vk, kSide), rl = xor_reduce_lane0(vl, kSide);
      const std::int64_t i = i0 + ty + kSide * r;
      if (i < g.a.rows) {
        g.row_k_a[i] += rk;
        g.row_l_a[i] += rl;
      }
    }
}

// Column sums: lanes l and l ^ 16 of a warp (its two rows of threads) are added, lanes < 16 store
// into the warp's partials, then each column's partials are summed and added to the b rows.
template <typename T, int TM>
void add_columns(const RbfTwinArgs<T>& g, std::int64_t j0, BlockState<T, TM>& st) {
  constexpr int BM = kSide * TM;
  for (int tid = 0; tid < kThreads; ++tid) {
    const int lane = tid % kWarpLanes, warp = tid / kWarpLanes, partner = tid ^ kSide;
    if (lane >= kSide) continue;
    for (int c = 0; c < TM; ++c) {
      st.sm.cols[0][warp][thread_x(tid) + kSide * c] = st.ck[tid][c] + st.ck[partner][c];
      st.sm.cols[1][warp][thread_x(tid) + kSide * c] = st.cl[tid][c] + st.cl[partner][c];
    }
  }
  for (int t = 0; t < 2 * BM; ++t) {
    const int side = t / BM, col = t % BM;
    const std::int64_t j = j0 + col;
    if (j < g.b.rows) (side == 0 ? g.row_k_b : g.row_l_b)[j] += column_total(st.sm, side, col);
  }
}

// block_sum_atomic: a warp_sum per warp, then warp 0 sums the warps' totals.
template <typename T, int TM>
double block_sum(const BlockState<T, TM>& st, double PairSums<double>::*which) {
  double warps[kWarpLanes] = {};
  for (int w = 0; w < kWarps; ++w) {
    double v[kWarpLanes];
    for (int l = 0; l < kWarpLanes; ++l) v[l] = kMirrored * (st.s[w * kWarpLanes + l].*which);
    warps[w] = xor_reduce_lane0(v, kWarpLanes);
  }
  return xor_reduce_lane0(warps, kWarpLanes);
}

template <typename T, int TM>
void run_block(const RbfTwinArgs<T>& g, unsigned bx, unsigned by, unsigned grid_x,
               BlockState<T, TM>& st) {
  if (!tile_runs(bx, by, g.same_block)) return;
  const std::int64_t i0 = tile_origin<TM>(by), j0 = tile_origin<TM>(bx);
  const bool diagonal = diagonal_tile(bx, by, g.same_block);
  dot_tile<T, TM>(g.a.x, g.a.rows, g.b.x, g.b.rows, g.dx, i0, j0, st.sm, st.gx);
  dot_tile<T, TM>(g.a.y, g.a.rows, g.b.y, g.b.rows, g.dy, i0, j0, st.sm, st.gy);
  epilogues<T, TM>(g, i0, j0, diagonal, st);
  add_rows<T, TM>(g, i0, st);
  add_columns<T, TM>(g, j0, st);
  double* slot = g.sums + 3 * pair_slot(bx, by, grid_x, g.nslots);
  slot[0] += block_sum(st, &PairSums<double>::kl);
  slot[1] += block_sum(st, &PairSums<double>::kk);
  slot[2] += block_sum(st, &PairSums<double>::ll);
}

}  // namespace

// The grid in block order (by, then bx): the order of the float64 additions differs from the
// GPU's atomics only there.
template <typename T>
void rbf_pairs_twin(const RbfTwinArgs<T>& args) {
  constexpr int TM = KernelTM<T>::value, BM = kSide * TM;
  const unsigned grid_x = static_cast<unsigned>((args.b.rows + BM - 1) / BM);
  const unsigned grid_y = static_cast<unsigned>((args.a.rows + BM - 1) / BM);
  auto state = std::make_unique<BlockState<T, TM>>();
  for (unsigned by = 0; by < grid_y; ++by)
    for (unsigned bx = 0; bx < grid_x; ++bx) run_block<T, TM>(args, bx, by, grid_x, *state);
}

template <typename T>
int rbf_twin_tile_rows() {
  return kSide * KernelTM<T>::value;
}

template void rbf_pairs_twin<float>(const RbfTwinArgs<float>&);
template void rbf_pairs_twin<double>(const RbfTwinArgs<double>&);
template int rbf_twin_tile_rows<float>();
template int rbf_twin_tile_rows<double>();

}  // namespace pcf
