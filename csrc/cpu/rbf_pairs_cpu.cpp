#include "rbf_pairs_cpu.h"

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "micro_tile.h"

namespace pcf {
namespace simd {

Isa detected_isa() {
  Isa best = Isa::generic;
#if defined(PCF_SIMD_DISPATCH)
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl"))
    best = Isa::avx512;
  else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    best = Isa::avx2;
#endif
  if (const char* cap = std::getenv("PYCKAFAST_SIMD")) {
    const std::string s(cap);
    const Isa limit = s == "generic" ? Isa::generic : s == "avx2" ? Isa::avx2 : Isa::avx512;
    best = std::min(best, limit);
  }
  return best;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    default: return "generic";
  }
}

}  // namespace simd

namespace {

using simd::Vec;

// Thread-local buffers of one work item, sized once per call.
template <typename T>
struct Scratch {
  std::vector<T> ax, ay, px, py, nxa, nya, nxb, nyb;
  std::vector<double> cols;  // [col_k | col_l] of the b block
};

// A dot-product tile computed elsewhere (BLAS), for the wide-row path: gx, gy are ma x mb and
// C-contiguous; the norms are zero-padded by kNormPad entries so that whole vectors can be read.
template <typename T>
struct TileArgs {
  const T *gx, *gy, *nxa, *nya, *nxb, *nyb;
  std::int64_t ma, mb;
  RbfKernel<T> kx, ky;
  bool same_block;
  double *row_k, *row_l;  // row sums of E, F over the tile's rows
};
constexpr std::int64_t kNormPad = 64;
constexpr std::int64_t kTileChunk = 96;  // rows per work item of a tile: a multiple of every MR

// The kernel for one vector width: W lanes of T per vector, MR rows x NR = 2W columns per
// micro-tile (MR x 2 accumulators per side: 16 of the 32 AVX-512 registers, 12 of 16 for AVX2).
template <typename T, int Bytes, int MR>
struct Fused : MicroTile<T, Bytes, MR> {
  typedef MicroTile<T, Bytes, MR> M;
  using typename M::VT;
  using typename M::V;
  using typename M::VD;
  using typename M::D;
  using typename M::Bits;
  using M::W;
  using M::NR;
  using M::DW;
  using M::WIDE;
  using M::centre_rows;
  using M::dots;
  using M::pack_panels;

  // E (or F) of the micro-tile from its dot products, in place (rbf_entry). Masked: entries the
  // item does not own (keep_pair: padding, and j <= i in a same-block item) are set to 0.
  template <bool Masked>
  static inline void entries(V (&acc)[MR][2], const T* norm_a, const T* norm_b,
                             const RbfKernel<T>& kernel,
                             std::int64_t i0, std::int64_t j0, std::int64_t ma, std::int64_t mb,
                             bool same_block) {
    const V nb[2] = {VT::load(norm_b), VT::load(norm_b + W)};
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const V na = VT::splat(norm_a[r]);
      for (int h = 0; h < 2; ++h) {
        V e = rbf_entry<V>(acc[r][h], na, nb[h], kernel);
        if (Masked) {
          typedef typename Lanes<V>::IndexScalar I;
          Bits col{};
          for (int c = 0; c < W; ++c) col[c] = static_cast<I>(j0 + h * W + c);
          e = keep_pair<V>(e, i0 + r, col, ma, mb, same_block);
        }
        acc[r][h] = e;
      }
    }
  }

