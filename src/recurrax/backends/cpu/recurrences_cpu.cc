// The LSTM and the reset-after GRU on CPU as XLA FFI custom calls (float32): the forward pass over a
// whole sequence and the backward pass of its recurrent part, for each. recurrax.native.build compiles
// this file with the system C++ compiler on first use (-O3 -march=native) and registers the targets.
//
// Why kernels: inside an XLA while loop each step runs its (N, H) @ (H, G) matmul as a separate thunk
// at 140-160 GFLOP/s on this class of machine, followed by element-wise fusions and fresh buffers.
// Here a step is one pass over tiles that each compute MR rows x VW hidden units of every gate from
// weights packed once per call into panels, with the gate math done on the accumulators while they
// are still in registers (benchmarks/RESULTS.md, step 13). The backward passes do the same for the
// (N, G) @ (G, H) product of each step; the weight gradients are left to XLA as large matmuls.
//
// Layouts (batch-major, batch flattened): xs (N, T, I); w_i (I, G); b (G); w_h (H, G); states (N, H);
// sequences (N, T, H) and gates (N, T, G); G = 4H (LSTM gates i, f, g, o) or 3H (GRU gates r, z, n).
// Batch-major is the layout of the callers' arrays, so no transposes surround the calls; a tile's rows
// are then T rows apart in a sequence, taken in the order of `Rows` (longest first, see Lengths).
//
// Resets (recurrax.scan's `resets`): resets (N, T) bool and a restored state (N, H) per field, or all three
// empty. Step t of row n reads the restored state instead of its previous one where resets[n, t]; backward,
// the cotangent that reaches that previous state goes to the restored state's instead (accumulated over the
// row's resets), and nothing flows further back.
//
// Work is split into tiles per step (see Schedule); the calling thread takes tiles too, so it never
// waits on a helper that has not started, and a helper that starts late finds nothing left.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <type_traits>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

#if defined(__AVX512F__)
constexpr int VW = 16;  // floats per vector
constexpr int MR = 6;   // rows per forward tile: 6 x 4 accumulators + 4 panel vectors fit 32 registers
#else
constexpr int VW = 8;
constexpr int MR = 3;
#endif

typedef float vf __attribute__((vector_size(VW * 4)));
typedef float vfu __attribute__((vector_size(VW * 4), aligned(4)));  // unaligned access
typedef int32_t vi __attribute__((vector_size(VW * 4)));

inline vf load(const float* p) { return *reinterpret_cast<const vfu*>(p); }
inline void store(float* p, vf v) { *reinterpret_cast<vfu*>(p) = v; }
inline vf splat(float x) { return x - vf{}; }

// exp as in Cephes' expf (relative error ~2 ulp on [-87, 88]). The clamp is written so a NaN fails both
// comparisons and passes through (NaN in, NaN out, as XLA's exp), instead of becoming a large finite value.
inline vf vexp(vf x) {
  x = x > splat(88.3762626647949f) ? splat(88.3762626647949f) : x;
  x = x < splat(-88.3762626647949f) ? splat(-88.3762626647949f) : x;
  const vf magic = splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  vf n = (x * splat(1.44269504088896341f) + magic) - magic;
  vf r = x - n * splat(0.693359375f);
  r = r - n * splat(-2.12194440e-4f);
  vf p = splat(1.9875691500e-4f);
  p = p * r + splat(1.3981999507e-3f);
  p = p * r + splat(8.3334519073e-3f);
  p = p * r + splat(4.1665795894e-2f);
  p = p * r + splat(1.6666665459e-1f);
  p = p * r + splat(5.0000001201e-1f);
  vf y = p * r * r + r + splat(1.0f);
  vi e = (__builtin_convertvector(n, vi) + 127) << 23;
  vf scale;
  std::memcpy(&scale, &e, sizeof(scale));
  return y * scale;
}

inline vf vsigmoid(vf x) { return splat(1.0f) / (splat(1.0f) + vexp(-x)); }

// tanh as in Cephes' tanhf: an odd polynomial below |x| = 0.625 (no cancellation near 0), else
// 1 - 2 / (exp(2|x|) + 1) with the sign restored.
inline vf vtanh(vf x) {
  vf ax = x < splat(0.0f) ? -x : x;
  vf z = x * x;
  vf p = splat(-5.70498872745e-3f);
  p = p * z + splat(2.06390887954e-2f);
  p = p * z + splat(-5.37397155531e-2f);
  p = p * z + splat(1.33314422036e-1f);
  p = p * z + splat(-3.33332819422e-1f);
  vf small = p * z * x + x;
  vf big = splat(1.0f) - splat(2.0f) / (vexp(ax + ax) + splat(1.0f));
  big = x < splat(0.0f) ? -big : big;
  return ax < splat(0.625f) ? small : big;
}

// ------------------------------------------------------------------------------------------ schedule

// Shared between the caller and its helpers, owned jointly: a helper may start after the call ended.
// Each step's tiles form a range [lo, hi) packed in one atomic word: the caller takes tiles from the
// front and helpers from the back, so with tiles ordered by hidden-unit chunk each core keeps working
// on the same part of the packed weights step after step (they stay in its L2 cache).
struct Schedule {
  std::atomic<int64_t> done{0};  // tiles finished, over all steps
  std::atomic<int64_t> step{0};  // the step the caller is on: where a late helper starts
  std::unique_ptr<std::atomic<uint64_t>[]> ranges;
  int64_t steps = 0, tiles = 0;

  Schedule(int64_t steps, int64_t tiles) : ranges(new std::atomic<uint64_t>[steps]), steps(steps), tiles(tiles) {
    for (int64_t s = 0; s < steps; ++s) ranges[s].store(static_cast<uint64_t>(tiles) << 32, std::memory_order_relaxed);
  }

  bool claim(int64_t s, bool front, int64_t& tile) {
    uint64_t v = ranges[s].load(std::memory_order_relaxed);
    for (;;) {
      uint64_t lo = v & 0xffffffffu, hi = v >> 32;
      if (lo >= hi) return false;
      uint64_t next = front ? (hi << 32) | (lo + 1) : ((hi - 1) << 32) | lo;
      if (ranges[s].compare_exchange_weak(v, next, std::memory_order_acq_rel)) {
        tile = static_cast<int64_t>(front ? lo : hi - 1);
        return true;
      }
    }
  }
};

