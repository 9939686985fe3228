// Fused CPU selective scan (Mamba's S6 recurrence), forward and backward.
//
// For a row (batch b, channel d) and state index n the scan is
//
//     dt[t] = softplus(delta[t] + delta_bias[d])          (softplus and bias optional)
//     h[t]  = exp(dt[t] * A[d, n]) * h[t-1] + dt[t] * u[t] * B[b, n, t]
//     y[t]  = sum_n C[b, n, t] * h[t] + D[d] * u[t]
//     out   = y * silu(z)                                  (gate optional)
//
// with t running forward or, for a reversed direction, from L-1 down to 0. Several directions can be
// fused into one call: their y are summed before the common gate (bimamba v2).
//
// Design:
// * The state h of one row lives in registers as NV vectors of at::vec::Vectorized<T> (N is padded
//   with zeros to a whole number of vectors; padded lanes stay exactly 0). No (B, D, L, N) tensor is
//   ever built.
// * The sequence is cut into chunks of K positions. Work items are (batch, slice of channels); an item
//   walks the chunks in scan order and, inside a chunk, all its rows, so that the chunk of B and C
//   (and in the backward the chunk accumulators of dB and dC) stays in L1 while the rows pass over it.
//   Per row only the state is carried from chunk to chunk.
// * Per row and chunk, dt = softplus(delta + bias) and dt * u are computed in one vectorised pass; the
//   decays exp(dt A) (one per state and position, the hot spot) use a dedicated float exp2 (decay()),
//   and the lane sums y = C . h are done per chunk, off the recurrence. The next row's chunk of the
//   row-major inputs is prefetched while the current one is scanned.
// * The forward stores the state at the start of every chunk (B, D, L/K, N): O(B*D*L) memory. The
//   backward recomputes each chunk from its checkpoint into a K x N buffer, then runs the adjoint
//   recurrence g[t] = dy[t] C[t] + exp(dt[t+1] A) g[t+1] backwards through it.
// * dB and dC sum over channels; each work item owns an accumulator (nsplit, B, L, N) slice, so the
//   result is deterministic for a given thread count; dA, dD and d(delta_bias) are per row and summed
//   over the batch afterwards.
//
// * Reduced precision: u, delta, B, C and z may be bfloat16 or float16 (S, the storage type). They are
//   converted to float (T, the compute type) chunk by chunk as they are read, all arithmetic and every
//   accumulator (states, checkpoints, the sum of the directions, dB, dC, dA) is float, and the output and
//   the gradients of u, delta, B, C, z are rounded to S once, at the end. For S == T nothing is converted
//   and the float32/float64 code paths are exactly those of the single-type kernel.
//
// Three inference-only helpers of the networks' fast paths sit at the end: Mamba's short conv1d with its
// SiLU (conv1d_silu) and the FFN's depthwise 3x3 conv with its GELU gate (gated_dwconv3x3) for MMA, and
// a layer norm over short contiguous rows (layer_norm_rows) for SeemoRe.
//
// This file is compiled once per instruction set (generic, AVX2, AVX-512) into separate Python
// modules; sisr.ops._fused picks the best one the CPU supports.

#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <optional>
#include <vector>

