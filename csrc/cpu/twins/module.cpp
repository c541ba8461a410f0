// pybind11 module pyckafast._twins, test-only (never imported by the package): the host twins
// of the CUDA kernels (linear_moments_twin.cpp: linear_moments_columns_f32/f64;
// rbf_pairs_twin.cpp: rbf_pairs_twin_f32/f64; d2_hist_twin.cpp: d2_hist_twin_f32/f64). They
// exist to run the CUDA kernels' loops in CI and to emulate the GPU driver on the CPU
// (tests/gpu_emulation.py), not as backends, so the shipped pyckafast._ext does not hold them.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <string>

#include "../bind_util.h"
#include "d2_hist_twin.h"
#include "linear_moments_twin.h"
#include "rbf_pairs_twin.h"

namespace py = pybind11;

namespace {

using pcf_bind::accumulator;
using pcf_bind::c_contiguous_in;
using pcf_bind::c_contiguous_out;
using pcf_bind::to_numpy;
using pcf_bind::view2d;

template <typename T>
py::tuple columns(const py::array& x, const py::array& y,
                  const py::array_t<T, py::array::c_style | py::array::forcecast>& shift_x,
                  const py::array_t<T, py::array::c_style | py::array::forcecast>& shift_y,
                  py::array out_x,
                  py::array out_y, bool debiased, std::int64_t slab) {
  auto vx = view2d<T>(x, "x");
  auto vy = view2d<T>(y, "y");
  if (vx.rows != vy.rows) throw py::value_error("x and y must have the same number of rows");
  if (shift_x.size() != vx.cols) throw py::value_error("shift_x must have one entry per column of x");
  if (shift_y.size() != vy.cols) throw py::value_error("shift_y must have one entry per column of y");
  if (slab < 1) throw py::value_error("slab must be >= 1");
  T* ox = c_contiguous_out<T>(out_x, vx.rows, vx.cols, "out_x");
  T* oy = c_contiguous_out<T>(out_y, vy.rows, vy.cols, "out_y");
  pcf::LinearMoments r;
  {
    py::gil_scoped_release release;
    r = pcf::linear_moments_columns<T>(vx, vy, shift_x.data(), shift_y.data(), ox, oy, debiased,
                                       slab);
  }
  py::array_t<double> scalars(5);
  std::copy(r.scalars, r.scalars + 5, scalars.mutable_data());
  return py::make_tuple(to_numpy(r.sum_x), to_numpy(r.sum_y), to_numpy(r.qx), to_numpy(r.rx),
                        to_numpy(r.qy), to_numpy(r.ry), scalars);
}

// Block `name` of the kernel: rows of x and y, C-contiguous and of dtype T, and their norms.
template <typename T>
pcf::RbfTwinBlock<T> twin_block(const py::array& x, const py::array& y, const py::array& nx,
                                const py::array& ny, const std::string& name) {
  if (x.ndim() != 2 || y.ndim() != 2 || x.shape(0) != y.shape(0))
    throw py::value_error("x" + name + " and y" + name + " must be 2-D with the same rows");
  const py::ssize_t m = x.shape(0);
  return {c_contiguous_in<T>(x, m, x.shape(1), ("x" + name).c_str()),
          c_contiguous_in<T>(y, m, y.shape(1), ("y" + name).c_str()),
          c_contiguous_in<T>(nx, m, -1, ("nx" + name).c_str()),
          c_contiguous_in<T>(ny, m, -1, ("ny" + name).c_str()), m};
}

// (gamma, c, m) of one side, as the kernel takes them (rbf_pair.h's RbfKernel).
template <typename T>
pcf::RbfKernel<T> twin_kernel(const py::tuple& k, const char* name) {
  if (k.size() != 3) throw py::value_error(std::string(name) + " must be (gamma, c, m)");
  const int m = k[2].cast<int>();
  if (m < 0 || m > pcf::ExpM1Table<T>::kMaxScale)
    throw py::value_error(std::string(name) + ": m out of range: " + std::to_string(m));
  return {static_cast<T>(k[0].cast<double>()), static_cast<T>(k[1].cast<double>()), m};
}

// One launch of the CUDA RBF tile kernel, run serially: adds to the row sums and slots in place,
// exactly as pcf_rbf_tiles does with CudaEngine.rbf_pair's arguments.
template <typename T>
void rbf_pairs_twin(const py::array& xa, const py::array& ya, const py::array& nxa,
                    const py::array& nya, const py::array& xb, const py::array& yb,
                    const py::array& nxb, const py::array& nyb, const py::tuple& kernel_x,
                    const py::tuple& kernel_y, bool same_block, py::array row_k_a, py::array row_l_a, py::array row_k_b,
                    py::array row_l_b, py::array sums) {
  pcf::RbfTwinArgs<T> g;
  g.a = twin_block<T>(xa, ya, nxa, nya, "a");
  g.b = twin_block<T>(xb, yb, nxb, nyb, "b");
  g.dx = xa.shape(1);
  g.dy = ya.shape(1);
  if (xb.shape(1) != g.dx || yb.shape(1) != g.dy)
    throw py::value_error("blocks a and b must have the same columns");
  if (same_block && (xa.data() != xb.data() || ya.data() != yb.data()))
    throw py::value_error("same_block needs block b to be block a");
  if (sums.ndim() != 2 || sums.shape(1) != 3)
    throw py::value_error("sums must have shape (slots, 3)");
  g.kx = twin_kernel<T>(kernel_x, "kernel_x");
  g.ky = twin_kernel<T>(kernel_y, "kernel_y");
  g.same_block = same_block;
  g.row_k_a = accumulator(row_k_a, g.a.rows, "row_k_a");
  g.row_l_a = accumulator(row_l_a, g.a.rows, "row_l_a");
  g.row_k_b = accumulator(row_k_b, g.b.rows, "row_k_b");
  g.row_l_b = accumulator(row_l_b, g.b.rows, "row_l_b");
  g.sums = accumulator(sums, sums.size(), "sums");
  g.nslots = static_cast<int>(sums.shape(0));
  if (g.nslots < 1) throw py::value_error("sums needs at least one slot");
  py::gil_scoped_release release;
  pcf::rbf_pairs_twin<T>(g);
}

template <typename T>
void def_rbf_twin(py::module_& m, const std::string& suffix) {
  m.def(("rbf_pairs_twin" + suffix).c_str(), &rbf_pairs_twin<T>, py::arg("xa"), py::arg("ya"),
        py::arg("nxa"), py::arg("nya"), py::arg("xb"), py::arg("yb"), py::arg("nxb"),
        py::arg("nyb"), py::arg("kernel_x"), py::arg("kernel_y"), py::arg("same_block"),
        py::arg("row_k_a"), py::arg("row_l_a"), py::arg("row_k_b"), py::arg("row_l_b"),
        py::arg("sums"));
  m.def(("rbf_twin_tile_rows" + suffix).c_str(), &pcf::rbf_twin_tile_rows<T>,
        "Rows per tile side of the CUDA RBF kernel for this dtype (16 TM)");
}

// The uint64 counter array `name` of `size` entries (C-contiguous, writable), added to in place.
std::uint64_t* counters(py::array& a, py::ssize_t size, const char* name) {
  if (!a.dtype().is(py::dtype::of<std::uint64_t>()) || a.size() != size ||
      !(a.flags() & py::array::c_style) || !a.writeable())
    throw py::value_error(std::string(name) + " must be a writable C-contiguous uint64 array of " +
                          std::to_string(size) + " entries");
  return static_cast<std::uint64_t*>(a.mutable_data());
}

// One side of one launch of the CUDA distance-histogram kernel, run serially (d2_hist_twin.cpp):
// adds to below, counts (bins > 0) or collects into values / nvalues (bins == 0), in place.
template <typename T>
void d2_hist_twin(const py::array& a, const py::array& b, const py::array& na,
                  const py::array& nb, bool same_block, double lo, double hi, std::int64_t bins,
                  py::array below, py::array counts, py::array values, py::array nvalues) {
  if (a.ndim() != 2 || b.ndim() != 2 || a.shape(1) != b.shape(1))
    throw py::value_error("a and b must be 2-D with the same columns");
  if (same_block && a.data() != b.data()) throw py::value_error("same_block needs b to be a");
  if (bins < 0) throw py::value_error("bins must be >= 0");
  pcf::D2HistTwinArgs<T> g;
  g.ma = a.shape(0);
  g.mb = b.shape(0);
  g.d = a.shape(1);
  g.a = c_contiguous_in<T>(a, g.ma, g.d, "a");
  g.b = c_contiguous_in<T>(b, g.mb, g.d, "b");
  g.na = c_contiguous_in<T>(na, g.ma, -1, "na");
  g.nb = c_contiguous_in<T>(nb, g.mb, -1, "nb");
  g.same_block = same_block;
  g.lo = lo;
  g.hi = hi;
  g.bins = bins;
  g.below = counters(below, 1, "below");
  g.counts = bins > 0 ? counters(counts, bins, "counts") : nullptr;  // ignored when collecting
  if (!values.dtype().is(py::dtype::of<double>()) || !(values.flags() & py::array::c_style) ||
      !values.writeable())
    throw py::value_error("values must be a writable C-contiguous float64 array");
  g.values = static_cast<double*>(values.mutable_data());
  g.capacity = values.size();
  g.nvalues = counters(nvalues, 1, "nvalues");
  py::gil_scoped_release release;
  pcf::d2_hist_twin<T>(g);
}

template <typename T>
void def_d2_hist_twin(py::module_& m, const std::string& suffix) {
  m.def(("d2_hist_twin" + suffix).c_str(), &d2_hist_twin<T>, py::arg("a"), py::arg("b"),
        py::arg("na"), py::arg("nb"), py::arg("same_block"), py::arg("lo"), py::arg("hi"),
        py::arg("bins"), py::arg("below"), py::arg("counts"), py::arg("values"),
        py::arg("nvalues"));
}

}  // namespace

PYBIND11_MODULE(_twins, m) {
  m.doc() = "pyckafast._twins (test-only): host twins of the CUDA kernels, run by the tests";
  def_d2_hist_twin<float>(m, "_f32");
  def_d2_hist_twin<double>(m, "_f64");
  def_rbf_twin<float>(m, "_f32");
  def_rbf_twin<double>(m, "_f64");
  m.def("linear_moments_columns_f32", &columns<float>, py::arg("x"), py::arg("y"),
        py::arg("shift_x"), py::arg("shift_y"), py::arg("out_x"), py::arg("out_y"),
        py::arg("debiased"), py::arg("slab"));
  m.def("linear_moments_columns_f64", &columns<double>, py::arg("x"), py::arg("y"),
        py::arg("shift_x"), py::arg("shift_y"), py::arg("out_x"), py::arg("out_y"),
        py::arg("debiased"), py::arg("slab"));
}