inline void pause() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Works through the steps in order, each once every tile of the previous one is done; run(step, tile)
// does one tile. A participant never waits for a tile nobody has taken, so a helper that does not
// start (a busy pool) only means the caller does all the work.
template <typename Run>
void work(Schedule& sc, bool front, const Run& run) {
  for (int64_t s = front ? 0 : sc.step.load(std::memory_order_acquire); s < sc.steps; ++s) {
    if (front) sc.step.store(s, std::memory_order_release);
    for (int spins = 0; sc.done.load(std::memory_order_acquire) < s * sc.tiles; ++spins) {
      if (spins < 4096) {
        pause();
      } else {
        std::this_thread::yield();
      }
    }
    for (int64_t tile; sc.claim(s, front, tile);) {
      run(s, tile);
      sc.done.fetch_add(1, std::memory_order_acq_rel);
    }
  }
}

// Runs `steps` dependent steps of `tiles` tiles each on the caller and, when a step is worth it, on
// helpers from XLA's intra-op pool.
template <typename Run>
void run_steps(ffi::ThreadPool& pool, int64_t steps, int64_t tiles, double flops_per_step, double weight_bytes,
               const Run& run) {
  auto schedule = std::make_shared<Schedule>(steps, tiles);
  // Below ~0.5 MFLOP a step takes a few microseconds and handing tiles between cores costs about what it
  // saves (LSTM B=4, H=128, 1 MFLOP: forward 3.6 ms alone, 4.0 with a helper; training 11.9 and 9.7).
  // Above it, two cores also bring two L2 caches: B=1, I=H=256 forward 40.2 ms alone, 13.0 ms with one.
  // The same holds for weights beyond a quarter of an L2 cache, even at one row (B=1, H=208: 0.7 MB).
  bool worth = flops_per_step >= 5e5 || weight_bytes >= 5e5;
  int64_t helpers = !worth || tiles < 2 ? 0 : std::min<int64_t>(pool.num_threads() - 1, tiles - 1);
  if (helpers > 0) {
    // A helper calls `run` (which refers to buffers of this call) only on a tile it claimed, and the
    // caller returns only once every tile is done.
    auto shared_run = std::make_shared<Run>(run);
    for (int64_t k = 0; k < helpers; ++k) {
      pool.Schedule([schedule, shared_run] { work(*schedule, false, *shared_run); });
    }
  }
  work(*schedule, true, run);
  while (schedule->done.load(std::memory_order_acquire) < steps * tiles) pause();
}

// ------------------------------------------------------------------------------------- tile GEMM

// Independent partial sums per accumulator: a tile of one or two rows has too few accumulators to
// hide the FMA latency, so it keeps two sets over alternate k (summed at the end).
template <int R>
constexpr int kSplit = R <= 2 ? 2 : 1;

// acc[j][r][Slot[q]] += src[r][k] * panel[k][q] over k (j alternating), where the panel's row k holds
// sizeof...(Slot) vectors: the inner loop of every forward tile.
template <int R, int... Slot>
inline void accumulate(vf (&acc)[kSplit<R>][R][4], const float* const (&src)[R], int64_t K, const float* panel) {
  constexpr int NQ = sizeof...(Slot), S = kSplit<R>;
  constexpr int slot[NQ] = {Slot...};
  int64_t k = 0;
  for (; k + S <= K; k += S) {
    for (int j = 0; j < S; ++j) {
      const float* w = panel + (k + j) * NQ * VW;
      vf wv[NQ];
      for (int q = 0; q < NQ; ++q) wv[q] = load(w + q * VW);
      for (int r = 0; r < R; ++r) {
        float a = src[r][k + j];
        for (int q = 0; q < NQ; ++q) acc[j][r][slot[q]] += a * wv[q];
      }
    }
  }
  for (; k < K; ++k) {
    const float* w = panel + k * NQ * VW;
    for (int r = 0; r < R; ++r)
      for (int q = 0; q < NQ; ++q) acc[0][r][slot[q]] += src[r][k] * load(w + q * VW);
  }
}

// acc[0] after the partial sums are added up; the others start at zero.
template <int R>
inline void reduce(vf (&acc)[kSplit<R>][R][4]) {
  for (int j = 1; j < kSplit<R>; ++j)
    for (int r = 0; r < R; ++r)
      for (int q = 0; q < 4; ++q) acc[0][r][q] += acc[j][r][q];
}

template <int R>
inline void clear_partials(vf (&acc)[kSplit<R>][R][4]) {
  for (int j = 1; j < kSplit<R>; ++j)
    for (int r = 0; r < R; ++r)
      for (int q = 0; q < 4; ++q) acc[j][r][q] = vf{};
}

// Row n of step t in a batch-major sequence (N, T, ...).
inline int64_t seq_row(int64_t T, int64_t t, int64_t n) { return n * T + t; }

// ptr[r] = seq + (row rows[r] of step t) * width: a tile's rows of a sequence (N, T, width).
template <int R>
inline void step_rows(const float* (&ptr)[R], const float* seq, int64_t T, int64_t t, const int64_t* rows,
                      int64_t width) {
  for (int r = 0; r < R; ++r) ptr[r] = seq + seq_row(T, t, rows[r]) * width;
}

// Row pointers to the state before step t for the tile's rows: `first` (N, width) at t = 0, else step t-1
// of `seq` (N, T, width); where resets[n, t] (resets (N, T), or null for none), row n of `restored` instead.
template <int R>
inline void previous_rows(const float* (&ptr)[R], const float* first, const float* seq, int64_t T, int64_t t,
                          const int64_t* rows, int64_t width, const bool* resets = nullptr,
                          const float* restored = nullptr) {
  if (t == 0) {
    for (int r = 0; r < R; ++r) ptr[r] = first + rows[r] * width;
  } else {
    step_rows<R>(ptr, seq, T, t - 1, rows, width);
  }
  if (resets) {
    for (int r = 0; r < R; ++r)
      if (resets[seq_row(T, t, rows[r])]) ptr[r] = restored + rows[r] * width;
  }
}

// Whether row n resets before step t (never for t outside [0, T) or without resets).
inline bool resets_at(const bool* resets, int64_t T, int64_t t, int64_t n) {
  return resets && t >= 0 && t < T && resets[seq_row(T, t, n)];
}