namespace {

using at::Tensor;
using at::vec::Vectorized;

constexpr double kSoftplusThreshold = 20.0;  // as torch.nn.functional.softplus (beta=1)

// exp of the kernel (softplus, sigmoid). float with AVX2/AVX-512: a two-step Cody-Waite reduction and
// Cephes' expf polynomial (a few ulp, fewer instructions than ATen's 20-ulp exp_u20); the argument is
// clamped to [-87, 88], so exp of anything below -87 gives ~1.6e-38 instead of 0 (irrelevant next to
// the O(1) terms it meets) and nothing overflows. Otherwise ATen's exp (Sleef, 1 ulp).
#if defined(CPU_CAPABILITY_AVX512)
using FloatReg = __m512;
using IntReg = __m512i;
#define SISR_VEC(op) _mm512_##op
#define SISR_AS_INT _mm512_castps_si512
#define SISR_AS_FLOAT _mm512_castsi512_ps
#elif defined(CPU_CAPABILITY_AVX2)
using FloatReg = __m256;
using IntReg = __m256i;
#define SISR_VEC(op) _mm256_##op
#define SISR_AS_INT _mm256_castps_si256
#define SISR_AS_FLOAT _mm256_castsi256_ps
#endif

#ifdef SISR_VEC
inline Vectorized<float> exp_float(const Vectorized<float>& v) {
  const FloatReg x = SISR_VEC(min_ps)(SISR_VEC(max_ps)(FloatReg(v), SISR_VEC(set1_ps)(-87.0f)),
                                      SISR_VEC(set1_ps)(88.0f));
  // t = x / ln 2 + 1.5 * 2^23: its low mantissa bits hold k = round(x / ln 2) in two's complement.
  const FloatReg magic = SISR_VEC(set1_ps)(12582912.0f);
  const FloatReg t = SISR_VEC(fmadd_ps)(x, SISR_VEC(set1_ps)(1.44269504088896341f), magic);
  const FloatReg k = SISR_VEC(sub_ps)(t, magic);
  FloatReg r = SISR_VEC(fnmadd_ps)(k, SISR_VEC(set1_ps)(0.693359375f), x);  // x - k ln 2 in two steps
  r = SISR_VEC(fnmadd_ps)(k, SISR_VEC(set1_ps)(-2.12194440e-4f), r);
  // exp(r) = 1 + r + r^2 P(r) on |r| <= ln(2) / 2.
  FloatReg p = SISR_VEC(set1_ps)(1.9875691500e-4f);
  p = SISR_VEC(fmadd_ps)(p, r, SISR_VEC(set1_ps)(1.3981999507e-3f));
  p = SISR_VEC(fmadd_ps)(p, r, SISR_VEC(set1_ps)(8.3334519073e-3f));
  p = SISR_VEC(fmadd_ps)(p, r, SISR_VEC(set1_ps)(4.1665795894e-2f));
  p = SISR_VEC(fmadd_ps)(p, r, SISR_VEC(set1_ps)(1.6666665459e-1f));
  p = SISR_VEC(fmadd_ps)(p, r, SISR_VEC(set1_ps)(5.0000001201e-1f));
  p = SISR_VEC(fmadd_ps)(p, SISR_VEC(mul_ps)(r, r), r);
  p = SISR_VEC(add_ps)(p, SISR_VEC(set1_ps)(1.0f));
  // Multiply by 2^k by adding k to the exponent field (k in [-126, 127], the result stays normal).
  const IntReg scale = SISR_VEC(slli_epi32)(SISR_AS_INT(t), 23);
  return SISR_AS_FLOAT(SISR_VEC(add_epi32)(SISR_AS_INT(p), scale));
}
#endif

template <typename T>
inline Vectorized<T> fast_exp(const Vectorized<T>& v) {
#if defined(SISR_VEC) && !defined(SISR_SCAN_PRECISE_EXP)
  if constexpr (std::is_same_v<T, float>) {
    return exp_float(v);
  } else {
    return v.exp();
  }
#else
  return v.exp();
#endif
}

// The decays exp(dt * A) of the scan, the hot spot (one per state and position). For float the rows
// keep A' = A * log2(e) (see scaled_A), and 2^x, x = dt * A', is 2^k * 2^r with k = round(x) (by the
// 1.5 * 2^23 trick, r = x - k exactly) and 2^r on |r| <= 1/2 from a degree-6 near-minimax polynomial
// (relative error ~1e-7 in float arithmetic). x is clamped to [-126, 127], so exp of anything below
// ~-87 gives ~1e-38 instead of 0 and nothing overflows.
#ifdef SISR_VEC
inline Vectorized<float> exp2_product(const Vectorized<float>& dt, const Vectorized<float>& a_log2) {
  const FloatReg magic = SISR_VEC(set1_ps)(12582912.0f);  // 1.5 * 2^23, see exp_float
  FloatReg x = SISR_VEC(mul_ps)(FloatReg(dt), FloatReg(a_log2));
  x = SISR_VEC(min_ps)(SISR_VEC(max_ps)(x, SISR_VEC(set1_ps)(-126.0f)), SISR_VEC(set1_ps)(127.0f));
  const FloatReg t = SISR_VEC(add_ps)(x, magic);
  const FloatReg r = SISR_VEC(sub_ps)(x, SISR_VEC(sub_ps)(t, magic));  // exact
  FloatReg p = SISR_VEC(set1_ps)(1.5345806605e-4f);  // near-minimax fit of 2^r, |r| <= 1/2
  p = SISR_VEC(fmadd_ps)(p, r, SISR_VEC(set1_ps)(1.3399930904e-3f));
  p = SISR_VEC(fmadd_ps)(p, r, SISR_VEC(set1_ps)(9.6184890717e-3f));
  p = SISR_VEC(fmadd_ps)(p, r, SISR_VEC(set1_ps)(5.5503286421e-2f));
  p = SISR_VEC(fmadd_ps)(p, r, SISR_VEC(set1_ps)(2.4022646248e-1f));
  p = SISR_VEC(fmadd_ps)(p, r, SISR_VEC(set1_ps)(6.9314718246e-1f));
  p = SISR_VEC(fmadd_ps)(p, r, SISR_VEC(set1_ps)(1.0f));
  const IntReg scale = SISR_VEC(slli_epi32)(SISR_AS_INT(t), 23);
  return SISR_AS_FLOAT(SISR_VEC(add_epi32)(SISR_AS_INT(p), scale));
}
#endif

template <typename T>
constexpr bool kLog2Decay =
#if defined(SISR_VEC) && !defined(SISR_SCAN_PRECISE_EXP)
    std::is_same_v<T, float>;
#else
    false;
#endif

// A row of A as the decay function wants it (A * log2(e) for the float fast path).
template <typename T>
inline Vectorized<T> scaled_A(const T* a) {
  const Vectorized<T> v = Vectorized<T>::loadu(a);
  if constexpr (kLog2Decay<T>) {
    return v * Vectorized<T>(T(1.44269504088896340736));
  } else {
    return v;
  }
}

// exp(dt * A) for a row prepared by scaled_A.
template <typename T>
inline Vectorized<T> decay(const Vectorized<T>& dt, const Vectorized<T>& a) {
  if constexpr (kLog2Decay<T>) {
#ifdef SISR_VEC
    return exp2_product(dt, a);
#endif
  } else {
    return fast_exp(dt * a);
  }
}

// softplus(x) with the threshold of torch.nn.functional.softplus (x itself above 20). float: as
// max(x, 0) + log1p(w), w = exp(-|x|) in (0, 1], with log1p(w) = 2 atanh(s), s = w / (2 + w) <= 1/3,
// from its odd series (truncation error < 2e-9 relative); this avoids Sleef's general log1p.
template <typename T>
inline Vectorized<T> softplus_vec(const Vectorized<T>& v) {
  using Vec = Vectorized<T>;
  const Vec thr{T(kSoftplusThreshold)};
  if constexpr (std::is_same_v<T, float>) {
    const Vec w = fast_exp(v.abs().neg());
    const Vec s = w / (Vec(2.0f) + w);
    const Vec s2 = s * s;
    Vec q(1.0f / 15.0f);
    q = at::vec::fmadd(q, s2, Vec(1.0f / 13.0f));
    q = at::vec::fmadd(q, s2, Vec(1.0f / 11.0f));
    q = at::vec::fmadd(q, s2, Vec(1.0f / 9.0f));
    q = at::vec::fmadd(q, s2, Vec(1.0f / 7.0f));
    q = at::vec::fmadd(q, s2, Vec(1.0f / 5.0f));
    q = at::vec::fmadd(q, s2, Vec(1.0f / 3.0f));
    q = at::vec::fmadd(q, s2, Vec(1.0f));
    const Vec sp = at::vec::fmadd(Vec(2.0f) * s, q, at::vec::maximum(v, Vec(0.0f)));
    return Vec::blendv(sp, v, v > thr);
  } else {
    return Vec::blendv(fast_exp(v).log1p(), v, v > thr);
  }
}

// Sum of the lanes (ATen's shuffle-based reduction where it has one).
template <typename T>
inline T hsum(const Vectorized<T>& v) {
  return at::vec::vec_reduce_all<T>([](const Vectorized<T>& a, const Vectorized<T>& b) { return a + b; }, v);
}

// out[k] = sum of the V lanes of vectors[k], k < n. Doing this after a chunk instead of per step keeps
// the shuffle latency out of the scan loop (and lets the compiler vectorise across k).
template <typename T, int64_t V>
inline void lane_sums(const T* vectors, int64_t n, T* out) {
  int64_t k = 0;
#if defined(CPU_CAPABILITY_AVX2)
  if constexpr (std::is_same_v<T, float> && V == 8) {
    // Eight vectors at a time: a tree of horizontal adds leaves [lanes 0-3 | lanes 4-7] partial sums
    // of vectors 0-3 and 4-7 in two registers; one cross-lane add finishes all eight.
    for (; k + 8 <= n; k += 8) {
      const float* p = vectors + k * 8;
      const __m256 t0 = _mm256_hadd_ps(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8));
      const __m256 t1 = _mm256_hadd_ps(_mm256_loadu_ps(p + 16), _mm256_loadu_ps(p + 24));
      const __m256 t2 = _mm256_hadd_ps(_mm256_loadu_ps(p + 32), _mm256_loadu_ps(p + 40));
      const __m256 t3 = _mm256_hadd_ps(_mm256_loadu_ps(p + 48), _mm256_loadu_ps(p + 56));
      const __m256 u0 = _mm256_hadd_ps(t0, t1);  // [s0..s3 of lanes 0-3 | s0..s3 of lanes 4-7]
      const __m256 u1 = _mm256_hadd_ps(t2, t3);  // the same for vectors 4-7
      _mm256_storeu_ps(out + k, _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20),
                                              _mm256_permute2f128_ps(u0, u1, 0x31)));
    }
  }
#endif
  for (; k < n; ++k) {
    T s = 0;
    for (int64_t l = 0; l < V; ++l) s += vectors[k * V + l];
    out[k] = s;
  }
}

template <typename T>
inline Vectorized<T> sigmoid(const Vectorized<T>& v) {
  const Vectorized<T> one(T(1));
  return one / (one + fast_exp(v.neg()));
}

// Storage type S to compute type T. as_compute: n values from p as T (p itself when S == T, else
// converted into scratch). load_as / store_as: one vector of m <= V values (lanes >= m zero on load).
template <typename T, typename S>
inline const T* as_compute(const S* p, int64_t n, T* scratch) {
  if constexpr (std::is_same_v<S, T>) {
    (void)n;
    (void)scratch;
    return p;
  } else {
    at::vec::convert(p, scratch, n);
    return scratch;
  }
}

template <typename T, typename S>
inline Vectorized<T> load_as(const S* p, int64_t m) {
  if constexpr (std::is_same_v<S, T>) {
    return Vectorized<T>::loadu(p, m);
  } else {
    T buf[Vectorized<T>::size()];
    at::vec::convert(p, buf, m);
    return Vectorized<T>::loadu(buf, m);
  }
}

template <typename T, typename S>
inline void store_as(const Vectorized<T>& v, S* p, int64_t m) {
  if constexpr (std::is_same_v<S, T>) {
    v.store(p, m);
  } else {
    T buf[Vectorized<T>::size()];
    v.store(buf, m);
    at::vec::convert(buf, p, m);
  }
}

// One scan direction: inputs, optional checkpoint buffer and (backward only) gradient outputs. u, delta
// and their gradients are in the storage type S, everything else in the compute type T.
template <typename T, typename S>
struct Direction {
  const S* u = nullptr;      // (B, D, L)
  const S* delta = nullptr;  // (B, D, L)
  const T* A = nullptr;      // (D, Np), zero padded
  const T* Bt = nullptr;     // (B, L, Np), zero padded
  const T* Ct = nullptr;     // (B, L, Np), zero padded
  const T* Dskip = nullptr;  // (D,) or null
  const T* bias = nullptr;   // (D,) or null
  bool reverse = false;
  T* ckpt = nullptr;  // (B, D, nchunks, Np): state before each chunk (in scan order)
  // Backward outputs.
  S* du = nullptr;       // (B, D, L)
  S* ddelta = nullptr;   // (B, D, L)
  T* dA = nullptr;       // (B, D, Np), summed over B by the caller
  T* dD = nullptr;       // (B, D)
  T* dbias = nullptr;    // (B, D)
  T* dB_acc = nullptr;   // (nsplit, B, L, Np), summed over nsplit by the caller
  T* dC_acc = nullptr;   // (nsplit, B, L, Np)
};

struct Geometry {
  int64_t batch, dim, len, np, chunk, nchunks, nsplit;