  // Adds the micro-tile's E, F (widened to double lanes) to the row sums (rk, rl: MR x DW partial
  // lanes), the column sums (ck, cl: NR doubles) and the pair sums (DW lanes each).
  static inline void accumulate(const V (&e)[MR][2], const V (&f)[MR][2], double* rk, double* rl,
                                double* ck, double* cl, PairSums<D>& sums) {
    D col_k[2 * WIDE] = {}, col_l[2 * WIDE] = {};
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      D row_k{}, row_l{};
      for (int h = 0; h < 2; ++h) {
        D ew[WIDE], fw[WIDE];
        simd::widen(e[r][h], ew);
        simd::widen(f[r][h], fw);
        for (int q = 0; q < WIDE; ++q)
          accumulate_pair<D>(ew[q], fw[q], row_k, row_l, col_k[h * WIDE + q], col_l[h * WIDE + q],
                             sums);
      }
      VD::store(rk + r * DW, VD::load(rk + r * DW) + row_k);
      VD::store(rl + r * DW, VD::load(rl + r * DW) + row_l);
    }
    for (int q = 0; q < 2 * WIDE; ++q) {
      VD::store(ck + q * DW, VD::load(ck + q * DW) + col_k[q]);
      VD::store(cl + q * DW, VD::load(cl + q * DW) + col_l[q]);
    }
  }

  // Norms and bandwidths of a sweep; norm arrays are readable a whole micro-tile past their end.
  struct Sides {
    const T *nxa, *nya, *nxb, *nyb;
    RbfKernel<T> kx, ky;
  };

  // Every micro-tile of rows [lo, hi) (lo a multiple of MR) x columns [0, mb), only j > i if
  // same_block: dots_of(i0, j0, edge, e, f) supplies the dot products, then E, F and their float64
  // sums. Row i's sums go to row_out(i, sum E, sum F), column sums into ck, cl; returns the pair
  // sums.
  template <typename DotsOf, typename RowOut>
  static RbfSums sweep(std::int64_t lo, std::int64_t hi, std::int64_t mb, bool same_block,
                       const Sides& n, DotsOf&& dots_of, RowOut&& row_out, double* ck,
                       double* cl) {
    PairSums<D> sums{};
    alignas(64) double rk[MR * DW], rl[MR * DW];
    for (std::int64_t i0 = lo; i0 < hi; i0 += MR) {
      std::fill_n(rk, MR * DW, 0.0);
      std::fill_n(rl, MR * DW, 0.0);
      // A same-block sweep needs j > i: panels that end at or before this row block are skipped.
      const std::int64_t first_panel = same_block ? (i0 + 1) / NR : 0;
      for (std::int64_t j0 = first_panel * NR; j0 < mb; j0 += NR) {
        const bool edge = i0 + MR > hi || j0 + NR > mb;
        V e[MR][2], f[MR][2];
        dots_of(i0, j0, edge, e, f);
        if (edge || (same_block && j0 < i0 + MR)) {
          entries<true>(e, n.nxa + i0, n.nxb + j0, n.kx, i0, j0, hi, mb, same_block);
          entries<true>(f, n.nya + i0, n.nyb + j0, n.ky, i0, j0, hi, mb, same_block);
        } else {
          entries<false>(e, n.nxa + i0, n.nxb + j0, n.kx, i0, j0, hi, mb, false);
          entries<false>(f, n.nya + i0, n.nyb + j0, n.ky, i0, j0, hi, mb, false);
        }
        accumulate(e, f, rk, rl, ck + j0, cl + j0, sums);
      }
      for (int r = 0; r < MR && i0 + r < hi; ++r) {
        double sk = 0.0, sl = 0.0;
        for (int q = 0; q < DW; ++q) {
          sk += rk[r * DW + q];
          sl += rl[r * DW + q];
        }
        row_out(i0 + r, sk, sl);
      }
    }
    RbfSums out{0.0, 0.0, 0.0};
    for (int q = 0; q < DW; ++q) {
      out.kl += sums.kl[q];
      out.kk += sums.kk[q];
      out.ll += sums.ll[q];
    }
    return out;
  }

  // One work item: both sides' rows packed, the dot products computed by the micro-kernel. Row
  // sums of the a block go to row_k, row_l, column sums of the b block to s.cols; returns the
  // pair sums of the item.
  static RbfSums item(const RbfSide<T>& x, const RbfSide<T>& y, const Item& it, Scratch<T>& s,
                      double* row_k, double* row_l) {
    const std::int64_t dx = x.a.cols, dy = y.a.cols;
    centre_rows(x.a, x.shift, it.a_lo, it.a_hi, s.ax.data(), s.nxa.data());
    centre_rows(y.a, y.shift, it.a_lo, it.a_hi, s.ay.data(), s.nya.data());
    pack_panels(x.b, x.shift, it.b_lo, it.b_hi, s.px.data(), s.nxb.data());
    pack_panels(y.b, y.shift, it.b_lo, it.b_hi, s.py.data(), s.nyb.data());
    std::fill(s.cols.begin(), s.cols.end(), 0.0);
    const Sides n{s.nxa.data(), s.nya.data(), s.nxb.data(), s.nyb.data(), x.kernel, y.kernel};
    auto dots_of = [&](std::int64_t i0, std::int64_t j0, bool, V(&e)[MR][2], V(&f)[MR][2]) {
      dots(s.ax.data() + i0 * dx, dx, s.px.data() + j0 * dx, e);  // padding is zeros
      dots(s.ay.data() + i0 * dy, dy, s.py.data() + j0 * dy, f);
    };
    auto row_out = [&](std::int64_t i, double sk, double sl) {
      row_k[i] = sk;
      row_l[i] = sl;
    };
    return sweep(0, it.a_hi - it.a_lo, it.b_hi - it.b_lo, it.same_block, n, dots_of, row_out,
                 s.cols.data(), s.cols.data() + s.cols.size() / 2);
  }

  // Rows [lo, hi) (lo a multiple of MR) of a precomputed tile: the same sweep, the dot products
  // loaded instead of computed. Row sums are added to t.row_k/t.row_l, column sums to ck/cl.
  static RbfSums tile_rows(const TileArgs<T>& t, std::int64_t lo, std::int64_t hi, double* ck,
                           double* cl) {
    const Sides n{t.nxa, t.nya, t.nxb, t.nyb, t.kx, t.ky};
    auto dots_of = [&](std::int64_t i0, std::int64_t j0, bool edge, V(&e)[MR][2],
                       V(&f)[MR][2]) {
      load_tile(t.gx, i0, j0, hi, t.mb, edge, e);
      load_tile(t.gy, i0, j0, hi, t.mb, edge, f);
    };
    auto row_out = [&](std::int64_t i, double sk, double sl) {
      t.row_k[i] += sk;
      t.row_l[i] += sl;
    };
    return sweep(lo, hi, t.mb, t.same_block, n, dots_of, row_out, ck, cl);
  }

  // The micro-tile of g at (i0, j0); zeros outside rows < row_end, columns < mb when edge.
  static inline void load_tile(const T* g, std::int64_t i0, std::int64_t j0, std::int64_t row_end,
                               std::int64_t mb, bool edge, V (&acc)[MR][2]) {
    for (int r = 0; r < MR; ++r)
      for (int h = 0; h < 2; ++h) {
        if (!edge) {
          acc[r][h] = VT::load(g + (i0 + r) * mb + j0 + h * W);
          continue;
        }
        acc[r][h] = V{};
        for (int c = 0; c < W; ++c) {
          const std::int64_t j = j0 + h * W + c;
          if (i0 + r < row_end && j < mb) acc[r][h][c] = g[(i0 + r) * mb + j];
        }
      }
  }
};