// Where row rows[r] resets before step s + 1, the NU vectors of v[r] are a cotangent of the restored state:
// they are added to `into` (N, H) at units u0.. and cleared, so nothing flows to the state before the reset.
template <int R, int NU>
inline void divert_at_resets(vf (&v)[R][NU], const bool* resets, int64_t T, int64_t s, const int64_t* rows,
                             int64_t u0, int64_t H, float* into) {
  for (int r = 0; r < R; ++r) {
    if (!resets_at(resets, T, s + 1, rows[r])) continue;
    for (int j = 0; j < NU; ++j) {
      float* at = into + rows[r] * H + u0 + j * VW;
      store(at, load(at) + v[r][j]);
      v[r][j] = vf{};
    }
  }
}

// Buffers of the resets operands: (resets, restored...) as pointers, all null when the call has none.
inline const bool* resets_data(ffi::Buffer<ffi::PRED>& resets) {
  return resets.element_count() ? resets.typed_data() : nullptr;
}

ffi::Error check_resets(ffi::Buffer<ffi::PRED>& resets, int64_t N, int64_t T, int64_t restored_elements, int64_t H) {
  if (!resets.element_count()) return ffi::Error::Success();
  auto d = resets.dimensions();
  if (d.size() != 2 || d[0] != N || d[1] != T || restored_elements != N * H)
    return ffi::Error::InvalidArgument("recurrax kernel: resets must be (N, T) with a restored state of (N, H)");
  return ffi::Error::Success();
}

// gh[r][v] += sum_k d[r][k] * panel[k][v], d[r] row rows[r] of step t of the sequence `seq` (N, T, width): one
// step's gate gradients times w_h^T for NU vectors of units, the inner loop of every backward tile.
template <int R, int NU>
inline void accumulate_backward(vf (&gh)[R][NU], const float* seq, int64_t T, int64_t t, const int64_t* idx,
                                int64_t width, int64_t G, const float* panel) {
  const float* rows[R];
  step_rows<R>(rows, seq, T, t, idx, width);
  for (int64_t k = 0; k < G; ++k) {
    const float* w = panel + k * NU * VW;
    vf wv[NU];
    for (int v = 0; v < NU; ++v) wv[v] = load(w + v * VW);
    for (int r = 0; r < R; ++r) {
      float a = rows[r][k];
      for (int v = 0; v < NU; ++v) gh[r][v] += a * wv[v];
    }
  }
}

// Calls f(std::integral_constant<int, min(n, Max)>()): a runtime count (rows, vectors) as the tile's
// compile-time size, so the accumulators stay in registers.
template <int Max, typename F>
inline void with_size(int64_t n, const F& f) {
  if constexpr (Max > 1) {
    if (n < Max) return with_size<Max - 1>(n, f);
  }
  f(std::integral_constant<int, Max>());
}

// ------------------------------------------------------------------------------------------ drivers

constexpr int BR = MR;  // rows per backward tile
constexpr int BU = 4;   // unit vectors per backward tile: BR x BU accumulators, like the forward tile

// Lengths (recurrax.scan's `lengths`, right padding): lengths (N, 1) int32, or (N, 0) for every row running all
// T steps. Row n runs steps t < lengths[n] (clamped to [0, T]); at the others nothing is computed and its
// results there are zero, so its gradients there are zero too. The tiles take the rows by decreasing length,
// so at each step the rows still running come first and a tile of finished rows costs only its zeros
// (PyTorch's packed sequences, without repacking the arrays).
struct Rows {
  std::vector<int64_t> order;    // the rows by decreasing length (stable)
  std::vector<int64_t> running;  // running[t]: how many rows run step t, t in [0, T)

  // t = -1 is the backward pass's last step (the initial state's cotangent): every row runs it, so no pad is ever
  // written there (a pad's seq_row(T, -1, n) would be row n-1's last step).
  int64_t at(int64_t t) const { return t < 0 ? static_cast<int64_t>(order.size()) : running[t]; }
};

Rows rows_by_length(ffi::Buffer<ffi::S32>& lengths, int64_t N, int64_t T) {
  Rows rows{std::vector<int64_t>(N), std::vector<int64_t>(T, N)};
  for (int64_t n = 0; n < N; ++n) rows.order[n] = n;
  if (!lengths.element_count()) return rows;
  std::vector<int64_t> len(N);
  for (int64_t n = 0; n < N; ++n) len[n] = std::clamp<int64_t>(lengths.typed_data()[n], 0, T);
  std::stable_sort(rows.order.begin(), rows.order.end(), [&](int64_t a, int64_t b) { return len[a] > len[b]; });
  std::vector<int64_t> ending(T + 1, 0);  // ending[l]: rows of length l
  for (int64_t n = 0; n < N; ++n) ++ending[len[n]];
  for (int64_t t = 0, left = N; t < T; ++t) rows.running[t] = left -= ending[t];
  return rows;
}

ffi::Error check_lengths(ffi::Buffer<ffi::S32>& lengths, int64_t N) {
  if (lengths.element_count() && lengths.element_count() != N)
    return ffi::Error::InvalidArgument("recurrax kernel: lengths must be (N, 1), or (N, 0) for none");
  return ffi::Error::Success();
}

// A forward pass: T steps of tiles of MR rows (the last one shorter) x VW hidden units, chunk-major so
// that consecutive tiles reuse one chunk's panel. tile(R, t, rows, chunk) computes one for the running rows
// rows[0..R), and pad(t, n, chunk) writes the zeros of a row n that has ended.
template <typename Tile, typename Pad>
void run_forward(ffi::ThreadPool& pool, const Rows& rows, int64_t H, double flops_per_step,
                 const std::vector<float>& panels, const Tile& tile, const Pad& pad) {
  const int64_t N = rows.order.size(), T = rows.running.size(), row_blocks = (N + MR - 1) / MR;
  run_steps(pool, T, row_blocks * (H / VW), flops_per_step, 4.0 * panels.size(), [&](int64_t t, int64_t i) {
    const int64_t u = i / row_blocks, r0 = i % row_blocks * MR, size = std::min<int64_t>(MR, N - r0);
    const int64_t* idx = rows.order.data() + r0;
    const int64_t live = std::clamp<int64_t>(rows.at(t) - r0, 0, size);
    if (live > 0) with_size<MR>(live, [&](auto R) { tile(R, t, idx, u); });
    for (int64_t r = live; r < size; ++r) pad(t, idx[r], u);
  });
}