  // Positions [lo, hi) of chunk c of a direction (chunks are numbered in scan order).
  void chunk_range(int64_t c, bool reverse, int64_t& lo, int64_t& hi) const {
    const int64_t s0 = c * chunk;
    const int64_t s1 = std::min(len, s0 + chunk);
    lo = reverse ? len - s1 : s0;
    hi = reverse ? len - s0 : s1;
  }
  // Channels [d0, d1) of slice s.
  void slice_range(int64_t s, int64_t& d0, int64_t& d1) const {
    d0 = s * dim / nsplit;
    d1 = (s + 1) * dim / nsplit;
  }
};

// dt = softplus(delta + bias) and dt * u over n contiguous positions.
template <typename T>
inline void discretise(const T* delta, const T* u, T bias, bool softplus, int64_t n, T* dt, T* dtu) {
  using Vec = Vectorized<T>;
  constexpr int64_t V = Vec::size();
  const Vec vbias{bias};
  for (int64_t k = 0; k < n; k += V) {
    const int64_t m = std::min<int64_t>(V, n - k);
    Vec v = Vec::loadu(delta + k, m) + vbias;
    if (softplus) {
      v = softplus_vec(v);
    }
    v.store(dt + k, m);
    (v * Vec::loadu(u + k, m)).store(dtu + k, m);
  }
}

// Forward of row (b, d) through chunk c = [lo, lo + n) of a direction: advances the state (NV vectors,
// kept in registers) and writes (or, for a later direction, adds) y + D u to out (T, (B, D, L)). dt, dtu,
// y, ub, db: scratch of K values, yv of K * V.
template <typename T, typename S, int NV>
inline void forward_row(const Direction<T, S>& dir, const Geometry& g, int64_t b, int64_t d, int64_t c,
                        int64_t lo, int64_t n, bool softplus, bool first, T* st, T* out, T* dt, T* dtu, T* y,
                        T* yv, T* ub, T* db) {
  using Vec = Vectorized<T>;
  constexpr int64_t V = Vec::size();
  const int64_t L = g.len, Np = g.np;
  const T* Bc = dir.Bt + (b * L + lo) * Np;
  const T* Cc = dir.Ct + (b * L + lo) * Np;
  const int64_t row = (b * g.dim + d) * L;
  if (dir.ckpt != nullptr) {
    std::copy(st, st + Np, dir.ckpt + ((b * g.dim + d) * g.nchunks + c) * Np);
  }
  const T* uu = as_compute(dir.u + row + lo, n, ub);
  discretise(as_compute(dir.delta + row + lo, n, db), uu, dir.bias ? dir.bias[d] : T(0), softplus, n, dt, dtu);
  Vec h[NV], Av[NV];
  for (int j = 0; j < NV; ++j) {
    h[j] = Vec::loadu(st + j * V);
    Av[j] = scaled_A(dir.A + d * Np + j * V);
  }
  // Position k of step s: s forwards, n - 1 - s for a reversed direction.
  const int64_t dk = dir.reverse ? -1 : 1;
  int64_t k = dir.reverse ? n - 1 : 0;
  for (int64_t s = 0; s < n; ++s, k += dk) {
    const Vec vdt(dt[k]), vdtu(dtu[k]);
    Vec acc(T(0));
    for (int j = 0; j < NV; ++j) {
      h[j] = at::vec::fmadd(decay(vdt, Av[j]), h[j], vdtu * Vec::loadu(Bc + k * Np + j * V));
      acc = at::vec::fmadd(h[j], Vec::loadu(Cc + k * Np + j * V), acc);
    }
    acc.store(yv + k * V);  // lanes summed below, off the recurrence
  }
  for (int j = 0; j < NV; ++j) {
    h[j].store(st + j * V);
  }
  lane_sums<T, V>(yv, n, y);
  // Skip term, and sum of the directions (before the gate).
  const T Dd = dir.Dskip ? dir.Dskip[d] : T(0);
  T* o = out + row + lo;
  for (int64_t i = 0; i < n; ++i) {
    const T v = y[i] + Dd * uu[i];
    o[i] = first ? v : o[i] + v;
  }
}

// Prefetches the n values from p on (the next row's chunk: rows are L apart, too far for the hardware
// prefetcher to follow; the forward and backward prefetch it while they scan the current row).
template <typename T>
inline void prefetch(const T* p, int64_t n) {
#if defined(__GNUC__) || defined(__clang__)
  for (int64_t i = 0; i < n; i += 64 / static_cast<int64_t>(sizeof(T))) {
    __builtin_prefetch(p + i);
  }
#else
  (void)p;
  (void)n;
#endif
}

// Forward over all directions for the items [item0, item1). acc (T) takes the sum of the directions
// before the gate; it is out itself when S == T, else out_pre or a scratch tensor. out_pre (T, or null)
// keeps that sum for the backward when z is given.
template <typename T, typename S, int NV>
void forward_items(const std::vector<Direction<T, S>>& dirs, const Geometry& g, const S* z, T* acc, S* out,
                   T* out_pre, bool softplus, int64_t item0, int64_t item1) {
  using Vec = Vectorized<T>;
  constexpr int64_t V = Vec::size();
  const int64_t L = g.len, Np = g.np, K = g.chunk;
  std::vector<T> dt(K), dtu(K), y(K), yv(K * V), ub(K), db(K), state;

  for (int64_t item = item0; item < item1; ++item) {
    const int64_t b = item / g.nsplit;
    int64_t d0, d1;
    g.slice_range(item % g.nsplit, d0, d1);
    state.assign((d1 - d0) * Np, T(0));

    for (size_t di = 0; di < dirs.size(); ++di) {
      const Direction<T, S>& dir = dirs[di];
      std::fill(state.begin(), state.end(), T(0));
      for (int64_t c = 0; c < g.nchunks; ++c) {
        int64_t lo, hi;
        g.chunk_range(c, dir.reverse, lo, hi);
        for (int64_t d = d0; d < d1; ++d) {
          if (d + 1 < d1) {
            const int64_t next = (b * g.dim + d + 1) * L + lo;
            prefetch(dir.delta + next, hi - lo);
            prefetch(dir.u + next, hi - lo);
            prefetch(acc + next, hi - lo);
          }
          forward_row<T, S, NV>(dir, g, b, d, c, lo, hi - lo, softplus, di == 0, state.data() + (d - d0) * Np,
                                acc, dt.data(), dtu.data(), y.data(), yv.data(), ub.data(), db.data());
        }
      }
    }

    if (z != nullptr) {  // out = pre * silu(z), keeping pre for the backward if asked
      for (int64_t d = d0; d < d1; ++d) {
        const int64_t row = (b * g.dim + d) * L;
        for (int64_t k = 0; k < L; k += V) {
          const int64_t m = std::min<int64_t>(V, L - k);
          const Vec pre = Vec::loadu(acc + row + k, m);
          const Vec zz = load_as<T>(z + row + k, m);
          if (out_pre != nullptr && out_pre != acc) {
            pre.store(out_pre + row + k, m);
          }
          store_as(pre * zz * sigmoid(zz), out + row + k, m);
        }
      }
    } else if constexpr (!std::is_same_v<S, T>) {  // round the sum to the storage type
      for (int64_t d = d0; d < d1; ++d) {
        const int64_t row = (b * g.dim + d) * L;
        at::vec::convert(acc + row, out + row, L);
      }
    }
  }
}