// Fused<T, ...>::item compiled for each instruction set (flatten: the whole body is inlined and
// compiled with the target's registers and instructions).
template <typename T>
using ItemFn = RbfSums (*)(const RbfSide<T>&, const RbfSide<T>&, const Item&, Scratch<T>&,
                           double*, double*);

template <typename T>
RbfSums item_generic(const RbfSide<T>& x, const RbfSide<T>& y, const Item& it, Scratch<T>& s,
                     double* row_k, double* row_l) {
  return Fused<T, 16, 4>::item(x, y, it, s, row_k, row_l);
}
#if defined(PCF_SIMD_DISPATCH)
template <typename T>
PCF_TARGET_AVX2 RbfSums item_avx2(const RbfSide<T>& x, const RbfSide<T>& y, const Item& it,
                                  Scratch<T>& s, double* row_k, double* row_l) {
  return Fused<T, 32, 6>::item(x, y, it, s, row_k, row_l);
}
template <typename T>
PCF_TARGET_AVX512 RbfSums item_avx512(const RbfSide<T>& x, const RbfSide<T>& y, const Item& it,
                                      Scratch<T>& s, double* row_k, double* row_l) {
  return Fused<T, 64, 8>::item(x, y, it, s, row_k, row_l);
}
#endif

template <typename T>
using TileFn = RbfSums (*)(const TileArgs<T>&, std::int64_t, std::int64_t, double*, double*);

template <typename T>
RbfSums tile_generic(const TileArgs<T>& t, std::int64_t lo, std::int64_t hi, double* ck,
                     double* cl) {
  return Fused<T, 16, 4>::tile_rows(t, lo, hi, ck, cl);
}
#if defined(PCF_SIMD_DISPATCH)
template <typename T>
PCF_TARGET_AVX2 RbfSums tile_avx2(const TileArgs<T>& t, std::int64_t lo, std::int64_t hi,
                                  double* ck, double* cl) {
  return Fused<T, 32, 6>::tile_rows(t, lo, hi, ck, cl);
}
template <typename T>
PCF_TARGET_AVX512 RbfSums tile_avx512(const TileArgs<T>& t, std::int64_t lo, std::int64_t hi,
                                      double* ck, double* cl) {
  return Fused<T, 64, 8>::tile_rows(t, lo, hi, ck, cl);
}
#endif