// A backward pass: steps s = T-1 down to -1 (s = -1 produces the initial state's cotangent) of tiles
// of BR rows x up to BU vectors of hidden units. tile(R, NU, s, rows, u0) computes one for the running rows,
// pad(s, n, u0, width) writes the zero gradients of a row n that has ended.
template <typename Tile, typename Pad>
void run_backward(ffi::ThreadPool& pool, const Rows& rows, int64_t H, double flops_per_step,
                  const std::vector<float>& panels, const Tile& tile, const Pad& pad) {
  const int64_t N = rows.order.size(), T = rows.running.size();
  const int64_t row_blocks = (N + BR - 1) / BR, vectors = H / VW, chunks = (vectors + BU - 1) / BU;
  run_steps(pool, T + 1, row_blocks * chunks, flops_per_step, 4.0 * panels.size(), [&](int64_t j, int64_t i) {
    const int64_t u = i / row_blocks, r0 = i % row_blocks * BR, size = std::min<int64_t>(BR, N - r0), s = T - 1 - j;
    const int64_t* idx = rows.order.data() + r0;
    const int64_t live = std::clamp<int64_t>(rows.at(s) - r0, 0, size), nu = std::min<int64_t>(BU, vectors - u * BU);
    if (live > 0) {
      with_size<BR>(live, [&](auto R) {
        with_size<BU>(nu, [&](auto NU) { tile(R, NU, s, idx, u * BU * VW); });
      });
    }
    for (int64_t r = live; r < size; ++r) pad(s, idx[r], u * BU * VW, nu * VW);
  });
}

// Panels for a forward pass: for each chunk of VW hidden units, rows k = 0..I+H-1 of [w_i; w_h]
// restricted to that chunk's columns of each of the `gates` gates, as consecutive vectors.
std::vector<float> pack_forward(const float* w_i, const float* w_h, int64_t I, int64_t H, int gates) {
  const int64_t G = gates * H, K = I + H, chunks = H / VW;
  std::vector<float> panels(chunks * K * gates * VW);
  for (int64_t u = 0; u < chunks; ++u) {
    float* dst = panels.data() + u * K * gates * VW;
    for (int64_t k = 0; k < K; ++k) {
      const float* row = k < I ? w_i + k * G : w_h + (k - I) * G;
      for (int q = 0; q < gates; ++q)
        std::memcpy(dst + (k * gates + q) * VW, row + q * H + u * VW, VW * sizeof(float));
    }
  }
  return panels;
}

// Panels for a backward pass: for each chunk of up to BU * VW hidden units starting at u0, the rows
// k = 0..G-1 of w_h^T (G = gates * H) restricted to that chunk (w_h^T[k][u0 + j] = w_h[u0 + j][k]),
// stored from offset u0 * G so that chunk widths need not be equal.
std::vector<float> pack_backward(const float* w_h, int64_t H, int64_t gates) {
  const int64_t G = gates * H;
  std::vector<float> panels(G * H);
  for (int64_t u0 = 0; u0 < H; u0 += BU * VW) {
    const int64_t width = std::min<int64_t>(BU * VW, H - u0);
    float* dst = panels.data() + u0 * G;
    for (int64_t k = 0; k < G; ++k)
      for (int64_t j = 0; j < width; ++j) dst[k * width + j] = w_h[(u0 + j) * G + k];
  }
  return panels;
}

ffi::Error check_sizes(int64_t H, int64_t expected_g, int64_t g) {
  if (H % VW != 0) return ffi::Error::InvalidArgument("recurrax kernel: the hidden size must be a multiple of the vector width");
  if (g != expected_g) return ffi::Error::InvalidArgument("recurrax kernel: the gate axis must be (number of gates) * hidden size");
  return ffi::Error::Success();
}

// ----------------------------------------------------------------------------------- LSTM forward

// z_t = b + zs_t + x_t W_i: zs (N, T, G) is the input projection computed outside (for few rows, where
// folding it into every step would re-read W_i per step) or null, and then xs has I = 0 or not.
struct Forward {
  const float *xs, *b, *h0, *c0, *zs, *panels;
  float *hs, *cs, *acts;  // acts may be null
  int64_t T, I, H;
  const bool* resets;  // (N, T), or null
  const float *h_r, *c_r;  // the restored state (N, H)
};

template <int R>
void forward_tile(const Forward& p, int64_t t, const int64_t* rows, int64_t u) {
  const int64_t H = p.H, I = p.I, K = I + H, G = 4 * H, u0 = u * VW;
  const float* panel = p.panels + u * K * 4 * VW;
  vf acc[kSplit<R>][R][4];
  for (int q = 0; q < 4; ++q) {
    vf bq = load(p.b + q * H + u0);
    for (int r = 0; r < R; ++r)
      acc[0][r][q] = p.zs ? bq + load(p.zs + seq_row(p.T, t, rows[r]) * G + q * H + u0) : bq;
  }
  clear_partials<R>(acc);
  const float *x[R], *h[R], *c[R];
  step_rows<R>(x, p.xs, p.T, t, rows, I);
  previous_rows<R>(h, p.h0, p.hs, p.T, t, rows, H, p.resets, p.h_r);
  previous_rows<R>(c, p.c0, p.cs, p.T, t, rows, H, p.resets, p.c_r);
  accumulate<R, 0, 1, 2, 3>(acc, x, I, panel);
  accumulate<R, 0, 1, 2, 3>(acc, h, H, panel + I * 4 * VW);
  reduce<R>(acc);
  for (int r = 0; r < R; ++r) {
    const int64_t row = seq_row(p.T, t, rows[r]);
    vf i = vsigmoid(acc[0][r][0]), f = vsigmoid(acc[0][r][1]), g = vtanh(acc[0][r][2]), o = vsigmoid(acc[0][r][3]);
    vf c_new = f * load(c[r] + u0) + i * g;
    store(p.cs + row * H + u0, c_new);
    store(p.hs + row * H + u0, o * vtanh(c_new));
    if (p.acts) {
      float* a = p.acts + row * G + u0;
      store(a, i);
      store(a + H, f);
      store(a + 2 * H, g);
      store(a + 3 * H, o);
    }
  }
}