// Backward over all directions for the items [item0, item1).
template <typename T, typename S, int NV>
void backward_items(const std::vector<Direction<T, S>>& dirs, const Geometry& g, const S* z, const T* out_pre,
                    const S* dout, S* dz, bool softplus, int64_t item0, int64_t item1) {
  using Vec = Vectorized<T>;
  constexpr int64_t V = Vec::size();
  const int64_t L = g.len, Np = g.np, K = g.chunk;
  std::vector<T> dt(K), dtu(K), dy(K), ddt(K), dub(K), sAv(K * V), sBv(K * V), ub(K), db(K);
  std::vector<T> xs(K * Np), as(K * Np), dBc(K * Np), dCc(K * Np);
  std::vector<T> carry, dA_row, dD_row, db_row;

  for (int64_t item = item0; item < item1; ++item) {
    const int64_t b = item / g.nsplit;
    const int64_t split = item % g.nsplit;
    int64_t d0, d1;
    g.slice_range(split, d0, d1);
    const int64_t rows = d1 - d0;

    for (const Direction<T, S>& dir : dirs) {
      carry.assign(rows * Np, T(0));  // exp(dt[t+1] A) * g[t+1], per row
      dA_row.assign(rows * Np, T(0));
      dD_row.assign(rows, T(0));
      db_row.assign(rows, T(0));
      T* dB_acc = dir.dB_acc + (split * g.batch + b) * L * Np;
      T* dC_acc = dir.dC_acc + (split * g.batch + b) * L * Np;

      for (int64_t c = g.nchunks - 1; c >= 0; --c) {
        int64_t lo, hi;
        g.chunk_range(c, dir.reverse, lo, hi);
        const int64_t n = hi - lo;
        const T* Bc = dir.Bt + (b * L + lo) * Np;
        const T* Cc = dir.Ct + (b * L + lo) * Np;
        std::fill(dBc.begin(), dBc.begin() + n * Np, T(0));
        std::fill(dCc.begin(), dCc.begin() + n * Np, T(0));

        for (int64_t d = d0; d < d1; ++d) {
          const int64_t r = d - d0;
          const int64_t row = (b * g.dim + d) * L;
          if (d + 1 < d1) {
            const int64_t next = row + L + lo;
            prefetch(dir.delta + next, n);
            prefetch(dir.u + next, n);
            prefetch(dout + next, n);
            if (z != nullptr) prefetch(z + next, n);
          }
          const T* uu = as_compute(dir.u + row + lo, n, ub.data());
          const T* dl = as_compute(dir.delta + row + lo, n, db.data());
          discretise(dl, uu, dir.bias ? dir.bias[d] : T(0), softplus, n, dt.data(), dtu.data());
          // Gradient reaching y: dout * silu(z).
          for (int64_t k = 0; k < n; k += V) {
            const int64_t m = std::min<int64_t>(V, n - k);
            Vec v = load_as<T>(dout + row + lo + k, m);
            if (z != nullptr) {
              const Vec zz = load_as<T>(z + row + lo + k, m);
              v = v * zz * sigmoid(zz);
            }
            v.store(dy.data() + k, m);
          }

          Vec Av[NV], As[NV], h[NV];
          const T* x0 = dir.ckpt + ((b * g.dim + d) * g.nchunks + c) * Np;
          for (int j = 0; j < NV; ++j) {
            Av[j] = Vec::loadu(dir.A + d * Np + j * V);
            As[j] = scaled_A(dir.A + d * Np + j * V);
            h[j] = Vec::loadu(x0 + j * V);
          }
          // Recompute the chunk: decays and states, stored in scan order s.
          for (int64_t s = 0; s < n; ++s) {
            const int64_t k = dir.reverse ? n - 1 - s : s;
            const Vec vdt(dt[k]), vdtu(dtu[k]);
            for (int j = 0; j < NV; ++j) {
              const Vec a = decay(vdt, As[j]);
              h[j] = at::vec::fmadd(a, h[j], vdtu * Vec::loadu(Bc + k * Np + j * V));
              a.store(as.data() + s * Np + j * V);
              h[j].store(xs.data() + s * Np + j * V);
            }
          }
          // Adjoint recurrence backwards through the chunk.
          Vec gc[NV], dAv[NV];
          T* cr = carry.data() + r * Np;
          T* dar = dA_row.data() + r * Np;
          for (int j = 0; j < NV; ++j) {
            gc[j] = Vec::loadu(cr + j * V);
            dAv[j] = Vec::loadu(dar + j * V);
          }
          for (int64_t s = n - 1; s >= 0; --s) {
            const int64_t k = dir.reverse ? n - 1 - s : s;
            const Vec vdy(dy[k]), vdt(dt[k]), vdtu(dtu[k]);
            const T* xprev = s > 0 ? xs.data() + (s - 1) * Np : x0;
            Vec sA(T(0)), sB(T(0));
            for (int j = 0; j < NV; ++j) {
              const int64_t o = k * Np + j * V;
              const Vec Bj = Vec::loadu(Bc + o);
              const Vec x = Vec::loadu(xs.data() + s * Np + j * V);
              const Vec a = Vec::loadu(as.data() + s * Np + j * V);
              const Vec gj = at::vec::fmadd(vdy, Vec::loadu(Cc + o), gc[j]);  // dL/dh[t]
              at::vec::fmadd(vdy, x, Vec::loadu(dCc.data() + o)).store(dCc.data() + o);
              at::vec::fmadd(gj, vdtu, Vec::loadu(dBc.data() + o)).store(dBc.data() + o);
              const Vec ga = gj * Vec::loadu(xprev + j * V) * a;  // dL/d(dt A)
              dAv[j] = at::vec::fmadd(ga, vdt, dAv[j]);
              sA = at::vec::fmadd(ga, Av[j], sA);
              sB = at::vec::fmadd(gj, Bj, sB);
              gc[j] = a * gj;
            }
            sA.store(sAv.data() + k * V);
            sB.store(sBv.data() + k * V);
          }
          lane_sums<T, V>(sAv.data(), n, ddt.data());
          lane_sums<T, V>(sBv.data(), n, dub.data());
          for (int64_t k = 0; k < n; ++k) {  // d(dt) and du from sum_n g*x_prev*a*A and sum_n g*B
            ddt[k] += uu[k] * dub[k];
            dub[k] *= dt[k];
          }
          for (int j = 0; j < NV; ++j) {
            gc[j].store(cr + j * V);
            dAv[j].store(dar + j * V);
          }
          // Per position: softplus derivative, skip term; per row sums for dD and d(delta_bias).
          const T Dd = dir.Dskip ? dir.Dskip[d] : T(0);
          const T bias = dir.bias ? dir.bias[d] : T(0);
          Vec sum_dD(T(0)), sum_db(T(0));
          for (int64_t k = 0; k < n; k += V) {
            const int64_t m = std::min<int64_t>(V, n - k);  // loadu zero-fills lanes >= m
            Vec gd = Vec::loadu(ddt.data() + k, m);
            if (softplus) {
              const Vec v = Vec::loadu(dl + k, m) + Vec(bias);
              gd = Vec::blendv(gd * sigmoid(v), gd, v > Vec(T(kSoftplusThreshold)));
            }
            const Vec vdy = Vec::loadu(dy.data() + k, m);
            store_as(gd, dir.ddelta + row + lo + k, m);
            store_as(at::vec::fmadd(Vec(Dd), vdy, Vec::loadu(dub.data() + k, m)), dir.du + row + lo + k, m);
            sum_db = sum_db + gd;
            sum_dD = at::vec::fmadd(vdy, Vec::loadu(uu + k, m), sum_dD);
          }
          dD_row[r] += hsum(sum_dD);
          db_row[r] += hsum(sum_db);
        }
        for (int64_t i = 0; i < n * Np; ++i) {
          dB_acc[lo * Np + i] += dBc[i];
          dC_acc[lo * Np + i] += dCc[i];
        }
      }
      for (int64_t d = d0; d < d1; ++d) {
        std::copy(dA_row.begin() + (d - d0) * Np, dA_row.begin() + (d - d0 + 1) * Np,
                  dir.dA + (b * g.dim + d) * Np);
        if (dir.dD) dir.dD[b * g.dim + d] = dD_row[d - d0];
        if (dir.dbias) dir.dbias[b * g.dim + d] = db_row[d - d0];
      }
    }

    if (z != nullptr) {  // dz = dout * pre * silu'(z)
      for (int64_t d = d0; d < d1; ++d) {
        const int64_t row = (b * g.dim + d) * L;
        for (int64_t k = 0; k < L; k += V) {
          const int64_t m = std::min<int64_t>(V, L - k);
          const Vec zz = load_as<T>(z + row + k, m);
          const Vec sg = sigmoid(zz);
          const Vec dsilu = sg * (Vec(T(1)) + zz * (Vec(T(1)) - sg));
          store_as(load_as<T>(dout + row + k, m) * Vec::loadu(out_pre + row + k, m) * dsilu, dz + row + k, m);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Tensor plumbing.

struct Inputs {
  std::vector<Tensor> u, delta, A, Bt, Ct, D, bias;  // D, bias: undefined when absent
  std::vector<bool> reverse;
  int64_t batch = 0, dim = 0, len = 0, nstate = 0;
  at::ScalarType storage = at::kFloat;  // S: u, delta, B, C, z, the output and their gradients
  at::ScalarType compute = at::kFloat;  // T: A, D, delta_bias, the arithmetic and the accumulators
};

// Number of vectors per state: 1, 2, 4, 8 or 16 (the N padding).
int64_t vectors_per_state(int64_t nstate, int64_t lanes) {
  const int64_t need = (nstate + lanes - 1) / lanes;
  for (int64_t nv : {1, 2, 4, 8, 16}) {
    if (need <= nv) return nv;
  }
  TORCH_CHECK(false, "selective scan: d_state=", nstate, " is larger than the supported ", 16 * lanes);
}

int64_t lanes_for(at::ScalarType t) {
  return t == at::kDouble ? Vectorized<double>::size() : Vectorized<float>::size();
}

// (..., N) -> (..., Np) zero padded, contiguous, in dtype.
Tensor pad_state(const Tensor& t, int64_t np, at::ScalarType dtype) {
  const int64_t n = t.size(-1);
  if (n == np && t.scalar_type() == dtype) return t.contiguous();
  auto sizes = t.sizes().vec();
  sizes.back() = np;
  Tensor out = at::zeros(sizes, t.options().dtype(dtype));
  out.narrow(-1, 0, n).copy_(t);
  return out;
}

Inputs prepare(const std::vector<Tensor>& u, const std::vector<Tensor>& delta, const std::vector<Tensor>& A,
               const std::vector<Tensor>& B, const std::vector<Tensor>& C,
               const std::vector<std::optional<Tensor>>& D, const std::vector<std::optional<Tensor>>& bias,
               const std::vector<bool>& reverse) {
  const size_t nd = u.size();
  TORCH_CHECK(nd >= 1 && delta.size() == nd && A.size() == nd && B.size() == nd && C.size() == nd &&
                  D.size() == nd && bias.size() == nd && reverse.size() == nd,
              "selective scan: every per-direction list needs one entry per direction");
  Inputs in;
  const auto dtype = u[0].scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kBFloat16 || dtype == at::kHalf,
              "selective scan: float32, float64, bfloat16 or float16 only");
  const auto compute = dtype == at::kDouble ? at::kDouble : at::kFloat;
  in.storage = dtype;
  in.compute = compute;
  TORCH_CHECK(u[0].dim() == 3, "selective scan: u must be (batch, d, L)");
  in.batch = u[0].size(0);
  in.dim = u[0].size(1);
  in.len = u[0].size(2);
  TORCH_CHECK(A[0].dim() == 2 && A[0].size(0) == in.dim, "selective scan: A must be (d, n)");
  in.nstate = A[0].size(1);
  const int64_t np = vectors_per_state(in.nstate, lanes_for(compute)) * lanes_for(compute);
  // u, delta, B, C in the storage dtype; the parameters A, D, delta_bias in the compute dtype.
  auto check = [&](const Tensor& t, at::IntArrayRef shape, const char* name, at::ScalarType want) {
    TORCH_CHECK(t.device().is_cpu(), "selective scan: ", name, " must be on the CPU");
    TORCH_CHECK(t.scalar_type() == want, "selective scan: ", name, " has dtype ", t.scalar_type(),
                ", expected ", want);
    TORCH_CHECK(t.sizes() == shape, "selective scan: ", name, " has shape ", t.sizes(), ", expected ", shape);
  };
  const std::vector<int64_t> bdl{in.batch, in.dim, in.len}, bnl{in.batch, in.nstate, in.len},
      dn{in.dim, in.nstate}, d1{in.dim};
  for (size_t i = 0; i < nd; ++i) {
    check(u[i], bdl, "u", dtype);
    check(delta[i], bdl, "delta", dtype);
    check(A[i], dn, "A", compute);
    check(B[i], bnl, "B", dtype);
    check(C[i], bnl, "C", dtype);
    in.u.push_back(u[i].contiguous());
    in.delta.push_back(delta[i].contiguous());
    in.A.push_back(pad_state(A[i], np, compute));
    in.Bt.push_back(pad_state(B[i].transpose(1, 2), np, compute));
    in.Ct.push_back(pad_state(C[i].transpose(1, 2), np, compute));
    if (D[i].has_value()) {
      check(*D[i], d1, "D", compute);
      in.D.push_back(D[i]->contiguous());
    } else {
      in.D.emplace_back();
    }
    if (bias[i].has_value()) {
      check(*bias[i], d1, "delta_bias", compute);
      in.bias.push_back(bias[i]->contiguous());
    } else {
      in.bias.emplace_back();
    }
  }
  in.reverse = reverse;
  return in;
}

Geometry geometry(const Inputs& in, int64_t chunk) {
  TORCH_CHECK(chunk >= 1, "selective scan: chunk must be positive");
  Geometry g;
  g.batch = in.batch;
  g.dim = in.dim;
  g.len = in.len;
  g.np = in.A[0].size(1);
  g.chunk = chunk;
  g.nchunks = (in.len + chunk - 1) / chunk;
  // Split the channels of each batch element so that there is work for every thread and the item
  // count divides evenly among them (each item owns a dB/dC accumulator, so do not overdo it).
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  int64_t s = std::max<int64_t>(1, (threads + in.batch - 1) / in.batch);
  while (s < in.dim && (in.batch * s) % threads != 0 && in.batch * s < 4 * threads) ++s;
  g.nsplit = std::max<int64_t>(1, std::min(s, in.dim));
  return g;
}

template <typename T>
const T* ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

template <typename T, typename S>
std::vector<Direction<T, S>> directions(const Inputs& in) {
  std::vector<Direction<T, S>> dirs(in.u.size());
  for (size_t i = 0; i < dirs.size(); ++i) {
    dirs[i].u = in.u[i].data_ptr<S>();
    dirs[i].delta = in.delta[i].data_ptr<S>();
    dirs[i].A = in.A[i].data_ptr<T>();
    dirs[i].Bt = in.Bt[i].data_ptr<T>();
    dirs[i].Ct = in.Ct[i].data_ptr<T>();
    dirs[i].Dskip = ptr_or_null<T>(in.D[i]);
    dirs[i].bias = ptr_or_null<T>(in.bias[i]);
    dirs[i].reverse = in.reverse[i];
  }
  return dirs;
}

template <typename X>
struct Tag {
  using type = X;
};

// Calls f(Tag<T>, Tag<S>) for the storage dtype: (float, float), (double, double), (float, BFloat16) or
// (float, Half).
template <typename F>
void dispatch_types(at::ScalarType storage, F&& f) {
  switch (storage) {
    case at::kFloat: f(Tag<float>{}, Tag<float>{}); break;
    case at::kDouble: f(Tag<double>{}, Tag<double>{}); break;
    case at::kBFloat16: f(Tag<float>{}, Tag<at::BFloat16>{}); break;
    case at::kHalf: f(Tag<float>{}, Tag<at::Half>{}); break;
    default: TORCH_CHECK(false, "selective scan: unsupported dtype ", storage);
  }
}

template <typename F>
void dispatch_nv(int64_t nv, F&& f) {
  switch (nv) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    case 8: f(std::integral_constant<int, 8>{}); break;
    default: f(std::integral_constant<int, 16>{}); break;
  }
}

Tensor optional_contiguous(const std::optional<Tensor>& t, const Tensor& like, const char* name) {
  if (!t.has_value()) return Tensor();
  TORCH_CHECK(t->sizes() == like.sizes() && t->scalar_type() == like.scalar_type() && t->device().is_cpu(),
              "selective scan: ", name, " must match u in shape, dtype and device");
  return t->contiguous();
}

// Returns [out, out_pre, ckpt_0, ..., ckpt_{ndir-1}]; out_pre (the sum before the gate) is only
// defined when z is given and save is true, the checkpoints only when save is true.
std::vector<Tensor> scan_fwd(const std::vector<Tensor>& u, const std::vector<Tensor>& delta,
                             const std::vector<Tensor>& A, const std::vector<Tensor>& B,
                             const std::vector<Tensor>& C, const std::vector<std::optional<Tensor>>& D,
                             const std::vector<std::optional<Tensor>>& bias, const std::vector<bool>& reverse,
                             const std::optional<Tensor>& z_opt, bool softplus, bool save, int64_t chunk) {
  Inputs in = prepare(u, delta, A, B, C, D, bias, reverse);
  const Geometry g = geometry(in, chunk);
  const Tensor z = optional_contiguous(z_opt, in.u[0], "z");
  const auto copts = in.u[0].options().dtype(in.compute);
  Tensor out = at::empty_like(in.u[0]);
  Tensor out_pre = (save && z.defined()) ? at::empty(out.sizes(), copts) : Tensor();
  // The sum of the directions before the gate, in the compute dtype: out itself when that is the
  // storage dtype, else out_pre (kept for the backward) or a scratch tensor.
  Tensor acc = in.storage == in.compute ? out : (out_pre.defined() ? out_pre : at::empty(out.sizes(), copts));
  std::vector<Tensor> ckpts;
  for (size_t i = 0; i < in.u.size(); ++i) {
    ckpts.push_back(save ? at::empty({g.batch, g.dim, g.nchunks, g.np}, copts) : Tensor());
  }
  dispatch_types(in.storage, [&](auto t_tag, auto s_tag) {
    using T = typename decltype(t_tag)::type;
    using S = typename decltype(s_tag)::type;
    auto dirs = directions<T, S>(in);
    for (size_t i = 0; i < dirs.size(); ++i) dirs[i].ckpt = save ? ckpts[i].data_ptr<T>() : nullptr;
    const S* zp = ptr_or_null<S>(z);
    S* op = out.data_ptr<S>();
    T* ap = acc.data_ptr<T>();
    T* pp = out_pre.defined() ? out_pre.data_ptr<T>() : nullptr;
    dispatch_nv(g.np / Vectorized<T>::size(), [&](auto nv) {
      // The forward has no per-item accumulators, so it can cut the channels finely (about 8 items per
      // thread, at least 8 channels each) and hand the items out on demand: a thread that the OS
      // preempts (other processes on the same cores) then delays the call by one small item, not by
      // its whole static share.
      Geometry gf = g;
      const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
      const int64_t want = (8 * threads + g.batch - 1) / g.batch;
      gf.nsplit = std::max<int64_t>(1, std::min(want, g.dim / 8));
      const int64_t items = gf.batch * gf.nsplit;
      std::atomic<int64_t> next{0};
      at::parallel_for(0, std::min(threads, items), 1, [&](int64_t, int64_t) {
        for (int64_t i = next++; i < items; i = next++) {
          forward_items<T, S, decltype(nv)::value>(dirs, gf, zp, ap, op, pp, softplus, i, i + 1);
        }
      });
    });
  });
  std::vector<Tensor> result{out, out_pre};
  result.insert(result.end(), ckpts.begin(), ckpts.end());
  return result;
}

// Returns [du, ddelta, dA, dB, dC, dD, ddelta_bias] per direction, then dz. dD, ddelta_bias and dz are
// undefined (None) when the corresponding input is absent.
std::vector<Tensor> scan_bwd(const std::vector<Tensor>& u, const std::vector<Tensor>& delta,
                             const std::vector<Tensor>& A, const std::vector<Tensor>& B,
                             const std::vector<Tensor>& C, const std::vector<std::optional<Tensor>>& D,
                             const std::vector<std::optional<Tensor>>& bias, const std::vector<bool>& reverse,
                             const std::optional<Tensor>& z_opt, const std::optional<Tensor>& out_pre_opt,
                             const std::vector<Tensor>& ckpts, const Tensor& dout_in, bool softplus,
                             int64_t chunk) {
  Inputs in = prepare(u, delta, A, B, C, D, bias, reverse);
  const Geometry g = geometry(in, chunk);
  const Tensor z = optional_contiguous(z_opt, in.u[0], "z");
  const Tensor out_pre = out_pre_opt.has_value() ? out_pre_opt->contiguous() : Tensor();
  TORCH_CHECK(!out_pre.defined() || (out_pre.sizes() == in.u[0].sizes() && out_pre.scalar_type() == in.compute),
              "selective scan backward: out_pre must match u in shape, in the compute dtype");
  TORCH_CHECK(!z.defined() || out_pre.defined(), "selective scan backward: z needs out_pre");
  TORCH_CHECK(dout_in.sizes() == in.u[0].sizes(), "selective scan backward: dout has the wrong shape");
  const Tensor dout = dout_in.to(in.u[0].scalar_type()).contiguous();
  const size_t nd = in.u.size();
  TORCH_CHECK(ckpts.size() == nd, "selective scan backward: one checkpoint tensor per direction");
  const auto opts = in.u[0].options().dtype(in.compute);
  std::vector<Tensor> du, ddelta, dA, dBacc, dCacc, dD, dbias, ck;
  for (size_t i = 0; i < nd; ++i) {
    TORCH_CHECK(ckpts[i].sizes() == at::IntArrayRef({g.batch, g.dim, g.nchunks, g.np}),
                "selective scan backward: checkpoints do not match the inputs (chunk size changed?)");
    ck.push_back(ckpts[i].contiguous());
    du.push_back(at::empty_like(in.u[i]));
    ddelta.push_back(at::empty_like(in.u[i]));
    dA.push_back(at::empty({g.batch, g.dim, g.np}, opts));
    dBacc.push_back(at::zeros({g.nsplit, g.batch, g.len, g.np}, opts));
    dCacc.push_back(at::zeros({g.nsplit, g.batch, g.len, g.np}, opts));
    dD.push_back(in.D[i].defined() ? at::empty({g.batch, g.dim}, opts) : Tensor());
    dbias.push_back(in.bias[i].defined() ? at::empty({g.batch, g.dim}, opts) : Tensor());
  }
  Tensor dz = z.defined() ? at::empty_like(z) : Tensor();
  dispatch_types(in.storage, [&](auto t_tag, auto s_tag) {
    using T = typename decltype(t_tag)::type;
    using S = typename decltype(s_tag)::type;
    auto dirs = directions<T, S>(in);
    for (size_t i = 0; i < nd; ++i) {
      TORCH_CHECK(ck[i].scalar_type() == in.compute, "selective scan backward: checkpoints in the wrong dtype");
      dirs[i].ckpt = ck[i].data_ptr<T>();
      dirs[i].du = du[i].data_ptr<S>();
      dirs[i].ddelta = ddelta[i].data_ptr<S>();
      dirs[i].dA = dA[i].data_ptr<T>();
      dirs[i].dB_acc = dBacc[i].data_ptr<T>();
      dirs[i].dC_acc = dCacc[i].data_ptr<T>();
      dirs[i].dD = dD[i].defined() ? dD[i].data_ptr<T>() : nullptr;
      dirs[i].dbias = dbias[i].defined() ? dbias[i].data_ptr<T>() : nullptr;
    }
    const S* zp = ptr_or_null<S>(z);
    const T* pp = ptr_or_null<T>(out_pre);
    const S* dp = dout.data_ptr<S>();
    S* dzp = dz.defined() ? dz.data_ptr<S>() : nullptr;
    dispatch_nv(g.np / Vectorized<T>::size(), [&](auto nv) {
      at::parallel_for(0, g.batch * g.nsplit, 1, [&](int64_t i0, int64_t i1) {
        backward_items<T, S, decltype(nv)::value>(dirs, g, zp, pp, dp, dzp, softplus, i0, i1);
      });
    });
  });
  std::vector<Tensor> result;
  const int64_t n = in.nstate;
  for (size_t i = 0; i < nd; ++i) {
    result.push_back(du[i]);
    result.push_back(ddelta[i]);
    result.push_back(dA[i].sum(0).narrow(-1, 0, n).contiguous());
    result.push_back(dBacc[i].sum(0).narrow(-1, 0, n).transpose(1, 2).to(in.storage).contiguous());
    result.push_back(dCacc[i].sum(0).narrow(-1, 0, n).transpose(1, 2).to(in.storage).contiguous());
    result.push_back(dD[i].defined() ? dD[i].sum(0) : Tensor());
    result.push_back(dbias[i].defined() ? dbias[i].sum(0) : Tensor());
  }
  result.push_back(dz);
  return result;
}

// ---------------------------------------------------------------------------------------------------------
// Mamba's short convolution before the scan, u = silu(conv1d(x)), depthwise over the sequence, for
// inference (no backward). Causal (Vim's forward direction): out[t] = silu(b + sum_k w[k] x[t - K + 1 + k]);
// anti-causal (its backward direction, on the unflipped sequence): out[t] = silu(b + sum_k w[k] x[t + k]);
// x is zero outside [0, L). One pass over x, where ATen runs a depthwise conv and a separate SiLU.

template <typename T>
inline T silu_scalar(T y) {
  return y / (T(1) + std::exp(-y));
}

template <typename T>
void conv1d_silu_row(const T* x, const T* w, int64_t K, T bias, int64_t L, bool anticausal, T* out) {
  using Vec = Vectorized<T>;
  constexpr int64_t V = Vec::size();
  const int64_t off = anticausal ? 0 : -(K - 1);  // out[t] reads x[t + off + k], k < K
  auto scalar = [&](int64_t t) {
    T y = bias;
    for (int64_t k = 0; k < K; ++k) {
      const int64_t i = t + off + k;
      if (i >= 0 && i < L) y += w[k] * x[i];
    }
    out[t] = silu_scalar(y);
  };
  // Positions whose K inputs all lie inside the row: [lo, hi).
  const int64_t lo = std::min<int64_t>(L, std::max<int64_t>(0, -off));
  const int64_t hi = std::max<int64_t>(lo, L - (K - 1) - off);
  for (int64_t t = 0; t < lo; ++t) scalar(t);
  int64_t t = lo;
  const Vec vbias(bias), one(T(1));
  for (; t + V <= hi; t += V) {
    Vec y = vbias;
    for (int64_t k = 0; k < K; ++k) {
      y = at::vec::fmadd(Vec(w[k]), Vec::loadu(x + t + off + k), y);
    }
    (y / (one + fast_exp(y.neg()))).store(out + t);
  }
  for (; t < L; ++t) scalar(t);
}

Tensor conv1d_silu(const Tensor& x_in, const Tensor& weight_in, const std::optional<Tensor>& bias_in,
                   bool anticausal) {
  TORCH_CHECK(x_in.dim() == 3, "conv1d_silu: x must be (batch, d, L)");
  TORCH_CHECK(x_in.device().is_cpu(), "conv1d_silu: x must be on the CPU");
  TORCH_CHECK(x_in.scalar_type() == at::kFloat || x_in.scalar_type() == at::kDouble,
              "conv1d_silu: x must be float32 or float64, got ", x_in.scalar_type());
  const int64_t batch = x_in.size(0), dim = x_in.size(1), len = x_in.size(2);
  const Tensor x = x_in.contiguous();
  const Tensor weight = weight_in.reshape({weight_in.size(0), -1}).to(x.scalar_type()).contiguous();
  TORCH_CHECK(weight.size(0) == dim && weight.size(1) >= 1, "conv1d_silu: weight must be (d, 1, K) or (d, K)");
  const int64_t K = weight.size(1);
  Tensor bias;
  if (bias_in.has_value()) {
    bias = bias_in->to(x.scalar_type()).contiguous();
    TORCH_CHECK(bias.dim() == 1 && bias.size(0) == dim, "conv1d_silu: bias must be (d,)");
  }
  Tensor out = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv1d_silu", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* wp = weight.data_ptr<scalar_t>();
    const scalar_t* bp = bias.defined() ? bias.data_ptr<scalar_t>() : nullptr;
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, batch * dim, 1, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t d = r % dim;
        conv1d_silu_row<scalar_t>(xp + r * len, wp + d * K, K, bp ? bp[d] : scalar_t(0), len, anticausal,
                                  op + r * len);
      }
    });
  });
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// The gate of Restormer's gated-dconv FFN (MMA's FeedForward) after project_in, for inference (no
// backward): x (B, 2C, H, W) contiguous, w (2C, 1, 3, 3), zero padding 1,
//     out[b, c] = gelu(dw(x')[b, c]) * dw(x')[b, C + c],   dw = the depthwise 3x3 conv (+ bias),
// x' = x + input_bias per channel (project_in's bias, added here so that the product before needs no
// bias pass over its output; the zero padding is outside x', as in the network).
// Per channel pair the two input planes are copied into zero-padded scratch planes (so that every tap is
// an unconditional load) and each output row is computed along W in vectors, gelu and product included:
// one pass that reads x once and writes out once. oneDNN's depthwise conv with these post-ops was slower
// in both layouts on an AVX2 EPYC (ad hoc; the network is timed by benchmarks/latency.py).

