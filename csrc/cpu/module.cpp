// pybind11 module pyckafast._ext: host kernels that produce pyckafast's terms.
// Argument checks name the argument, as the Python API does.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <string>

#include "bind_util.h"
#include "linear_moments.h"
#include "rbf_tiles.h"

namespace py = pybind11;
void bind_linear_columns(py::module_& m);  // linear_columns_bind.cpp: host twin of the CUDA kernels

namespace {

using pcf_bind::c_contiguous_out;
using pcf_bind::to_numpy;
using pcf_bind::view2d;

template <typename T>
using Arr = py::array_t<T, py::array::forcecast>;

template <typename T>
py::tuple linear_moments(const py::array& x, const py::array& y, const Arr<T>& shift_x,
                         const Arr<T>& shift_y, py::array out_x, py::array out_y, bool debiased) {
  auto vx = view2d<T>(x, "x");
  auto vy = view2d<T>(y, "y");
  if (vx.rows != vy.rows) throw py::value_error("x and y must have the same number of rows");
  if (shift_x.size() != vx.cols) throw py::value_error("shift_x must have one entry per column of x");
  if (shift_y.size() != vy.cols) throw py::value_error("shift_y must have one entry per column of y");
  T* ox = c_contiguous_out<T>(out_x, vx.rows, vx.cols, "out_x");
  T* oy = c_contiguous_out<T>(out_y, vy.rows, vy.cols, "out_y");
  pcf::LinearMoments r;
  {
    py::gil_scoped_release release;
    r = pcf::linear_moments<T>(vx, vy, shift_x.data(), shift_y.data(), ox, oy, debiased);
  }
  py::array_t<double> scalars(5);
  std::copy(r.scalars, r.scalars + 5, scalars.mutable_data());
  return py::make_tuple(to_numpy(r.sum_x), to_numpy(r.sum_y), to_numpy(r.qx), to_numpy(r.rx),
                        to_numpy(r.qy), to_numpy(r.ry), scalars);
}

template <typename T>
const T* c_contiguous_in(const py::array& a, py::ssize_t rows, py::ssize_t cols,
                         const char* name) {
  if (!py::isinstance<py::array_t<T, py::array::c_style>>(a) || a.ndim() != (cols < 0 ? 1 : 2) ||
      a.shape(0) != rows || (cols >= 0 && a.shape(1) != cols))
    throw py::value_error(std::string(name) +
                          " must be a C-contiguous array of the tile's shape and dtype");
  return static_cast<const T*>(a.data());
}

// One RBF tile pair from its dot-product tiles: (s_kl, s_kk, s_ll, row_k_a, row_l_a, row_k_b,
// row_l_b) of E = expm1(-gamma_x d2x), F = expm1(-gamma_y d2y) (see csrc/cpu/rbf_tiles.h).
template <typename T>
py::tuple rbf_tile(const py::array& gx, const py::array& gy, const py::array& nxa,
                   const py::array& nya, const py::array& nxb, const py::array& nyb,
                   double gamma_x, double gamma_y, bool diagonal) {
  if (gx.ndim() != 2) throw py::value_error("gx must be a 2-D dot-product tile");
  const py::ssize_t ma = gx.shape(0), mb = gx.shape(1);
  if (diagonal && ma != mb) throw py::value_error("a diagonal tile must be square");
  const T* px = c_contiguous_in<T>(gx, ma, mb, "gx");
  const T* py_ = c_contiguous_in<T>(gy, ma, mb, "gy");
  const T* pnxa = c_contiguous_in<T>(nxa, ma, -1, "nxa");
  const T* pnya = c_contiguous_in<T>(nya, ma, -1, "nya");
  const T* pnxb = c_contiguous_in<T>(nxb, mb, -1, "nxb");
  const T* pnyb = c_contiguous_in<T>(nyb, mb, -1, "nyb");
  py::array_t<double> rka(ma), rla(ma), rkb(mb), rlb(mb);
  std::fill_n(rka.mutable_data(), ma, 0.0);
  std::fill_n(rla.mutable_data(), ma, 0.0);
  std::fill_n(rkb.mutable_data(), mb, 0.0);
  std::fill_n(rlb.mutable_data(), mb, 0.0);
  double* out[4] = {rka.mutable_data(), rla.mutable_data(), rkb.mutable_data(),
                    rlb.mutable_data()};
  pcf::RbfSums s;
  {
    py::gil_scoped_release release;
    s = pcf::rbf_tile_terms<T>(px, py_, pnxa, pnya, pnxb, pnyb, ma, mb, static_cast<T>(gamma_x),
                               static_cast<T>(gamma_y), diagonal, out[0], out[1], out[2],
                               out[3]);
  }
  return py::make_tuple(s.s_kl, s.s_kk, s.s_ll, rka, rla, rkb, rlb);
}

}  // namespace

PYBIND11_MODULE(_ext, m) {
  m.doc() = "pyckafast host kernels (C++17, OpenMP): the CPU twins of the CUDA kernels";
  bind_linear_columns(m);
  m.def("linear_moments_f32", &linear_moments<float>, py::arg("x"), py::arg("y"),
        py::arg("shift_x"), py::arg("shift_y"), py::arg("out_x"), py::arg("out_y"),
        py::arg("debiased"));
  m.def("linear_moments_f64", &linear_moments<double>, py::arg("x"), py::arg("y"),
        py::arg("shift_x"), py::arg("shift_y"), py::arg("out_x"), py::arg("out_y"),
        py::arg("debiased"));
  m.def("rbf_tile_f32", &rbf_tile<float>, py::arg("gx"), py::arg("gy"), py::arg("nxa"),
        py::arg("nya"), py::arg("nxb"), py::arg("nyb"), py::arg("gamma_x"), py::arg("gamma_y"),
        py::arg("diagonal"));
  m.def("rbf_tile_f64", &rbf_tile<double>, py::arg("gx"), py::arg("gy"), py::arg("nxa"),
        py::arg("nya"), py::arg("nxb"), py::arg("nyb"), py::arg("gamma_x"), py::arg("gamma_y"),
        py::arg("diagonal"));
  m.def("max_threads", &pcf::max_threads, "OpenMP threads the kernels use");
}