// The zeros of row n at step t past its length, for the VW units of chunk u.
void forward_pad(const Forward& p, int64_t t, int64_t n, int64_t u) {
  const int64_t row = seq_row(p.T, t, n), H = p.H, u0 = u * VW;
  store(p.cs + row * H + u0, vf{});
  store(p.hs + row * H + u0, vf{});
  if (p.acts)
    for (int q = 0; q < 4; ++q) store(p.acts + row * 4 * H + q * H + u0, vf{});
}

ffi::Error LstmForward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> xs, ffi::Buffer<ffi::F32> w_i,
                       ffi::Buffer<ffi::F32> b, ffi::Buffer<ffi::F32> w_h, ffi::Buffer<ffi::F32> h0,
                       ffi::Buffer<ffi::F32> c0, ffi::Buffer<ffi::F32> zs, ffi::Buffer<ffi::PRED> resets,
                       ffi::Buffer<ffi::F32> h_r, ffi::Buffer<ffi::F32> c_r, ffi::Buffer<ffi::S32> lengths,
                       ffi::ResultBuffer<ffi::F32> hs, ffi::ResultBuffer<ffi::F32> cs,
                       ffi::ResultBuffer<ffi::F32> acts, bool keep_acts) {
  auto xd = xs.dimensions(), hd = h0.dimensions();
  const int64_t N = xd[0], T = xd[1], I = xd[2], H = hd[1];
  if (auto e = check_sizes(H, 4 * H, w_h.dimensions()[1]); e.failure()) return e;
  if (auto e = check_resets(resets, N, T, std::min(h_r.element_count(), c_r.element_count()), H); e.failure())
    return e;
  if (auto e = check_lengths(lengths, N); e.failure()) return e;
  if (T == 0 || N == 0) return ffi::Error::Success();
  const Rows rows = rows_by_length(lengths, N, T);
  std::vector<float> panels = pack_forward(w_i.typed_data(), w_h.typed_data(), I, H, 4);
  Forward p{xs.typed_data(),  b.typed_data(),  h0.typed_data(), c0.typed_data(),
            zs.element_count() ? zs.typed_data() : nullptr, panels.data(),
            hs->typed_data(), cs->typed_data(), keep_acts ? acts->typed_data() : nullptr, T, I, H,
            resets_data(resets), h_r.typed_data(), c_r.typed_data()};
  run_forward(
      pool, rows, H, 8.0 * N * H * (I + H), panels,
      [&p](auto R, int64_t t, const int64_t* idx, int64_t u) { forward_tile<decltype(R)::value>(p, t, idx, u); },
      [&p](int64_t t, int64_t n, int64_t u) { forward_pad(p, t, n, u); });
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------------------- LSTM backward

// dpre may share its buffer with acts (XLA aliases them): a tile reads the four gates of its units at
// step s before writing their gradients there, and nothing reads acts[s] afterwards.
struct Backward {
  const float *acts, *cs, *c0, *ct_hs, *ct_cs, *panels;  // ct_hs, ct_cs: null for zero
  float *dpre, *carry_c, *dh0;  // carry_c: (N, H), the cotangent of c flowing to the previous step
  int64_t T, H;
  const bool* resets;  // (N, T), or null
  const float* c_r;  // the restored c (N, H)
  float *dh_r, *dc_r;  // the restored state's cotangents (N, H), accumulated
};

// For the tile's rows and NU * VW hidden units from u0: the cotangent reaching h_s from step s+1
// (dpre[s+1] @ w_h^T, zero at the last step), then step s's gate cotangents and the cotangent of
// c_{s-1}. With s < 0 it stores the cotangent reaching h_{-1} as the initial state's instead.
// A row that has ended by step s + 1 has zero gate gradients there (its pad), so it gets nothing from that step,
// and its carried cotangent of c is still zero.
template <int R, int NU>
void backward_tile(const Backward& p, int64_t s, const int64_t* rows, int64_t u0) {
  const int64_t H = p.H, G = 4 * H;
  vf gh[R][NU];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NU; ++v) gh[r][v] = vf{};
  if (s + 1 < p.T) accumulate_backward<R, NU>(gh, p.dpre, p.T, s + 1, rows, G, G, p.panels + u0 * G);
  if (p.resets) {
    divert_at_resets<R, NU>(gh, p.resets, p.T, s, rows, u0, H, p.dh_r);
    vf cc[R][NU];
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < NU; ++v) cc[r][v] = load(p.carry_c + rows[r] * H + u0 + v * VW);
    divert_at_resets<R, NU>(cc, p.resets, p.T, s, rows, u0, H, p.dc_r);
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < NU; ++v) store(p.carry_c + rows[r] * H + u0 + v * VW, cc[r][v]);
  }
  if (s < 0) {
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < NU; ++v) store(p.dh0 + rows[r] * H + u0 + v * VW, gh[r][v]);
    return;
  }
  const float* cprev[R];
  previous_rows<R>(cprev, p.c0, p.cs, p.T, s, rows, H, p.resets, p.c_r);
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < NU; ++v) {
      const int64_t row = seq_row(p.T, s, rows[r]), unit = u0 + v * VW, at = rows[r] * H + unit;
      const float* a = p.acts + row * G + unit;
      vf i = load(a), f = load(a + H), g = load(a + 2 * H), o = load(a + 3 * H);
      vf tc = vtanh(load(p.cs + row * H + unit));
      vf h_bar = gh[r][v];
      if (p.ct_hs) h_bar += load(p.ct_hs + row * H + unit);
      vf c_bar = load(p.carry_c + at) + h_bar * o * (splat(1.0f) - tc * tc);
      if (p.ct_cs) c_bar += load(p.ct_cs + row * H + unit);
      float* d = p.dpre + row * G + unit;
      store(d, c_bar * g * i * (splat(1.0f) - i));
      store(d + H, c_bar * load(cprev[r] + unit) * f * (splat(1.0f) - f));
      store(d + 2 * H, c_bar * i * (splat(1.0f) - g * g));
      store(d + 3 * H, h_bar * tc * o * (splat(1.0f) - o));
      store(p.carry_c + at, c_bar * f);
    }
  }
}