// gelu(x) = x / 2 * (1 + erf(x / sqrt 2)). erf is Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7), the
// formula of ATen's vectorised float erf, with this file's exp for float with AVX2/AVX-512; otherwise
// ATen's erf.
template <typename T>
inline Vectorized<T> gelu_vec(const Vectorized<T>& x) {
  using Vec = Vectorized<T>;
#ifdef SISR_VEC
  if constexpr (std::is_same_v<T, float>) {
    const Vec z = x * Vec(float(M_SQRT1_2));
    const Vec az = z.abs();
    const Vec t = Vec(1.0f) / at::vec::fmadd(Vec(0.3275911f), az, Vec(1.0f));
    Vec r = at::vec::fmadd(Vec(1.061405429f), t, Vec(-1.453152027f));
    r = at::vec::fmadd(r, t, Vec(1.421413741f));
    r = at::vec::fmadd(r, t, Vec(-0.284496736f));
    r = at::vec::fmadd(r, t, Vec(0.254829592f));
    const Vec erfc = r * t * exp_float((az * az).neg());  // erfc(|z|)
    // 1 + erf(z): 2 - erfc(|z|) for z >= 0, erfc(|z|) for z < 0.
    return x * Vec(0.5f) * Vec::blendv(Vec(2.0f) - erfc, erfc, z < Vec(0.0f));
  }
#endif
  return x * Vec(T(0.5)) * (Vec(T(1)) + (x * Vec(T(M_SQRT1_2))).erf());
}

