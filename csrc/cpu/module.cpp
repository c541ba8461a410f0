// pybind11 module pyckafast._ext: host kernels that produce pyckafast's terms.
// Argument checks name the argument, as the Python API does.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <string>

#include "bind_util.h"
#include "linear_moments_cpu.h"

namespace py = pybind11;
void bind_rbf(py::module_& m);             // rbf_bind.cpp: the fused RBF pass

namespace {

using pcf_bind::c_contiguous_out;
using pcf_bind::to_numpy;
using pcf_bind::view2d;

template <typename T>
// c_style: the kernels read the data pointer as contiguous, so a strided shift is copied first.
using Arr = py::array_t<T, py::array::c_style | py::array::forcecast>;

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

}  // namespace

PYBIND11_MODULE(_ext, m) {
  m.doc() = "pyckafast host kernels (C++17, std::thread): the CPU producers of the terms";
  m.def("linear_moments_f32", &linear_moments<float>, py::arg("x"), py::arg("y"),
        py::arg("shift_x"), py::arg("shift_y"), py::arg("out_x"), py::arg("out_y"),
        py::arg("debiased"));
  m.def("linear_moments_f64", &linear_moments<double>, py::arg("x"), py::arg("y"),
        py::arg("shift_x"), py::arg("shift_y"), py::arg("out_x"), py::arg("out_y"),
        py::arg("debiased"));
  bind_rbf(m);
  m.def("max_threads", &pcf::max_threads, "threads the kernels use when called from this thread");
  m.def("set_thread_limit", [](int n) { pcf::thread_limit() = std::max(0, n); }, py::arg("n"),
        "threads the kernels may use when called from this thread (0: the default)");
}
