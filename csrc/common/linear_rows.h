// Per-element math of the linear-CKA moment pass, shared by the C++ and CUDA kernels.
// A value is shifted in the input dtype T (exact for values near the shift, by Sterbenz's lemma,
// and it keeps the following GEMMs in T) and every accumulation is done in double.
//
// Two loop orders use the same element functions:
//  * by rows (shift_row, weighted_row): the host kernel, one cache-friendly row at a time;
//  * by columns (shift_column, weighted_column) and strided row norms (row_sq_norm): the CUDA
//    kernel, where one thread owns a column and walks down the rows (coalesced across threads),
//    and one warp shares a row for its norm. The host twin of the CUDA kernel
//    (csrc/cpu/twins/linear_moments_twin.cpp) runs these same loops in the kernel's decomposition.
#pragma once
#include "pcf_common.h"

namespace pcf {

// One element: the shifted value in T, added to its column sum in double.
template <typename T>
PCF_HD T shift_element(T v, T shift, double& colsum) {
  const T d = v - shift;
  colsum += static_cast<double>(d);
  return d;
}

// One element of a weighted column sum: qsum += q * v, rsum += r * v (in double).
template <typename T>
PCF_HD void weight_element(T v, double q, double r, double& qsum, double& rsum) {
  const double w = static_cast<double>(v);
  qsum += q * w;
  rsum += r * w;
}

// The square of one shifted value in double (the row norms q_i, r_i of debiased CKA).
template <typename T>
PCF_HD double square_element(T v) {
  const double w = static_cast<double>(v);
  return w * w;
}

// dst[j] = src[j * stride] - shift[j]; colsum[j] += dst[j]; returns |dst|^2 in double when
// WithNorm (debiased CKA needs it), else 0.
template <bool WithNorm, typename T>
PCF_HD double shift_row(const T* src, pcf_index stride, const T* shift, T* dst, double* colsum,
                        pcf_index p) {
  double q = 0.0;
  PCF_SIMD_SUM(q)
  for (pcf_index j = 0; j < p; ++j) {
    const T v = shift_element(src[j * stride], shift[j], colsum[j]);
    dst[j] = v;
    if (WithNorm) q += square_element(v);
  }
  return q;
}

// qsum += q * row, rsum += r * row: the q- and r-weighted column sums of debiased CKA.
template <typename T>
PCF_HD void weighted_row(const T* row, pcf_index p, double q, double r, double* qsum,
                         double* rsum) {
  for (pcf_index j = 0; j < p; ++j) weight_element(row[j], q, r, qsum[j], rsum[j]);
}

// The five scalar row-norm sums: sum q, sum r, sum q^2, sum r^2, sum q r.
PCF_HD void norm_scalars(double q, double r, double* s) {
  s[0] += q;
  s[1] += r;
  s[2] += q * q;
  s[3] += r * r;
  s[4] += q * r;
}

// One column over rows [lo, hi): dst[i * ld] = src[i * row_stride] - shift for each row i (src
// and dst already point at the column); returns the column's partial sum in double.
template <typename T>
PCF_HD double shift_column(const T* src, pcf_index row_stride, T shift, T* dst, pcf_index ld,
                           pcf_index lo, pcf_index hi) {
  double sum = 0.0;
  for (pcf_index i = lo; i < hi; ++i) dst[i * ld] = shift_element(src[i * row_stride], shift, sum);
  return sum;
}

// One column over rows [lo, hi) of the shifted chunk: *qsum += sum_i q_i col[i * ld], and
// likewise *rsum with r_i.
template <typename T>
PCF_HD void weighted_column(const T* col, pcf_index ld, const double* q, const double* r,
                            pcf_index lo, pcf_index hi, double* qsum, double* rsum) {
  double a = 0.0, b = 0.0;
  for (pcf_index i = lo; i < hi; ++i) weight_element(col[i * ld], q[i], r[i], a, b);
  *qsum += a;
  *rsum += b;
}

// Partial squared norm of a shifted row over the columns first, first + step, ... < p (one
// lane's share when `step` lanes split the row).
template <typename T>
PCF_HD double row_sq_norm(const T* row, pcf_index first, pcf_index p, pcf_index step) {
  double q = 0.0;
  for (pcf_index j = first; j < p; j += step) q += square_element(row[j]);
  return q;
}

}  // namespace pcf
