// Python bindings of the host twin of the CUDA moment kernels (linear_moments_columns_f32/f64).
// Kept out of module.cpp: these exist to test the CUDA kernels' loops in CI and to emulate the
// GPU driver on the CPU, not as a backend.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <string>

#include "linear_columns.h"

namespace py = pybind11;

namespace {

template <typename T>
pcf::View2D<T> strided_view(const py::array& a, const char* name) {
  if (a.ndim() != 2 || !py::isinstance<py::array_t<T>>(a))
    throw py::value_error(std::string(name) + " must be a 2-D array of the kernel's dtype");
  const auto item = static_cast<py::ssize_t>(sizeof(T));
  if (a.strides(0) % item || a.strides(1) % item)
    throw py::value_error(std::string(name) + " has strides that are not whole elements");
  return {static_cast<const T*>(a.data()), a.shape(0), a.shape(1), a.strides(0) / item,
          a.strides(1) / item};
}

template <typename T>
T* writable_c(py::array& a, py::ssize_t rows, py::ssize_t cols, const char* name) {
  if (!py::isinstance<py::array_t<T, py::array::c_style>>(a) || a.ndim() != 2 ||
      a.shape(0) != rows || a.shape(1) != cols || !a.writeable())
    throw py::value_error(std::string(name) +
                          " must be a writable C-contiguous array of the input's shape and dtype");
  return static_cast<T*>(a.mutable_data());
}

py::array_t<double> as_numpy(const std::vector<double>& v) {
  py::array_t<double> out(static_cast<py::ssize_t>(v.size()));
  std::copy(v.begin(), v.end(), out.mutable_data());
  return out;
}

template <typename T>
py::tuple columns(const py::array& x, const py::array& y,
                  const py::array_t<T, py::array::forcecast>& shift_x,
                  const py::array_t<T, py::array::forcecast>& shift_y, py::array out_x,
                  py::array out_y, bool debiased, std::int64_t slab) {
  auto vx = strided_view<T>(x, "x");
  auto vy = strided_view<T>(y, "y");
  if (vx.rows != vy.rows) throw py::value_error("x and y must have the same number of rows");
  if (shift_x.size() != vx.cols) throw py::value_error("shift_x must have one entry per column of x");
  if (shift_y.size() != vy.cols) throw py::value_error("shift_y must have one entry per column of y");
  if (slab < 1) throw py::value_error("slab must be >= 1");
  T* ox = writable_c<T>(out_x, vx.rows, vx.cols, "out_x");
  T* oy = writable_c<T>(out_y, vy.rows, vy.cols, "out_y");
  pcf::LinearMoments r;
  {
    py::gil_scoped_release release;
    r = pcf::linear_moments_columns<T>(vx, vy, shift_x.data(), shift_y.data(), ox, oy, debiased,
                                       slab);
  }
  py::array_t<double> scalars(5);
  std::copy(r.scalars, r.scalars + 5, scalars.mutable_data());
  return py::make_tuple(as_numpy(r.sum_x), as_numpy(r.sum_y), as_numpy(r.qx), as_numpy(r.rx),
                        as_numpy(r.qy), as_numpy(r.ry), scalars);
}

}  // namespace

void bind_linear_columns(py::module_& m) {
  m.def("linear_moments_columns_f32", &columns<float>, py::arg("x"), py::arg("y"),
        py::arg("shift_x"), py::arg("shift_y"), py::arg("out_x"), py::arg("out_y"),
        py::arg("debiased"), py::arg("slab"));
  m.def("linear_moments_columns_f64", &columns<double>, py::arg("x"), py::arg("y"),
        py::arg("shift_x"), py::arg("shift_y"), py::arg("out_x"), py::arg("out_y"),
        py::arg("debiased"), py::arg("slab"));
}