template <typename T>
TileFn<T> tile_variant(simd::Isa isa) {
#if defined(PCF_SIMD_DISPATCH)
  if (isa == simd::Isa::avx512) return &tile_avx512<T>;
  if (isa == simd::Isa::avx2) return &tile_avx2<T>;
#endif
  (void)isa;
  return &tile_generic<T>;
}

// The item function and its micro-tile shape (rows, columns: the padding of the buffers).
template <typename T>
struct Variant {
  ItemFn<T> fn;
  int mr, nr;
};

template <typename T>
Variant<T> variant(simd::Isa isa) {
#if defined(PCF_SIMD_DISPATCH)
  if (isa == simd::Isa::avx512) return {&item_avx512<T>, 8, Fused<T, 64, 8>::NR};
  if (isa == simd::Isa::avx2) return {&item_avx2<T>, 6, Fused<T, 32, 6>::NR};
#endif
  (void)isa;
  return {&item_generic<T>, 4, Fused<T, 16, 4>::NR};
}

template <typename T>
Scratch<T> make_scratch(std::int64_t block, std::int64_t dx, std::int64_t dy, const Variant<T>& v) {
  const std::int64_t pa = (block + v.mr - 1) / v.mr * v.mr, pb = (block + v.nr - 1) / v.nr * v.nr;
  Scratch<T> s;
  s.ax.resize(pa * dx);
  s.ay.resize(pa * dy);
  s.nxa.resize(pa);
  s.nya.resize(pa);
  s.px.resize(pb * dx);
  s.py.resize(pb * dy);
  s.nxb.resize(pb);
  s.nyb.resize(pb);
  s.cols.resize(2 * pb);
  return s;
}

}  // namespace

// Block rows of set a one after another; within one, the items (a block, every b block: only
// b >= a for one set) run in parallel. An item writes the column sums of its b block straight
// into row_*_b (no other item of this a block touches that range) and keeps its a-block row sums
// and pair sums apart; those are added in b order once the a block is done. So every sum has one
// fixed order, whatever the threads do.
template <typename T>
RbfSums rbf_pair_terms(const RbfSide<T>& x, const RbfSide<T>& y, bool same_block,
                       std::int64_t block, simd::Isa isa, double* row_k_a, double* row_l_a,
                       double* row_k_b, double* row_l_b) {
  const std::int64_t ma = x.a.rows, mb = x.b.rows;
  const std::int64_t nba = (ma + block - 1) / block, nbb = (mb + block - 1) / block;
  const Variant<T> v = variant<T>(isa);
  const int threads = std::max(1, max_threads());
  std::vector<Scratch<T>> scratch;
  for (int t = 0; t < std::min<std::int64_t>(threads, nbb); ++t)
    scratch.push_back(make_scratch<T>(block, x.a.cols, y.a.cols, v));
  std::vector<double> item_rows(static_cast<std::size_t>(nbb * 2 * block));
  std::vector<RbfSums> item_sums(nbb);
  RbfSums total{0.0, 0.0, 0.0};
  for (std::int64_t ia = 0; ia < nba; ++ia) {
    const std::int64_t a_lo = ia * block, a_hi = std::min(ma, a_lo + block);
    const std::int64_t first_b = same_block ? ia : 0, count = nbb - first_b;
    parallel_for(count, threads, [&](int t, std::int64_t k) {
      const std::int64_t ib = first_b + k, b_lo = ib * block, b_hi = std::min(mb, b_lo + block);
      const Item it{a_lo, a_hi, b_lo, b_hi, same_block && ib == ia};
      Scratch<T>& s = scratch[t];
      double* rows = item_rows.data() + k * 2 * block;  // [row_k | row_l] of this item
      item_sums[k] = v.fn(x, y, it, s, rows, rows + block);
      const std::size_t col_stride = s.cols.size() / 2;
      for (std::int64_t j = 0; j < b_hi - b_lo; ++j) {
        row_k_b[b_lo + j] += s.cols[j];
        row_l_b[b_lo + j] += s.cols[col_stride + j];
      }
    });
    for (std::int64_t k = 0; k < count; ++k) {
      const double* rows = item_rows.data() + k * 2 * block;
      for (std::int64_t i = 0; i < a_hi - a_lo; ++i) {
        row_k_a[a_lo + i] += rows[i];
        row_l_a[a_lo + i] += rows[block + i];
      }
      total += item_sums[k];
    }
  }
  return same_block ? mirrored(total) : total;
}

