// Host threading and the strided input view shared by every CPU kernel (linear moments, fused RBF
// pass, distance passes, host twins): one thread-count policy and one work loop, so the kernels
// cannot disagree on how many threads they start or how work is handed out.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <thread>
#include <vector>

namespace pcf {

// A strided 2-D view: element (i, j) is data[i * row_stride + j * col_stride] (in elements).
template <typename T>
struct View2D {
  const T* data;
  std::int64_t rows, cols, row_stride, col_stride;
};

// The thread limit of the calling thread: pyckafast sets it from its one thread setting
// (pyckafast/_core/threads.py) before every kernel call, so a kernel called from a worker of a
// chunk-parallel pass runs on that worker alone. thread_local: Python threads are OS threads.
inline int& thread_limit() {
  static thread_local int limit = 0;
  return limit;
}

// Threads a kernel may use: the calling thread's limit, else PYCKAFAST_NUM_THREADS, else the
// hardware count. No OpenMP runtime is involved, so another library's OpenMP settings (Numba's,
// torch's) cannot change it.
inline int max_threads() {
  if (thread_limit() > 0) return thread_limit();
  if (const char* env = std::getenv("PYCKAFAST_NUM_THREADS")) return std::max(1, std::atoi(env));
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

// Runs fn(thread, index) for index in [0, count) on up to `threads` threads (the caller's thread
// is thread 0), handing out indices through an atomic counter.
//
// Threads are started per call and joined, not taken from an OpenMP pool: the linear pass
// alternates with BLAS GEMMs chunk after chunk, and idle pool workers (OpenMP's, and BLAS's own)
// spin on the cores. With many small indices handed out dynamically, a thread that shares its core
// with a spinning BLAS worker simply takes fewer of them (a static split waited for it: measured
// 0.29 s instead of 0.08 s per linear pass). Callers keep one partial result per index and reduce
// them in index order, so results do not depend on the scheduling.
template <typename Fn>
inline void parallel_for(std::int64_t count, int threads, Fn&& fn) {
  std::atomic<std::int64_t> next{0};
  auto worker = [&](int t) {
    for (std::int64_t i; (i = next.fetch_add(1)) < count;) fn(t, i);
  };
  std::vector<std::thread> pool;
  const int nt = static_cast<int>(std::min<std::int64_t>(threads, count));
  for (int t = 1; t < nt; ++t) pool.emplace_back(worker, t);
  worker(0);
  for (auto& th : pool) th.join();
}

}  // namespace pcf
