// pybind11 bindings of the fused RBF pass (rbf_pairs_cpu.h). Argument checks name the argument.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <string>

#include "bind_util.h"
#include "d2_pass_cpu.h"
#include "rbf_pairs_cpu.h"

namespace py = pybind11;

namespace {

using pcf_bind::c_contiguous_in;
using pcf_bind::view2d;

template <typename T>
// c_style: the kernels read the data pointer as contiguous, so a strided shift is copied first.
using Arr = py::array_t<T, py::array::c_style | py::array::forcecast>;

// "auto": the best instruction set of this CPU; a name: that one, if this CPU runs it.
pcf::simd::Isa parse_isa(const std::string& name) {
  const pcf::simd::Isa best = pcf::simd::detected_isa();
  if (name == "auto") return best;
  for (auto isa : {pcf::simd::Isa::generic, pcf::simd::Isa::avx2, pcf::simd::Isa::avx512}) {
    if (name != pcf::simd::isa_name(isa)) continue;
    if (isa > best)
      throw py::value_error("simd='" + name + "' is not available on this CPU (best: " +
                            pcf::simd::isa_name(best) + ")");
    return isa;
  }
  throw py::value_error("simd must be 'auto', 'generic', 'avx2' or 'avx512'; got '" + name + "'");
}

// (gamma, c, m) of E = 2^m exp(-gamma d2) - c (rbf_pair.h), checked: 0 <= m <= kMaxScale.
template <typename T>
pcf::RbfKernel<T> kernel_of(const py::tuple& k, const char* name) {
  if (k.size() != 3)
    throw py::value_error(std::string(name) + " must be (gamma, c, m); got " +
                          std::to_string(k.size()) + " items");
  const int m = k[2].cast<int>();
  if (m < 0 || m > pcf::ExpM1Table<T>::kMaxScale)
    throw py::value_error(std::string(name) + ": m must be in [0, " +
                          std::to_string(pcf::ExpM1Table<T>::kMaxScale) + "]; got " +
                          std::to_string(m));
  return {static_cast<T>(k[0].cast<double>()), static_cast<T>(k[1].cast<double>()), m};
}

py::array_t<double> zeros(py::ssize_t n) {
  py::array_t<double> a(n);
  std::fill_n(a.mutable_data(), n, 0.0);
  return a;
}

// (s_kl, s_kk, s_ll, row_k_a, row_l_a, row_k_b, row_l_b) of the pairs (i in a, j in b); with
// same_block, xb and yb must be None, the sums run over all ordered pairs of a and row_*_b are 0.
template <typename T>
py::tuple rbf_pairs(const py::array& xa, const py::array& ya, const py::object& xb,
                    const py::object& yb, const Arr<T>& shift_x, const Arr<T>& shift_y,
                    const py::tuple& kernel_x, const py::tuple& kernel_y, bool same_block,
                    std::int64_t block, const std::string& simd) {
  const auto vxa = view2d<T>(xa, "xa"), vya = view2d<T>(ya, "ya");
  if (same_block && !(xb.is_none() && yb.is_none()))
    throw py::value_error("xb and yb must be None when same_block is true");
  if (!same_block && (xb.is_none() || yb.is_none()))
    throw py::value_error("xb and yb are required when same_block is false");
  const auto vxb = same_block ? vxa : view2d<T>(xb.cast<py::array>(), "xb");
  const auto vyb = same_block ? vya : view2d<T>(yb.cast<py::array>(), "yb");
  if (vxa.rows != vya.rows) throw py::value_error("xa and ya must have the same number of rows");
  if (vxb.rows != vyb.rows) throw py::value_error("xb and yb must have the same number of rows");
  if (vxa.cols != vxb.cols) throw py::value_error("xa and xb must have the same number of columns");
  if (vya.cols != vyb.cols) throw py::value_error("ya and yb must have the same number of columns");
  if (shift_x.size() != vxa.cols) throw py::value_error("shift_x must have one entry per column of x");
  if (shift_y.size() != vya.cols) throw py::value_error("shift_y must have one entry per column of y");
  if (block < 1) throw py::value_error("block must be at least 1; got " + std::to_string(block));
  const pcf::simd::Isa isa = parse_isa(simd);
  const pcf::RbfSide<T> x{vxa, vxb, shift_x.data(), kernel_of<T>(kernel_x, "kernel_x")};
  const pcf::RbfSide<T> y{vya, vyb, shift_y.data(), kernel_of<T>(kernel_y, "kernel_y")};
  auto rka = zeros(vxa.rows), rla = zeros(vxa.rows), rkb = zeros(vxb.rows), rlb = zeros(vxb.rows);
  double *ka = rka.mutable_data(), *la = rla.mutable_data();
  double *kb = same_block ? ka : rkb.mutable_data(), *lb = same_block ? la : rlb.mutable_data();
  pcf::RbfSums s;
  {
    py::gil_scoped_release release;
    s = pcf::rbf_pair_terms<T>(x, y, same_block, block, isa, ka, la, kb, lb);
  }
  return py::make_tuple(s.kl, s.kk, s.ll, rka, rla, rkb, rlb);
}

// One tile pair from BLAS dot-product tiles: (s_kl, s_kk, s_ll, row_k_a, row_l_a, row_k_b,
// row_l_b) as rbf_pairs gives for the same rows (same_block: row_*_b are 0).
template <typename T>
py::tuple rbf_tile(const py::array& gx, const py::array& gy, const py::array& nxa,
                   const py::array& nya, const py::array& nxb, const py::array& nyb,
                   const py::tuple& kernel_x, const py::tuple& kernel_y, bool same_block,
                   const std::string& simd) {
  if (gx.ndim() != 2) throw py::value_error("gx must be a 2-D dot-product tile");
  const py::ssize_t ma = gx.shape(0), mb = gx.shape(1);
  if (same_block && ma != mb) throw py::value_error("a same-block tile must be square");
  const T* px = c_contiguous_in<T>(gx, ma, mb, "gx");
  const T* py_ = c_contiguous_in<T>(gy, ma, mb, "gy");
  const T* pnxa = c_contiguous_in<T>(nxa, ma, -1, "nxa");
  const T* pnya = c_contiguous_in<T>(nya, ma, -1, "nya");
  const T* pnxb = c_contiguous_in<T>(nxb, mb, -1, "nxb");
  const T* pnyb = c_contiguous_in<T>(nyb, mb, -1, "nyb");
  const pcf::simd::Isa isa = parse_isa(simd);
  const auto kx = kernel_of<T>(kernel_x, "kernel_x"), ky = kernel_of<T>(kernel_y, "kernel_y");
  auto rka = zeros(ma), rla = zeros(ma), rkb = zeros(mb), rlb = zeros(mb);
  pcf::RbfSums s;
  {
    py::gil_scoped_release release;
    s = pcf::rbf_tile_terms<T>(px, py_, pnxa, pnya, pnxb, pnyb, ma, mb, kx, ky, same_block, isa, rka.mutable_data(),
                               rla.mutable_data(), rkb.mutable_data(), rlb.mutable_data());
  }
  return py::make_tuple(s.kl, s.kk, s.ll, rka, rla, rkb, rlb);
}

template <typename T>
py::array_t<T> expm1_neg(const Arr<T>& x, bool vector_lanes, const std::string& simd) {
  const pcf::simd::Isa isa = parse_isa(simd);
  py::array_t<T> out(x.size());
  pcf::expm1_neg_lanes<T>(x.data(), x.size(), vector_lanes, isa, out.mutable_data());
  return out;
}

// One selection pass over the pairs i < j of the rows: (below, counts) with bins > 0, else
// (below, values in [lo, hi]).
template <typename T>
py::tuple d2_pass(const py::array& rows, const Arr<T>& shift, double lo, double hi,
                  std::int64_t bins, std::int64_t block, const std::string& simd) {
  const auto v = view2d<T>(rows, "rows");
  if (shift.size() != v.cols) throw py::value_error("shift must have one entry per column of rows");
  if (block < 1) throw py::value_error("block must be at least 1; got " + std::to_string(block));
  if (bins < 0) throw py::value_error("bins must be >= 0; got " + std::to_string(bins));
  if (!(lo <= hi)) throw py::value_error("the window needs lo <= hi");
  const pcf::simd::Isa isa = parse_isa(simd);
  pcf::D2Pass r;
  {
    py::gil_scoped_release release;
    r = pcf::pair_distance_pass<T>(v, shift.data(), pcf::D2Window{lo, hi, bins}, block, isa);
  }
  if (bins > 0) {
    py::array_t<std::int64_t> counts(bins);
    std::copy(r.counts.begin(), r.counts.end(), counts.mutable_data());
    return py::make_tuple(r.below, counts);
  }
  return py::make_tuple(r.below, pcf_bind::to_numpy(r.values));
}

template <typename T>
void def_rbf(py::module_& m, const char* suffix) {
  m.def((std::string("d2_pass") + suffix).c_str(), &d2_pass<T>, py::arg("rows"), py::arg("shift"),
        py::arg("lo"), py::arg("hi"), py::arg("bins"), py::arg("block"),
        py::arg("simd") = "auto");
  m.def((std::string("rbf_pairs") + suffix).c_str(), &rbf_pairs<T>, py::arg("xa"), py::arg("ya"),
        py::arg("xb"), py::arg("yb"), py::arg("shift_x"), py::arg("shift_y"), py::arg("kernel_x"),
        py::arg("kernel_y"), py::arg("same_block"), py::arg("block"), py::arg("simd") = "auto");
  m.def((std::string("rbf_tile") + suffix).c_str(), &rbf_tile<T>, py::arg("gx"), py::arg("gy"),
        py::arg("nxa"), py::arg("nya"), py::arg("nxb"), py::arg("nyb"), py::arg("kernel_x"),
        py::arg("kernel_y"), py::arg("same_block"), py::arg("simd") = "auto");
  m.def((std::string("expm1_neg") + suffix).c_str(), &expm1_neg<T>, py::arg("x"),
        py::arg("vector_lanes"), py::arg("simd") = "auto",
        "expm1(x) for x <= 0 by the kernels' shared math (scalar or vector lanes), for tests");
}

}  // namespace

void bind_rbf(py::module_& m) {
  def_rbf<float>(m, "_f32");
  def_rbf<double>(m, "_f64");
  m.def("simd_isa", [] { return std::string(pcf::simd::isa_name(pcf::simd::detected_isa())); },
        "The instruction set the fused kernels run with on this CPU (PYCKAFAST_SIMD caps it)");
}