template <typename T>
inline T gelu_scalar(T x) {
  return x * T(0.5) * (T(1) + std::erf(x * T(M_SQRT1_2)));
}

// The nine taps of a zero-padded plane p (row stride S) at output positions [x, x + V) of a row.
template <typename T>
inline Vectorized<T> taps3x3(const T* p, int64_t S, const T* w, T bias) {
  using Vec = Vectorized<T>;
  Vec acc(bias);
  for (int dy = 0; dy < 3; ++dy) {
    for (int dx = 0; dx < 3; ++dx) {
      acc = at::vec::fmadd(Vec(w[dy * 3 + dx]), Vec::loadu(p + dy * S + dx), acc);
    }
  }
  return acc;
}

template <typename T>
inline T taps3x3_scalar(const T* p, int64_t S, const T* w, T bias) {
  T acc = bias;
  for (int dy = 0; dy < 3; ++dy) {
    for (int dx = 0; dx < 3; ++dx) acc += w[dy * 3 + dx] * p[dy * S + dx];
  }
  return acc;
}

// src (H, W) + offset into dst (H + 2, W + 2) with a zero border.
template <typename T>
void pad_plane(const T* src, T offset, int64_t H, int64_t W, T* dst) {
  const int64_t S = W + 2;
  std::fill(dst, dst + S, T(0));
  std::fill(dst + (H + 1) * S, dst + (H + 2) * S, T(0));
  for (int64_t y = 0; y < H; ++y) {
    T* d = dst + (y + 1) * S;
    d[0] = T(0);
    for (int64_t i = 0; i < W; ++i) d[i + 1] = src[y * W + i] + offset;
    d[W + 1] = T(0);
  }
}