// The zero gate gradients of row n at step s past its length, for `width` units from u0.
void backward_pad(float* dpre, int64_t T, int64_t G, int64_t H, int64_t s, int64_t n, int64_t u0, int64_t width) {
  float* d = dpre + seq_row(T, s, n) * G + u0;
  for (int64_t q = 0; q < G / H; ++q) std::fill(d + q * H, d + q * H + width, 0.0f);
}

ffi::Error LstmBackward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> w_h, ffi::Buffer<ffi::F32> acts,
                        ffi::Buffer<ffi::F32> cs, ffi::Buffer<ffi::F32> c0, ffi::Buffer<ffi::PRED> resets,
                        ffi::Buffer<ffi::F32> c_r, ffi::Buffer<ffi::S32> lengths, ffi::Buffer<ffi::F32> ct_hs,
                        ffi::Buffer<ffi::F32> ct_cs, ffi::ResultBuffer<ffi::F32> dpre, ffi::ResultBuffer<ffi::F32> dh0,
                        ffi::ResultBuffer<ffi::F32> dc0, ffi::ResultBuffer<ffi::F32> dh_r,
                        ffi::ResultBuffer<ffi::F32> dc_r) {
  auto cd = cs.dimensions();
  const int64_t N = cd[0], T = cd[1], H = cd[2];
  if (auto e = check_sizes(H, 4 * H, w_h.dimensions()[1]); e.failure()) return e;
  if (auto e = check_resets(resets, N, T, std::min(c_r.element_count(), dh_r->element_count()), H); e.failure())
    return e;
  if (auto e = check_lengths(lengths, N); e.failure()) return e;
  std::fill(dh_r->typed_data(), dh_r->typed_data() + dh_r->element_count(), 0.0f);
  std::fill(dc_r->typed_data(), dc_r->typed_data() + dc_r->element_count(), 0.0f);
  if (N == 0) return ffi::Error::Success();
  float* carry_c = dc0->typed_data();  // the running cotangent of c ends as the initial state's
  std::fill(carry_c, carry_c + N * H, 0.0f);
  if (T == 0) {
    std::fill(dh0->typed_data(), dh0->typed_data() + N * H, 0.0f);
    return ffi::Error::Success();
  }
  std::vector<float> panels = pack_backward(w_h.typed_data(), H, 4);
  // An empty cotangent stands for zero (a loss that does not read that sequence).
  const float* ct_h = ct_hs.element_count() ? ct_hs.typed_data() : nullptr;
  const float* ct_c = ct_cs.element_count() ? ct_cs.typed_data() : nullptr;
  Backward p{acts.typed_data(), cs.typed_data(), c0.typed_data(), ct_h, ct_c,
             panels.data(), dpre->typed_data(), carry_c, dh0->typed_data(), T, H,
             resets_data(resets), c_r.typed_data(), dh_r->typed_data(), dc_r->typed_data()};
  run_backward(
      pool, rows_by_length(lengths, N, T), H, 8.0 * N * H * H, panels,
      [&p](auto R, auto NU, int64_t s, const int64_t* idx, int64_t u0) {
        backward_tile<decltype(R)::value, decltype(NU)::value>(p, s, idx, u0);
      },
      [&p](int64_t s, int64_t n, int64_t u0, int64_t width) {
        backward_pad(p.dpre, p.T, 4 * p.H, p.H, s, n, u0, width);
      });
  return ffi::Error::Success();
}

// -------------------------------------------------------------------------------------------- GRU
//
// The reset-after GRU (cuDNN's and PyTorch's form): w_i (I, 3H), b (3H), w_h (H, 3H), b_hn (H), gates
// r, z, n; r = s(x W_ir + b_r + h W_hr), u = s(x W_iz + b_z + h W_hz), h_n = h W_hn + b_hn,
// n = tanh(x W_in + b_n + r h_n), h' = (1 - u) n + u h. The forward pass keeps acts (N, T, 3H) = r, u, n
// and hn (N, T, H) = h_n; the backward pass writes its two results into those two buffers.

// Forward panels (pack_forward with 3 gates): rows k < I hold [W_ir, W_iz, W_in] and rows I + k hold
// [W_hr, W_hz, W_hn]; the two parts feed different accumulators for the candidate.
struct GruForward {
  const float *xs, *b, *b_hn, *h0, *zs, *panels;  // zs: as in Forward (the LSTM's)
  float *hs, *acts, *hn;  // acts, hn: null unless kept
  int64_t T, I, H;
  const bool* resets;  // (N, T), or null
  const float* h_r;  // the restored state (N, H)
};

template <int R>
void gru_forward_tile(const GruForward& p, int64_t t, const int64_t* rows, int64_t u) {
  const int64_t H = p.H, I = p.I, K = I + H, u0 = u * VW;
  const float* panel = p.panels + u * K * 3 * VW;
  vf acc[kSplit<R>][R][4];  // r, z, the candidate's input part, its recurrent part h_n
  {
    vf br = load(p.b + u0), bz = load(p.b + H + u0), bn = load(p.b + 2 * H + u0), bhn = load(p.b_hn + u0);
    for (int r = 0; r < R; ++r) {
      acc[0][r][0] = br;
      acc[0][r][1] = bz;
      acc[0][r][2] = bn;
      acc[0][r][3] = bhn;
      if (p.zs) {
        const float* z = p.zs + seq_row(p.T, t, rows[r]) * 3 * H + u0;
        acc[0][r][0] += load(z);
        acc[0][r][1] += load(z + H);
        acc[0][r][2] += load(z + 2 * H);
      }
    }
  }
  clear_partials<R>(acc);
  const float *x[R], *h[R];
  step_rows<R>(x, p.xs, p.T, t, rows, I);
  previous_rows<R>(h, p.h0, p.hs, p.T, t, rows, H, p.resets, p.h_r);
  accumulate<R, 0, 1, 2>(acc, x, I, panel);
  accumulate<R, 0, 1, 3>(acc, h, H, panel + I * 3 * VW);
  reduce<R>(acc);
  for (int r = 0; r < R; ++r) {
    const int64_t row = seq_row(p.T, t, rows[r]);
    vf rg = vsigmoid(acc[0][r][0]), ug = vsigmoid(acc[0][r][1]), hn = acc[0][r][3];
    vf n = vtanh(acc[0][r][2] + rg * hn);
    vf hp = load(h[r] + u0);
    store(p.hs + row * H + u0, (splat(1.0f) - ug) * n + ug * hp);
    if (p.acts) {
      float* a = p.acts + row * 3 * H + u0;
      store(a, rg);
      store(a + H, ug);
      store(a + 2 * H, n);
      store(p.hn + row * H + u0, hn);
    }
  }
}