// Chunks of kTileChunk rows run in parallel; each owns its rows' sums and keeps its own column
// partials and pair sums, reduced in chunk order: the result does not depend on the threads.
template <typename T>
RbfSums rbf_tile_terms(const T* gx, const T* gy, const T* nxa, const T* nya, const T* nxb,
                       const T* nyb, std::int64_t ma, std::int64_t mb, const RbfKernel<T>& kx,
                       const RbfKernel<T>& ky, bool same_block, simd::Isa isa, double* row_k_a, double* row_l_a,
                       double* row_k_b, double* row_l_b) {
  auto padded = [](const T* v, std::int64_t m) {
    std::vector<T> out(static_cast<std::size_t>(m + kNormPad), T(0));
    std::copy_n(v, m, out.begin());
    return out;
  };
  const std::vector<T> pxa = padded(nxa, ma), pya = padded(nya, ma);
  const std::vector<T> pxb = padded(nxb, mb), pyb = padded(nyb, mb);
  const TileArgs<T> t{gx, gy, pxa.data(), pya.data(), pxb.data(), pyb.data(), ma, mb,
                      kx, ky, same_block, row_k_a, row_l_a};
  const TileFn<T> fn = tile_variant<T>(isa);
  const std::int64_t chunks = std::max<std::int64_t>(1, (ma + kTileChunk - 1) / kTileChunk);
  const std::int64_t stride = mb + kNormPad;  // column partials per chunk, padded like the norms
  std::vector<double> cols(static_cast<std::size_t>(chunks * 2 * stride), 0.0);
  std::vector<RbfSums> sums(chunks, RbfSums{0.0, 0.0, 0.0});
  parallel_for(chunks, std::max(1, max_threads()), [&](int, std::int64_t c) {
    double* ck = cols.data() + c * 2 * stride;
    sums[c] = fn(t, c * kTileChunk, std::min(ma, (c + 1) * kTileChunk), ck, ck + stride);
  });
  RbfSums total{0.0, 0.0, 0.0};
  double* to_k = same_block ? row_k_a : row_k_b;  // a same-block tile's columns are its rows
  double* to_l = same_block ? row_l_a : row_l_b;
  for (std::int64_t c = 0; c < chunks; ++c) {
    const double* ck = cols.data() + c * 2 * stride;
    for (std::int64_t j = 0; j < mb; ++j) {
      to_k[j] += ck[j];
      to_l[j] += ck[stride + j];
    }
    total += sums[c];
  }
  return same_block ? mirrored(total) : total;
}

namespace {

template <typename T, int Bytes>
void expm1_vector(const T* x, std::int64_t n, T* out) {
  typedef Vec<T, Bytes> VT;
  std::int64_t i = 0;
  for (; i + VT::lanes <= n; i += VT::lanes) VT::store(out + i, rbf_expm1_neg(VT::load(x + i)));
  for (; i < n; ++i) out[i] = rbf_expm1_neg(x[i]);
}

#if defined(PCF_SIMD_DISPATCH)
template <typename T>
PCF_TARGET_AVX512 void expm1_avx512(const T* x, std::int64_t n, T* out) {
  expm1_vector<T, 64>(x, n, out);
}
template <typename T>
PCF_TARGET_AVX2 void expm1_avx2(const T* x, std::int64_t n, T* out) {
  expm1_vector<T, 32>(x, n, out);
}
#endif

}  // namespace

template <typename T>
void expm1_neg_lanes(const T* x, std::int64_t n, bool vector_lanes, simd::Isa isa, T* out) {
  if (!vector_lanes) {
    for (std::int64_t i = 0; i < n; ++i) out[i] = rbf_expm1_neg(x[i]);
    return;
  }
#if defined(PCF_SIMD_DISPATCH)
  if (isa == simd::Isa::avx512) return expm1_avx512<T>(x, n, out);
  if (isa == simd::Isa::avx2) return expm1_avx2<T>(x, n, out);
#endif
  (void)isa;
  expm1_vector<T, 16>(x, n, out);
}

#define PCF_INSTANTIATE(T)                                                                      \
  template RbfSums rbf_pair_terms<T>(const RbfSide<T>&, const RbfSide<T>&, bool, std::int64_t, \
                                     simd::Isa, double*, double*, double*, double*);           \
  template void expm1_neg_lanes<T>(const T*, std::int64_t, bool, simd::Isa, T*);          \
  template RbfSums rbf_tile_terms<T>(const T*, const T*, const T*, const T*, const T*,       \
                                     const T*, std::int64_t, std::int64_t,                   \
                                     const RbfKernel<T>&, const RbfKernel<T>&, bool,         \
                                     simd::Isa, double*, double*, double*, double*);
PCF_INSTANTIATE(float)
PCF_INSTANTIATE(double)
#undef PCF_INSTANTIATE

}  // namespace pcf