Tensor gated_dwconv3x3(const Tensor& x_in, const Tensor& weight_in, const std::optional<Tensor>& bias_in,
                       const std::optional<Tensor>& input_bias_in) {
  TORCH_CHECK(x_in.dim() == 4, "gated_dwconv3x3: x must be (B, 2C, H, W)");
  TORCH_CHECK(x_in.device().is_cpu(), "gated_dwconv3x3: x must be on the CPU");
  TORCH_CHECK(x_in.scalar_type() == at::kFloat || x_in.scalar_type() == at::kDouble,
              "gated_dwconv3x3: x must be float32 or float64, got ", x_in.scalar_type());
  const int64_t batch = x_in.size(0), C2 = x_in.size(1), H = x_in.size(2), W = x_in.size(3);
  TORCH_CHECK(C2 % 2 == 0, "gated_dwconv3x3: x must have an even number of channels, got ", C2);
  const int64_t C = C2 / 2;
  TORCH_CHECK(weight_in.numel() == C2 * 9, "gated_dwconv3x3: weight must be (2C, 1, 3, 3)");
  const Tensor x = x_in.contiguous();
  const Tensor weight = weight_in.reshape({C2, 9}).to(x.scalar_type()).contiguous();
  Tensor bias;
  if (bias_in.has_value()) {
    bias = bias_in->to(x.scalar_type()).contiguous();
    TORCH_CHECK(bias.dim() == 1 && bias.size(0) == C2, "gated_dwconv3x3: bias must be (2C,)");
  }
  Tensor input_bias;
  if (input_bias_in.has_value()) {
    input_bias = input_bias_in->to(x.scalar_type()).contiguous();
    TORCH_CHECK(input_bias.dim() == 1 && input_bias.size(0) == C2, "gated_dwconv3x3: input_bias must be (2C,)");
  }
  Tensor out = at::empty({batch, C, H, W}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gated_dwconv3x3", [&] {
    using Vec = Vectorized<scalar_t>;
    constexpr int64_t V = Vec::size();
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* wp = weight.data_ptr<scalar_t>();
    const scalar_t* bp = bias.defined() ? bias.data_ptr<scalar_t>() : nullptr;
    const scalar_t* ip = input_bias.defined() ? input_bias.data_ptr<scalar_t>() : nullptr;
    scalar_t* op = out.data_ptr<scalar_t>();
    const int64_t S = W + 2, plane = H * W;
    at::parallel_for(0, batch * C, 1, [&](int64_t r0, int64_t r1) {
      std::vector<scalar_t> scratch(2 * (H + 2) * S);
      scalar_t* p1 = scratch.data();  // the gelu half's plane, padded
      scalar_t* p2 = p1 + (H + 2) * S;  // the other half's plane, padded
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t b = r / C, c = r % C;
        pad_plane(xp + (b * C2 + c) * plane, ip ? ip[c] : scalar_t(0), H, W, p1);
        pad_plane(xp + (b * C2 + C + c) * plane, ip ? ip[C + c] : scalar_t(0), H, W, p2);
        const scalar_t* w1 = wp + c * 9;
        const scalar_t* w2 = wp + (C + c) * 9;
        const scalar_t b1 = bp ? bp[c] : scalar_t(0), b2 = bp ? bp[C + c] : scalar_t(0);
        for (int64_t y = 0; y < H; ++y) {
          const scalar_t* q1 = p1 + y * S;
          const scalar_t* q2 = p2 + y * S;
          scalar_t* o = op + r * plane + y * W;
          int64_t i = 0;
          for (; i + V <= W; i += V) {
            (gelu_vec(taps3x3(q1 + i, S, w1, b1)) * taps3x3(q2 + i, S, w2, b2)).store(o + i);
          }
          for (; i < W; ++i) {
            o[i] = gelu_scalar(taps3x3_scalar(q1 + i, S, w1, b1)) * taps3x3_scalar(q2 + i, S, w2, b2);
          }
        }
      }
    });
  });
  return out;
}