// The zeros of row n at step t past its length, for the VW units of chunk u.
void gru_forward_pad(const GruForward& p, int64_t t, int64_t n, int64_t u) {
  const int64_t row = seq_row(p.T, t, n), H = p.H, u0 = u * VW;
  store(p.hs + row * H + u0, vf{});
  if (p.acts) {
    for (int q = 0; q < 3; ++q) store(p.acts + row * 3 * H + q * H + u0, vf{});
    store(p.hn + row * H + u0, vf{});
  }
}

ffi::Error GruForwardCall(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> xs, ffi::Buffer<ffi::F32> w_i,
                          ffi::Buffer<ffi::F32> b, ffi::Buffer<ffi::F32> w_h, ffi::Buffer<ffi::F32> b_hn,
                          ffi::Buffer<ffi::F32> h0, ffi::Buffer<ffi::F32> zs, ffi::Buffer<ffi::PRED> resets,
                          ffi::Buffer<ffi::F32> h_r, ffi::Buffer<ffi::S32> lengths, ffi::ResultBuffer<ffi::F32> hs,
                          ffi::ResultBuffer<ffi::F32> acts, ffi::ResultBuffer<ffi::F32> hn, bool keep_acts) {
  auto xd = xs.dimensions(), hd = h0.dimensions();
  const int64_t N = xd[0], T = xd[1], I = xd[2], H = hd[1];
  if (auto e = check_sizes(H, 3 * H, w_h.dimensions()[1]); e.failure()) return e;
  if (auto e = check_resets(resets, N, T, h_r.element_count(), H); e.failure()) return e;
  if (auto e = check_lengths(lengths, N); e.failure()) return e;
  if (T == 0 || N == 0) return ffi::Error::Success();
  const Rows rows = rows_by_length(lengths, N, T);
  std::vector<float> panels = pack_forward(w_i.typed_data(), w_h.typed_data(), I, H, 3);
  GruForward p{xs.typed_data(), b.typed_data(), b_hn.typed_data(), h0.typed_data(),
               zs.element_count() ? zs.typed_data() : nullptr, panels.data(),
               hs->typed_data(), keep_acts ? acts->typed_data() : nullptr, keep_acts ? hn->typed_data() : nullptr,
               T, I, H, resets_data(resets), h_r.typed_data()};
  run_forward(
      pool, rows, H, 6.0 * N * H * (I + H), panels,
      [&p](auto R, int64_t t, const int64_t* idx, int64_t u) { gru_forward_tile<decltype(R)::value>(p, t, idx, u); },
      [&p](int64_t t, int64_t n, int64_t u) { gru_forward_pad(p, t, n, u); });
  return ffi::Error::Success();
}

// The gate gradients: dzs = [da_r, da_z, da_n] (the input side, and with its first 2H columns the recurrent
// side's r, z) and dhn = dh_n. XLA gives them the buffers of acts (r, u, n) and hn (h_n); as in the LSTM, a
// tile reads its units' activations at step s before writing their gradients there, and nothing reads step
// s's activations afterwards.
struct GruBackward {
  const float *acts, *hn, *hs, *h0, *ct_hs, *panels;  // ct_hs: null for zero
  float *dzs, *dhn, *carry;  // carry: (N, H), the cotangent reaching h_s directly (u h_s), ends as dh0
  int64_t T, H;
  const bool* resets;  // (N, T), or null
  const float* h_r;  // the restored state (N, H)
  float* dh_r;  // its cotangent (N, H), accumulated
};

// For the tile's rows and NU * VW units from u0: the cotangent reaching h_s through step s+1's gates
// ([da_r, da_z, dh_n] at s+1 times w_h^T, zero at the last step) plus the direct one, then step s's gates'.
// A row that has ended by step s + 1 has zero gradients there and a zero carry (as the LSTM's).
template <int R, int NU>
void gru_backward_tile(const GruBackward& p, int64_t s, const int64_t* rows, int64_t u0) {
  const int64_t H = p.H, G = 3 * H;
  vf gh[R][NU];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NU; ++v) gh[r][v] = load(p.carry + rows[r] * H + u0 + v * VW);
  if (s + 1 < p.T) {
    const float* panel = p.panels + u0 * G;
    accumulate_backward<R, NU>(gh, p.dzs, p.T, s + 1, rows, G, 2 * H, panel);
    accumulate_backward<R, NU>(gh, p.dhn, p.T, s + 1, rows, H, H, panel + 2 * H * NU * VW);
  }
  if (p.resets) divert_at_resets<R, NU>(gh, p.resets, p.T, s, rows, u0, H, p.dh_r);
  if (s < 0) {
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < NU; ++v) store(p.carry + rows[r] * H + u0 + v * VW, gh[r][v]);
    return;
  }
  const float* hprev[R];
  previous_rows<R>(hprev, p.h0, p.hs, p.T, s, rows, H, p.resets, p.h_r);
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < NU; ++v) {
      const int64_t row = seq_row(p.T, s, rows[r]), unit = u0 + v * VW, at = rows[r] * H + unit;
      const float* a = p.acts + row * G + unit;
      vf rg = load(a), ug = load(a + H), n = load(a + 2 * H), h_n = load(p.hn + row * H + unit);
      vf g = gh[r][v];
      if (p.ct_hs) g += load(p.ct_hs + row * H + unit);
      vf da_n = g * (splat(1.0f) - ug) * (splat(1.0f) - n * n);
      float* dz = p.dzs + row * G + unit;
      store(dz, da_n * h_n * rg * (splat(1.0f) - rg));
      store(dz + H, g * (load(hprev[r] + unit) - n) * ug * (splat(1.0f) - ug));
      store(dz + 2 * H, da_n);
      store(p.dhn + row * H + unit, da_n * rg);
      store(p.carry + at, g * ug);
    }
  }
}

