// pybind11 module pyckafast._ext: host kernels that produce pyckafast's terms.
// Argument checks name the argument, as the Python API does.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <string>

#include "bind_util.h"
#include "gram_products_cpu.h"
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

// The data pointers of a side's Grams: each a C-contiguous (n, n) array of dtype T (no
// conversion: the caller picks the kernel by dtype), all of one n.
template <typename T>
std::vector<const T*> gram_pointers(const py::sequence& grams, py::ssize_t& n, const char* name) {
  std::vector<const T*> out;
  for (py::size_t k = 0; k < grams.size(); ++k) {
    py::object item = grams[k];
    const std::string what = std::string(name) + "[" + std::to_string(k) + "]";
    if (!py::isinstance<py::array_t<T, py::array::c_style>>(item))
      throw py::type_error(what + " must be a C-contiguous array of this kernel's dtype");
    auto a = item.cast<py::array>();
    if (a.ndim() != 2 || a.shape(0) != a.shape(1))
      throw py::value_error(what + " must be a square (b, b) Gram");
    if (n >= 0 && a.shape(0) != n)
      throw py::value_error(what + " has " + std::to_string(a.shape(0)) +
                            " samples where the first Gram has " + std::to_string(n));
    n = a.shape(0);
    out.push_back(static_cast<const T*>(a.data()));
  }
  return out;
}

template <typename T>
py::tuple gram_products(const py::sequence& grams_a, const py::object& grams_b) {
  py::ssize_t n = -1;
  const auto a = gram_pointers<T>(grams_a, n, "grams_a");
  std::vector<const T*> b;
  if (!grams_b.is_none()) b = gram_pointers<T>(grams_b.cast<py::sequence>(), n, "grams_b");
  if (a.empty() || (!grams_b.is_none() && b.empty()))
    throw py::value_error("each side needs at least one Gram; got an empty list");
  const auto la = static_cast<py::ssize_t>(a.size());
  const auto lb = static_cast<py::ssize_t>(b.empty() ? a.size() : b.size());
  const auto own_b = static_cast<py::ssize_t>(b.size());
  py::array_t<double> trace({la, lb}), sq_a(la), rows_a({la, n}), sq_b(own_b), rows_b({own_b, n});
  {
    py::gil_scoped_release release;  // the sequences keep the Grams alive
    pcf::gram_products<T>(a, b, n, trace.mutable_data(), sq_a.mutable_data(),
                          rows_a.mutable_data(), sq_b.mutable_data(), rows_b.mutable_data());
  }
  return py::make_tuple(trace, sq_a, rows_a, sq_b, rows_b);
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
  const char* products_doc =
      "(trace, sq_a, rows_a, sq_b, rows_b) of one batch's zero-diagonal Grams (float64): "
      "tr(K~_l L~_m), tr(K~_l K~_l), K~_l 1, and side b's; grams_b None: the symmetric map";
  m.def("gram_products_f32", &gram_products<float>, py::arg("grams_a"), py::arg("grams_b"),
        products_doc);
  m.def("gram_products_f64", &gram_products<double>, py::arg("grams_a"), py::arg("grams_b"),
        products_doc);
  m.def("max_threads", &pcf::max_threads, "threads the kernels use when called from this thread");
  m.def("set_thread_limit", [](int n) { pcf::thread_limit() = std::max(0, n); }, py::arg("n"),
        "threads the kernels may use when called from this thread (0: the default)");
}