// Layer norm over the last dimension of a contiguous (rows, C) tensor: SeemoRe's LayerNorm2d on the
// (B, H, W, C) view of its channels_last features, where C is small (36 or 48) and ATen's row kernel
// spends most of its time on per-row overhead. Per row, in float whatever the storage type S (float or
// bfloat16): the mean, then the variance of the centred values (two passes over the row, which stays in
// L1), then (x - mean) * rstd * weight + bias, rounded to S once. bfloat16 is converted 64 rows at a time
// (one vectorised call over a contiguous block; per row, a 36-wide row would leave a scalar tail).
template <typename S>
void layer_norm_rows_impl(const S* xp, const float* wp, const float* bp, float eps, int64_t rows, int64_t C,
                          S* op) {
  using Vec = Vectorized<float>;
  constexpr int64_t V = Vec::size();
  constexpr int64_t kBlock = 64;  // rows converted from and to S in one vectorised call
  const int64_t full = C / V * V;
  at::parallel_for(0, rows, kBlock, [&](int64_t r0, int64_t r1) {
    std::vector<float> scratch(std::is_same_v<S, float> ? 0 : 2 * kBlock * C);
    for (int64_t b0 = r0; b0 < r1; b0 += kBlock) {
      const int64_t n = std::min(kBlock, r1 - b0);
      // The block of rows as float, and where its float result goes (S == float: in and out directly).
      const float* xb = as_compute<float>(xp + b0 * C, n * C, scratch.data());
      float* yb = std::is_same_v<S, float> ? reinterpret_cast<float*>(op + b0 * C) : scratch.data() + kBlock * C;
      for (int64_t r = 0; r < n; ++r) {
        const float* x = xb + r * C;
        float* y = yb + r * C;
        Vec vsum(0.0f);
        for (int64_t i = 0; i < full; i += V) vsum = vsum + Vec::loadu(x + i);
        float sum = hsum(vsum);
        for (int64_t i = full; i < C; ++i) sum += x[i];
        const float mean = sum / float(C);
        Vec vsq(0.0f);
        for (int64_t i = 0; i < full; i += V) {
          const Vec d = Vec::loadu(x + i) - Vec(mean);
          vsq = at::vec::fmadd(d, d, vsq);
        }
        float sq = hsum(vsq);
        for (int64_t i = full; i < C; ++i) sq += (x[i] - mean) * (x[i] - mean);
        const float rstd = 1.0f / std::sqrt(sq / float(C) + eps);
        for (int64_t i = 0; i < full; i += V) {
          const Vec normed = (Vec::loadu(x + i) - Vec(mean)) * Vec(rstd);
          at::vec::fmadd(normed, Vec::loadu(wp + i), Vec::loadu(bp + i)).store(y + i);
        }
        for (int64_t i = full; i < C; ++i) y[i] = (x[i] - mean) * rstd * wp[i] + bp[i];
      }
      if constexpr (!std::is_same_v<S, float>) at::vec::convert(yb, op + b0 * C, n * C);
    }
  });
}

Tensor layer_norm_rows(const Tensor& x, const Tensor& weight_in, const Tensor& bias_in, double eps) {
  TORCH_CHECK(x.device().is_cpu(), "layer_norm_rows: x must be on the CPU");
  TORCH_CHECK(x.is_contiguous() && x.dim() >= 1, "layer_norm_rows: x must be contiguous");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16,
              "layer_norm_rows: x must be float32 or bfloat16, got ", x.scalar_type());
  const int64_t C = x.size(-1);
  TORCH_CHECK(weight_in.numel() == C && bias_in.numel() == C, "layer_norm_rows: weight and bias must be (C,)");
  const Tensor weight = weight_in.to(at::kFloat).contiguous();
  const Tensor bias = bias_in.to(at::kFloat).contiguous();
  Tensor out = at::empty_like(x);
  const int64_t rows = C == 0 ? 0 : x.numel() / C;
  const float* wp = weight.data_ptr<float>();
  const float* bp = bias.data_ptr<float>();
  if (x.scalar_type() == at::kFloat) {
    layer_norm_rows_impl<float>(x.data_ptr<float>(), wp, bp, float(eps), rows, C, out.data_ptr<float>());
  } else {
    layer_norm_rows_impl<at::BFloat16>(x.data_ptr<at::BFloat16>(), wp, bp, float(eps), rows, C,
                                       out.data_ptr<at::BFloat16>());
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Fused CPU selective scan (sisr). Lists hold one entry per scan direction.";
  m.def("fwd", &scan_fwd, "Selective scan forward", py::arg("u"), py::arg("delta"), py::arg("A"), py::arg("B"),
        py::arg("C"), py::arg("D"), py::arg("delta_bias"), py::arg("reverse"), py::arg("z"),
        py::arg("delta_softplus"), py::arg("save"), py::arg("chunk"));
  m.def("bwd", &scan_bwd, "Selective scan backward", py::arg("u"), py::arg("delta"), py::arg("A"),
        py::arg("B"), py::arg("C"), py::arg("D"), py::arg("delta_bias"), py::arg("reverse"), py::arg("z"),
        py::arg("out_pre"), py::arg("ckpts"), py::arg("dout"), py::arg("delta_softplus"), py::arg("chunk"));
  m.def("conv1d_silu", &conv1d_silu, "Depthwise conv1d over the sequence, then SiLU (inference)", py::arg("x"),
        py::arg("weight"), py::arg("bias"), py::arg("anticausal"));
  m.def("gated_dwconv3x3", &gated_dwconv3x3,
        "gelu(dw3x3(x)[:, :C]) * dw3x3(x)[:, C:] for a depthwise 3x3 conv with zero padding (inference)",
        py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("input_bias"));
  m.def("layer_norm_rows", &layer_norm_rows,
        "layer norm over the last dimension of a contiguous float32/bfloat16 tensor (inference)", py::arg("x"),
        py::arg("weight"), py::arg("bias"), py::arg("eps"));
  m.def("lanes", [] { return Vectorized<float>::size(); }, "float lanes of the compiled vector type");
}