ffi::Error GruBackwardCall(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> w_h, ffi::Buffer<ffi::F32> acts,
                           ffi::Buffer<ffi::F32> hn, ffi::Buffer<ffi::F32> hs, ffi::Buffer<ffi::F32> h0,
                           ffi::Buffer<ffi::PRED> resets, ffi::Buffer<ffi::F32> h_r, ffi::Buffer<ffi::S32> lengths,
                           ffi::Buffer<ffi::F32> ct_hs, ffi::ResultBuffer<ffi::F32> dzs, ffi::ResultBuffer<ffi::F32> dhn,
                           ffi::ResultBuffer<ffi::F32> dh0, ffi::ResultBuffer<ffi::F32> dh_r) {
  auto hd = hs.dimensions();
  const int64_t N = hd[0], T = hd[1], H = hd[2];
  if (auto e = check_sizes(H, 3 * H, w_h.dimensions()[1]); e.failure()) return e;
  if (auto e = check_resets(resets, N, T, std::min(h_r.element_count(), dh_r->element_count()), H); e.failure())
    return e;
  if (auto e = check_lengths(lengths, N); e.failure()) return e;
  std::fill(dh_r->typed_data(), dh_r->typed_data() + dh_r->element_count(), 0.0f);
  if (N == 0) return ffi::Error::Success();
  float* carry = dh0->typed_data();
  std::fill(carry, carry + N * H, 0.0f);
  if (T == 0) return ffi::Error::Success();
  std::vector<float> panels = pack_backward(w_h.typed_data(), H, 3);
  GruBackward p{acts.typed_data(), hn.typed_data(), hs.typed_data(), h0.typed_data(),
                ct_hs.element_count() ? ct_hs.typed_data() : nullptr, panels.data(),
                dzs->typed_data(), dhn->typed_data(), carry, T, H,
                resets_data(resets), h_r.typed_data(), dh_r->typed_data()};
  run_backward(
      pool, rows_by_length(lengths, N, T), H, 6.0 * N * H * H, panels,
      [&p](auto R, auto NU, int64_t s, const int64_t* idx, int64_t u0) {
        gru_backward_tile<decltype(R)::value, decltype(NU)::value>(p, s, idx, u0);
      },
      [&p](int64_t s, int64_t n, int64_t u0, int64_t width) {
        backward_pad(p.dzs, p.T, 3 * p.H, p.H, s, n, u0, width);
        backward_pad(p.dhn, p.T, p.H, p.H, s, n, u0, width);
      });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(RecurraxLstmForward, LstmForward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // xs
                                  .Arg<ffi::Buffer<ffi::F32>>()  // w_i
                                  .Arg<ffi::Buffer<ffi::F32>>()  // b
                                  .Arg<ffi::Buffer<ffi::F32>>()  // w_h
                                  .Arg<ffi::Buffer<ffi::F32>>()  // h0
                                  .Arg<ffi::Buffer<ffi::F32>>()  // c0
                                  .Arg<ffi::Buffer<ffi::F32>>()  // zs ((N, T, 0): none)
                                  .Arg<ffi::Buffer<ffi::PRED>>()  // resets ((N, 0): none)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // h_r ((N, 0): none)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // c_r ((N, 0): none)
                                  .Arg<ffi::Buffer<ffi::S32>>()  // lengths ((N, 0): none)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // hs
                                  .Ret<ffi::Buffer<ffi::F32>>()  // cs
                                  .Ret<ffi::Buffer<ffi::F32>>()  // acts ((0, 0, 0) unless keep_acts)
                                  .Attr<bool>("keep_acts"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(RecurraxLstmBackward, LstmBackward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // w_h
                                  .Arg<ffi::Buffer<ffi::F32>>()  // acts
                                  .Arg<ffi::Buffer<ffi::F32>>()  // cs
                                  .Arg<ffi::Buffer<ffi::F32>>()  // c0
                                  .Arg<ffi::Buffer<ffi::PRED>>()  // resets ((N, 0): none)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // c_r ((N, 0): none)
                                  .Arg<ffi::Buffer<ffi::S32>>()  // lengths ((N, 0): none)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // ct_hs
                                  .Arg<ffi::Buffer<ffi::F32>>()  // ct_cs
                                  .Ret<ffi::Buffer<ffi::F32>>()  // dpre (N, T, 4H)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // dh0
                                  .Ret<ffi::Buffer<ffi::F32>>()  // dc0
                                  .Ret<ffi::Buffer<ffi::F32>>()  // dh_r ((N, 0): no resets)
                                  .Ret<ffi::Buffer<ffi::F32>>()); // dc_r

XLA_FFI_DEFINE_HANDLER_SYMBOL(RecurraxGruForward, GruForwardCall,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // xs
                                  .Arg<ffi::Buffer<ffi::F32>>()  // w_i
                                  .Arg<ffi::Buffer<ffi::F32>>()  // b
                                  .Arg<ffi::Buffer<ffi::F32>>()  // w_h
                                  .Arg<ffi::Buffer<ffi::F32>>()  // b_hn
                                  .Arg<ffi::Buffer<ffi::F32>>()  // h0
                                  .Arg<ffi::Buffer<ffi::F32>>()  // zs ((N, T, 0): none)
                                  .Arg<ffi::Buffer<ffi::PRED>>()  // resets ((N, 0): none)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // h_r ((N, 0): none)
                                  .Arg<ffi::Buffer<ffi::S32>>()  // lengths ((N, 0): none)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // hs
                                  .Ret<ffi::Buffer<ffi::F32>>()  // acts: r, u, n ((N, T, 0) unless keep_acts)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // hn: h_n ((N, T, 0) unless keep_acts)
                                  .Attr<bool>("keep_acts"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(RecurraxGruBackward, GruBackwardCall,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // w_h
                                  .Arg<ffi::Buffer<ffi::F32>>()  // acts (N, T, 3H)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // hn (N, T, H)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // hs
                                  .Arg<ffi::Buffer<ffi::F32>>()  // h0
                                  .Arg<ffi::Buffer<ffi::PRED>>()  // resets ((N, 0): none)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // h_r ((N, 0): none)
                                  .Arg<ffi::Buffer<ffi::S32>>()  // lengths ((N, 0): none)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // ct_hs ((N, T, 0) for zero)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // dzs (N, T, 3H), in acts' buffer
                                  .Ret<ffi::Buffer<ffi::F32>>()  // dhn (N, T, H), in hn's buffer
                                  .Ret<ffi::Buffer<ffi::F32>>()  // dh0
                                  .Ret<ffi::Buffer<ffi::F32>>()); // dh_r ((N, 0): no resets)
