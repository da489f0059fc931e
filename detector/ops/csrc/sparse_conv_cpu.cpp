// Fused gather-GEMM-scatter sparse convolution kernels for the CPU (AVX2 + FMA, OpenMP via ATen).
//
// A convolution is given by a neighbour map ``nbr`` (rows, KV) int32: ``nbr[r, k]`` is the source row
// that reaches destination row ``r`` through kernel offset ``k`` (-1 where none). Then
//
//     dst[r] = sum_k src[nbr[r, k]] @ W[k]            W: (KV, C_src, C_dst_pad), zero-padded columns
//
// is the forward (destination = output sites) and, with the transposed map and W[k]^T, the input
// gradient. Every destination row is computed by one thread, in a fixed offset order, with
// accumulators held in registers: no atomics, and the result does not depend on the thread count.
//
// The weight gradient dW[k] = sum_r src[nbr[r, k]]^T grad[r] runs one task per offset (each dW[k] is
// owned by one thread, pairs taken in row order) over chunks of rows, read in place or copied into
// panels by width.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace {

constexpr int kLanes = 8;  // floats per AVX register

// acc[NB] (NB registers of 8 columns) += x[0:c_src] @ w[:, col0 : col0 + 8 NB] for one source row. With
// one or two registers a row, one chain of dependent FMAs per register would wait on the FMA latency
// (4 cycles) at every channel: the channels are then split over kChains partial sums (channel c into
// chain c % kChains), added together at the end of the row, in a fixed order.
template <int NB>
inline void row_times_block(const float* __restrict x, const float* __restrict w, int64_t c_src,
                            int64_t ld_w, __m256 (&acc)[NB]) {
  constexpr int kChains = NB >= 3 ? 1 : 4 / NB;
  if constexpr (kChains == 1) {
    for (int64_t c = 0; c < c_src; ++c) {
      const __m256 xb = _mm256_broadcast_ss(x + c);
      const float* wr = w + c * ld_w;
#pragma GCC unroll 8
      for (int j = 0; j < NB; ++j) acc[j] = _mm256_fmadd_ps(xb, _mm256_loadu_ps(wr + j * kLanes), acc[j]);
    }
  } else {
    __m256 part[kChains][NB];
    for (int u = 0; u < kChains; ++u)
      for (int j = 0; j < NB; ++j) part[u][j] = _mm256_setzero_ps();
    int64_t c = 0;
    for (; c + kChains <= c_src; c += kChains)
      for (int u = 0; u < kChains; ++u) {
        const __m256 xb = _mm256_broadcast_ss(x + c + u);
        const float* wr = w + (c + u) * ld_w;
        for (int j = 0; j < NB; ++j) part[u][j] = _mm256_fmadd_ps(xb, _mm256_loadu_ps(wr + j * kLanes), part[u][j]);
      }
    for (int u = 0; c < c_src; ++c, ++u) {
      const __m256 xb = _mm256_broadcast_ss(x + c);
      const float* wr = w + c * ld_w;
      for (int j = 0; j < NB; ++j) part[u][j] = _mm256_fmadd_ps(xb, _mm256_loadu_ps(wr + j * kLanes), part[u][j]);
    }
    for (int j = 0; j < NB; ++j) {
      __m256 sum = part[0][j];
      for (int u = 1; u < kChains; ++u) sum = _mm256_add_ps(sum, part[u][j]);
      acc[j] = _mm256_add_ps(acc[j], sum);
    }
  }
}

// dst[r, col0 : col0 + width] for rows [r0, r1), one register block of NB*8 columns.
template <int NB>
void conv_rows_block(const float* __restrict src, const int32_t* __restrict nbr, const float* __restrict w,
                     float* __restrict dst, int64_t r0, int64_t r1, int64_t kv, int64_t c_src, int64_t ld_w,
                     int64_t c_dst, int64_t col0) {
  const int64_t width = std::min<int64_t>(NB * kLanes, c_dst - col0);
  const int64_t w_stride = c_src * ld_w;
  alignas(32) float tail[NB * kLanes];
  for (int64_t r = r0; r < r1; ++r) {
    __m256 acc[NB];
    for (int j = 0; j < NB; ++j) acc[j] = _mm256_setzero_ps();
    const int32_t* nr = nbr + r * kv;
    for (int64_t k = 0; k < kv; ++k) {
      const int32_t i = nr[k];
      if (i < 0) continue;
      row_times_block<NB>(src + static_cast<int64_t>(i) * c_src, w + k * w_stride + col0, c_src, ld_w, acc);
    }
    float* out = dst + r * c_dst + col0;
    if (width == NB * kLanes) {
      for (int j = 0; j < NB; ++j) _mm256_storeu_ps(out + j * kLanes, acc[j]);
    } else {
      for (int j = 0; j < NB; ++j) _mm256_store_ps(tail + j * kLanes, acc[j]);
      std::memcpy(out, tail, sizeof(float) * width);
    }
  }
}

// acc[c0 : c0 + MR, col0 : col0 + 8 NB] += sum_p a_p[c0 : c0 + MR]^T b_p[col0 : ...] over the rows a_p = a[p],
// b_p = b[p] read in place (pointers: no gathered copies): MR x NB registers.
template <int MR, int NB>
void dw_tile(const float* const* __restrict a, const float* const* __restrict b, float* __restrict acc, int64_t m,
             int64_t ld, int64_t c0, int64_t col0) {
  __m256 r[MR][NB];
  for (int q = 0; q < MR; ++q)
    for (int j = 0; j < NB; ++j) r[q][j] = _mm256_loadu_ps(acc + (c0 + q) * ld + col0 + j * kLanes);
  for (int64_t p = 0; p < m; ++p) {
    const float* ar = a[p] + c0;
    const float* br = b[p] + col0;
    __m256 v[NB];
    for (int j = 0; j < NB; ++j) v[j] = _mm256_loadu_ps(br + j * kLanes);
    for (int q = 0; q < MR; ++q) {
      const __m256 x = _mm256_broadcast_ss(ar + q);
      for (int j = 0; j < NB; ++j) r[q][j] = _mm256_fmadd_ps(x, v[j], r[q][j]);
    }
  }
  for (int q = 0; q < MR; ++q)
    for (int j = 0; j < NB; ++j) _mm256_storeu_ps(acc + (c0 + q) * ld + col0 + j * kLanes, r[q][j]);
}

// acc (c_in, ld) += sum_p a_p^T b_p (a_p: c_in values, b_p: ld values): tiles of 6 input channels x 16
// columns (8 at a ragged end).
template <int NB>
void dw_columns(const float* const* a, const float* const* b, float* acc, int64_t m, int64_t c_in, int64_t ld,
                int64_t col0) {
  int64_t c = 0;
  for (; c + 6 <= c_in; c += 6) dw_tile<6, NB>(a, b, acc, m, ld, c, col0);
  switch (c_in - c) {
    case 5: dw_tile<5, NB>(a, b, acc, m, ld, c, col0); break;
    case 4: dw_tile<4, NB>(a, b, acc, m, ld, c, col0); break;
    case 3: dw_tile<3, NB>(a, b, acc, m, ld, c, col0); break;
    case 2: dw_tile<2, NB>(a, b, acc, m, ld, c, col0); break;
    case 1: dw_tile<1, NB>(a, b, acc, m, ld, c, col0); break;
    default: break;
  }
}

void dw_accumulate(const float* const* a, const float* const* b, float* acc, int64_t m, int64_t c_in, int64_t ld) {
  int64_t col0 = 0;
  for (; col0 + 2 * kLanes <= ld; col0 += 2 * kLanes) dw_columns<2>(a, b, acc, m, c_in, ld, col0);
  if (col0 < ld) dw_columns<1>(a, b, acc, m, c_in, ld, col0);
}


// The weight gradient's product dW[k] += A^T B over a chunk of m pairs (A: the pairs' input rows, B: their
// gradient rows), as a GEMM whose inner dimension is the pairs. Both operands are packed per chunk into
// slivers: A by groups of kDwMr input channels (a[g][p][0:6], zero past c_in), B by blocks of 16 columns
// (b[cb][p][0:16], a last block of 8 where c_out rounded up to 8 ends there, zero past c_out). A tile of
// 6 x 16 (or 6 x 8) dW values stays in registers while its two slivers stream through the pairs
// contiguously: the B sliver (kDwKc x 64 bytes) stays in L1 over all the channel groups, each A sliver
// (kDwKc x 24 bytes) comes from L2 in sequence. (Reading the rows in place, 6 channels of each row per
// tile, made every tile stride through L2: 2.5-3.5x slower than the forward on the same layer.)
constexpr int kDwMr = 6;
constexpr int64_t kDwKc = 256;  // pairs per chunk

template <int NB>
inline void dw_packed_tile(const float* __restrict a, const float* __restrict b, int64_t m, float* __restrict acc,
                           int64_t ld) {
  __m256 r[kDwMr][NB];
  for (int q = 0; q < kDwMr; ++q)
    for (int j = 0; j < NB; ++j) r[q][j] = _mm256_loadu_ps(acc + q * ld + j * kLanes);
  for (int64_t p = 0; p < m; ++p) {
    __m256 v[NB];
    for (int j = 0; j < NB; ++j) v[j] = _mm256_loadu_ps(b + p * NB * kLanes + j * kLanes);
    for (int q = 0; q < kDwMr; ++q) {
      const __m256 x = _mm256_broadcast_ss(a + p * kDwMr + q);
      for (int j = 0; j < NB; ++j) r[q][j] = _mm256_fmadd_ps(x, v[j], r[q][j]);
    }
  }
  for (int q = 0; q < kDwMr; ++q)
    for (int j = 0; j < NB; ++j) _mm256_storeu_ps(acc + q * ld + j * kLanes, r[q][j]);
}

// Packs pair p (input row x, gradient row g) into the chunk's slivers.
inline void dw_pack_pair(const float* __restrict x, const float* __restrict g, int64_t p, int64_t c_in, int64_t c_out,
                         int64_t ld, float* __restrict apk, float* __restrict bpk) {
  int64_t c0 = 0;
  float* dst = apk + p * kDwMr;
  for (; c0 + kDwMr <= c_in; c0 += kDwMr, dst += kDwKc * kDwMr) std::memcpy(dst, x + c0, sizeof(float) * kDwMr);
  if (c0 < c_in) {
    alignas(32) float tail[kDwMr] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    std::memcpy(tail, x + c0, sizeof(float) * (c_in - c0));
    std::memcpy(dst, tail, sizeof(float) * kDwMr);
  }
  int64_t col0 = 0;
  for (; col0 + 2 * kLanes <= c_out; col0 += 2 * kLanes) {
    float* d = bpk + col0 * kDwKc + p * 2 * kLanes;
    _mm256_storeu_ps(d, _mm256_loadu_ps(g + col0));
    _mm256_storeu_ps(d + kLanes, _mm256_loadu_ps(g + col0 + kLanes));
  }
  if (col0 < ld) {  // the ragged end: 16 or 8 columns, zero past c_out
    const int64_t w = std::min<int64_t>(2 * kLanes, ld - col0);
    alignas(32) float tail[2 * kLanes] = {};
    std::memcpy(tail, g + col0, sizeof(float) * (c_out - col0));
    std::memcpy(bpk + col0 * kDwKc + p * w, tail, sizeof(float) * w);
  }
}

// acc (groups * 6, ld) += the chunk's m packed pairs.
inline void dw_chunk(const float* apk, const float* bpk, int64_t m, int64_t c_in, int64_t ld, float* acc) {
  const int64_t groups = (c_in + kDwMr - 1) / kDwMr;
  for (int64_t col0 = 0; col0 < ld; col0 += 2 * kLanes) {
    const float* b = bpk + col0 * kDwKc;
    const bool full = ld - col0 >= 2 * kLanes;
    for (int64_t gi = 0; gi < groups; ++gi) {
      const float* a = apk + gi * kDwKc * kDwMr;
      float* c = acc + gi * kDwMr * ld + col0;
      if (full)
        dw_packed_tile<2>(a, b, m, c, ld);
      else
        dw_packed_tile<1>(a, b, m, c, ld);
    }
  }
}

// Offset-major variant for wide layers, where the KV matrices do not fit in the core's cache: rows are
// taken in blocks; within a block, offset by offset, the block's source rows of that offset
// are copied into a contiguous panel and multiplied with W[k], itself packed by column block
// (``pack_columns``), kMr rows x 16 columns in registers; the products are added into the block's output
// buffer. Both operands are then read sequentially from the core's cache (the hardware prefetchers keep
// up), which is what reading the source rows and W[k]'s strided columns in place could not (2.5-2.9x
// on the 64-128-channel layers). A block holds
// about kRowsPerOffset pairs per offset (more rows where the map is sparse), so that the zero rows that
// pad each offset's last register group stay few. Each row still sums its offsets in ascending order,
// so the result does not depend on the blocking or the threads.
constexpr int64_t kRowsPerOffset = 72;
constexpr int kMr = 6;                     // rows per register block
constexpr int kNb = 2;                     // registers per row: 16 columns
constexpr int64_t kNc = kNb * kLanes;

// w (KV, c_src, ld_w) -> (KV, n_col_blocks, c_src, 16), zero-padded past ld_w.
std::vector<float> pack_columns(const float* w, int64_t kv, int64_t c_src, int64_t ld_w) {
  const int64_t ncb = (ld_w + kNc - 1) / kNc;
  std::vector<float> out(kv * ncb * c_src * kNc, 0.0f);
  for (int64_t k = 0; k < kv; ++k)
    for (int64_t cb = 0; cb < ncb; ++cb)
      for (int64_t c = 0; c < c_src; ++c) {
        const int64_t n = std::min<int64_t>(kNc, ld_w - cb * kNc);
        std::memcpy(&out[((k * ncb + cb) * c_src + c) * kNc], w + (k * c_src + c) * ld_w + cb * kNc,
                    sizeof(float) * n);
      }
  return out;
}

void conv_rows_offset_major(const float* __restrict src, const int32_t* __restrict nbr, const float* __restrict wpk,
                            float* __restrict dst, int64_t r0, int64_t r1, int64_t kv, int64_t c_src, int64_t ld_w,
                            int64_t c_dst, int64_t block) {
  const int64_t ncb = (ld_w + kNc - 1) / kNc;
  const int64_t ldc = ncb * kNc;
  std::vector<float> buf((block + 1) * ldc);  // + a scratch row for the padded group's rows
  std::vector<float> panel((block + kMr) * c_src);
  std::vector<int32_t> lrow(block + kMr);
  for (int64_t b0 = r0; b0 < r1; b0 += block) {
    const int64_t nrows = std::min(block, r1 - b0);
    std::fill(buf.begin(), buf.end(), 0.0f);
    for (int64_t k = 0; k < kv; ++k) {
      int64_t m = 0;
      for (int64_t r = 0; r < nrows; ++r) {
        const int32_t i = nbr[(b0 + r) * kv + k];
        if (i < 0) continue;
        std::memcpy(panel.data() + m * c_src, src + static_cast<int64_t>(i) * c_src, sizeof(float) * c_src);
        lrow[m++] = static_cast<int32_t>(r);
      }
      if (m == 0) continue;
      for (int64_t q = m; q % kMr; ++q) {  // pad the last group with zero rows into the scratch row
        std::fill(panel.data() + q * c_src, panel.data() + (q + 1) * c_src, 0.0f);
        lrow[q] = static_cast<int32_t>(block);
      }
      for (int64_t cb = 0; cb < ncb; ++cb) {
        const float* wb = wpk + (k * ncb + cb) * c_src * kNc;
        for (int64_t g = 0; g < m; g += kMr) {
          const float* a = panel.data() + g * c_src;
          __m256 acc[kMr][kNb];
          for (int q = 0; q < kMr; ++q)
            for (int j = 0; j < kNb; ++j) acc[q][j] = _mm256_setzero_ps();
          for (int64_t c = 0; c < c_src; ++c) {
            __m256 wv[kNb];
            for (int j = 0; j < kNb; ++j) wv[j] = _mm256_loadu_ps(wb + c * kNc + j * kLanes);
            for (int q = 0; q < kMr; ++q) {
              const __m256 xq = _mm256_broadcast_ss(a + q * c_src + c);
              for (int j = 0; j < kNb; ++j) acc[q][j] = _mm256_fmadd_ps(xq, wv[j], acc[q][j]);
            }
          }
          for (int q = 0; q < kMr; ++q) {
            float* o = buf.data() + lrow[g + q] * ldc + cb * kNc;
            for (int j = 0; j < kNb; ++j)
              _mm256_storeu_ps(o + j * kLanes, _mm256_add_ps(_mm256_loadu_ps(o + j * kLanes), acc[q][j]));
          }
        }
      }
    }
    for (int64_t r = 0; r < nrows; ++r)
      std::memcpy(dst + (b0 + r) * c_dst, buf.data() + r * ldc, sizeof(float) * c_dst);
  }
}

using BlockFn = void (*)(const float*, const int32_t*, const float*, float*, int64_t, int64_t, int64_t, int64_t,
                         int64_t, int64_t, int64_t);
constexpr BlockFn kBlocks[9] = {nullptr,
                                conv_rows_block<1>, conv_rows_block<2>, conv_rows_block<3>, conv_rows_block<4>,
                                conv_rows_block<5>, conv_rows_block<6>, conv_rows_block<7>, conv_rows_block<8>};

void check_cpu_float(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == torch::kFloat32 && t.is_contiguous(), name,
              " must be a contiguous float32 CPU tensor");
}

}  // namespace

// dst (rows, c_dst) = sum_k src[nbr[:, k]] @ w[k][:, :c_dst];  w (KV, c_src, ld_w), ld_w = c_dst rounded up to 8.
torch::Tensor neighbour_conv(const torch::Tensor& src, const torch::Tensor& nbr, const torch::Tensor& w,
                             int64_t c_dst) {
  check_cpu_float(src, "src");
  check_cpu_float(w, "w");
  TORCH_CHECK(nbr.device().is_cpu() && nbr.scalar_type() == torch::kInt32 && nbr.is_contiguous() && nbr.dim() == 2,
              "nbr must be a contiguous (rows, KV) int32 CPU tensor");
  TORCH_CHECK(src.dim() == 2 && w.dim() == 3, "src (N, C) and w (KV, C, C_out_pad) expected");
  const int64_t rows = nbr.size(0), kv = nbr.size(1), c_src = src.size(1), ld_w = w.size(2);
  TORCH_CHECK(w.size(0) == kv && w.size(1) == c_src, "w must be (KV, C_src, C_dst_pad) matching nbr and src");
  TORCH_CHECK(ld_w % kLanes == 0 && ld_w >= c_dst && ld_w - c_dst < kLanes, "w's last dim must be c_dst padded to 8");
  auto dst = torch::empty({rows, c_dst}, src.options());
  if (rows == 0 || c_dst == 0) return dst;
  const float* ps = src.data_ptr<float>();
  const int32_t* pn = nbr.data_ptr<int32_t>();
  const float* pw = w.data_ptr<float>();
  float* pd = dst.data_ptr<float>();
  // rows per task: enough work to amortise the scheduling, small enough to balance two threads
  const int64_t grain = std::max<int64_t>(64, 32768 / std::max<int64_t>(1, kv * c_src * ld_w / 64));
  // all KV matrices in L1/L2 (small layers): row-major with every offset summed in registers;
  // otherwise offset-major over row blocks, each W[k] read once per block
  const bool wide = kv * c_src * ld_w * static_cast<int64_t>(sizeof(float)) > (96 << 10);
  if (wide) {
    const std::vector<float> wpk = pack_columns(pw, kv, c_src, ld_w);
    // rows per block from the map's density (its first rows as the sample)
    const int64_t sample = std::min<int64_t>(rows, 4096);
    int64_t present = 0;
    for (int64_t e = 0; e < sample * kv; ++e) present += pn[e] >= 0;
    const double per_row = std::max(1.0, static_cast<double>(present) / static_cast<double>(sample));
    const int64_t block = std::clamp<int64_t>(
        static_cast<int64_t>(kRowsPerOffset * static_cast<double>(kv) / per_row) / kMr * kMr, 96, 1536);
    at::parallel_for(0, rows, block, [&](int64_t r0, int64_t r1) {
      conv_rows_offset_major(ps, pn, wpk.data(), pd, r0, r1, kv, c_src, ld_w, c_dst, block);
    });
    return dst;
  }
  at::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t col0 = 0; col0 < c_dst; col0 += 8 * kLanes) {
      const int64_t nb = std::min<int64_t>(8, (ld_w - col0) / kLanes);
      kBlocks[nb](ps, pn, pw, pd, r0, r1, kv, c_src, ld_w, c_dst, col0);
    }
  });
  return dst;
}

// Pairs per offset of a neighbour map (counts (KV,) int32).
torch::Tensor map_counts(const torch::Tensor& nbr) {
  const int64_t rows = nbr.size(0), kv = nbr.size(1);
  auto counts = torch::zeros({kv}, nbr.options());
  const int32_t* pn = nbr.data_ptr<int32_t>();
  int32_t* pc = counts.data_ptr<int32_t>();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < kv; ++k) pc[k] += pn[r * kv + k] >= 0;
  return counts;
}

// Weight gradient of a convolution given the neighbour map its forward used (rows: output rows,
// entries: feature rows): dw (KV, c_in, c_out) with dw[k] = sum_r feat[nbr[r, k]]^T grad[r]. The offsets are
// split into groups (one group with one thread); a group's task walks the map's rows in blocks and, for
// each of its offsets, takes the block's pairs in row order, a chunk at a time, into that offset's
// accumulator: the block's gradient rows and the nearby feature rows are read from the cache by every
// offset of the group (one task per offset scanning the whole map read both tensors from memory once per
// offset: 27 times for a 3x3x3 kernel). Each dw[k] has one owner and sums its pairs in row order (chunks
// only split that sequence), so the result does not depend on the groups or the thread count. No pair
// lists are built or kept.
torch::Tensor map_weight_grad(const torch::Tensor& feat, const torch::Tensor& grad, const torch::Tensor& nbr) {
  check_cpu_float(feat, "feat");
  check_cpu_float(grad, "grad");
  TORCH_CHECK(nbr.device().is_cpu() && nbr.scalar_type() == torch::kInt32 && nbr.is_contiguous() && nbr.dim() == 2,
              "nbr must be a contiguous (rows, KV) int32 CPU tensor");
  TORCH_CHECK(nbr.size(0) == grad.size(0), "the map has one row per output row (grad)");
  const int64_t rows = nbr.size(0), kv = nbr.size(1), c_in = feat.size(1), c_out = grad.size(1);
  auto dw = torch::zeros({kv, c_in, c_out}, feat.options());
  if (rows == 0 || c_in == 0 || c_out == 0) return dw;
  const int32_t* pn = nbr.data_ptr<int32_t>();
  const int64_t ld = (c_out + kLanes - 1) / kLanes * kLanes;
  const float* pf = feat.data_ptr<float>();
  const float* pg = grad.data_ptr<float>();
  float* pdw = dw.data_ptr<float>();
  // Rows of 12 or more input channels are packed into slivers per chunk (``dw_chunk``); narrower ones
  // are read in place through pointers (gradient rows copied, zero-padded, where c_out is not a multiple
  // of 8). Measured on the surface benchmark's maps (CPU time, 1 thread): packing 1.1x faster at 16 -> 16,
  // 1.3x at 16 -> 32, 1.8x at 24 -> 48; in place 1.2x faster at 8 -> 16 and 1.5x at 5 -> 24.
  const bool packed = c_in >= 12;
  const int64_t chunk = packed ? kDwKc : 64;
  const int64_t groups = (c_in + kDwMr - 1) / kDwMr;
  const int64_t acc_size = groups * kDwMr * ld;
  // offset groups: contiguous runs of about equal pair counts, a few per thread (handed out dynamically)
  const int64_t threads = at::get_num_threads();
  const int64_t n_groups = std::min<int64_t>(kv, threads == 1 ? 1 : 3 * threads);
  std::vector<int64_t> count(kv, 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < kv; ++k) count[k] += pn[r * kv + k] >= 0;
  int64_t total_pairs = 0;
  for (int64_t k = 0; k < kv; ++k) total_pairs += count[k];
  std::vector<int64_t> first(n_groups + 1, kv);
  first[0] = 0;
  {
    int64_t g = 1, seen = 0;
    for (int64_t k = 0; k < kv && g < n_groups; ++k) {
      seen += count[k];
      if (seen * n_groups >= total_pairs * g && kv - (k + 1) >= n_groups - g) first[g++] = k + 1;
    }
    for (; g < n_groups; ++g) first[g] = std::min(kv, first[g - 1] + 1);
  }
  // rows per block: about 256 pairs per offset on average
  const int64_t block = std::clamp<int64_t>(total_pairs > 0 ? 256 * rows * kv / total_pairs : rows, 256, 2048);
#pragma omp parallel num_threads(static_cast<int>(threads))
  {
    const bool pad_b = !packed && ld != c_out;
    std::vector<float> apk(packed ? groups * kDwKc * kDwMr : 0), bpk(packed ? kDwKc * ld : 0);
    std::vector<float> b(pad_b ? chunk * ld : 0, 0.0f), acc;
    std::vector<const float*> arow(packed ? 0 : chunk), brow(packed ? 0 : chunk);
#pragma omp for schedule(dynamic, 1)
    for (int64_t gi = 0; gi < n_groups; ++gi) {
      const int64_t k0 = first[gi], k1 = first[gi + 1];
      if (k0 >= k1) continue;
      acc.assign((k1 - k0) * acc_size, 0.0f);
      for (int64_t b0 = 0; b0 < rows; b0 += block) {
        const int64_t b1 = std::min(rows, b0 + block);
        for (int64_t k = k0; k < k1; ++k) {
          if (count[k] == 0) continue;
          float* acc_k = acc.data() + (k - k0) * acc_size;
          int64_t m = 0;
          auto flush = [&]() {
            if (packed)
              dw_chunk(apk.data(), bpk.data(), m, c_in, ld, acc_k);
            else
              dw_accumulate(arow.data(), brow.data(), acc_k, m, c_in, ld);
            m = 0;
          };
          for (int64_t r = b0; r < b1; ++r) {
            const int32_t i = pn[r * kv + k];
            if (i < 0) continue;
            const float* x = pf + static_cast<int64_t>(i) * c_in;
            const float* g = pg + r * c_out;
            if (packed) {
              dw_pack_pair(x, g, m, c_in, c_out, ld, apk.data(), bpk.data());
            } else {
              if (pad_b) std::memcpy(&b[m * ld], g, sizeof(float) * c_out);
              arow[m] = x;
              brow[m] = pad_b ? &b[m * ld] : g;
            }
            if (++m == chunk) flush();
          }
          if (m > 0) flush();
        }
      }
      for (int64_t k = k0; k < k1; ++k)
        for (int64_t c = 0; c < c_in; ++c)
          std::memcpy(pdw + (k * c_in + c) * c_out, &acc[(k - k0) * acc_size + c * ld], sizeof(float) * c_out);
    }
  }
  return dw;
}

// Linear keys ((b * D + z) * H + y) * W + x -> rows [b, z, y, x] of out (keys.size(), 4).
static void decode_sites(const std::vector<int64_t>& keys, int64_t D, int64_t H, int64_t W, int32_t* out) {
  for (size_t j = 0; j < keys.size(); ++j) {
    int64_t key = keys[j];
    out[4 * j + 3] = static_cast<int32_t>(key % W);
    key /= W;
    out[4 * j + 2] = static_cast<int32_t>(key % H);
    key /= H;
    out[4 * j + 1] = static_cast<int32_t>(key % D);
    out[4 * j + 0] = static_cast<int32_t>(key / D);
  }
}

// Rule book of a regular (strided) convolution: output site o receives input site x through offset k
// where o * stride - padding + k * dilation = x in every dimension. Output sites are the distinct
// reachable ones inside ``out_shape``, in (batch, z, y, x) order. Returns (out_indices (M, 4),
// by_out (M, KV), by_in (N, KV), counts (KV,)); by_out[o, k] = input row, by_in[i, k] = output row. Deterministic (sorting and per-row writes only).
std::vector<torch::Tensor> strided_rulebook(const torch::Tensor& indices, std::vector<int64_t> shape,
                                            std::vector<int64_t> out_shape, std::vector<int64_t> ksize,
                                            std::vector<int64_t> stride, std::vector<int64_t> padding,
                                            std::vector<int64_t> dilation) {
  TORCH_CHECK(indices.device().is_cpu() && indices.scalar_type() == torch::kInt32 && indices.is_contiguous() &&
                  indices.dim() == 2 && indices.size(1) == 4,
              "indices must be a contiguous (N, 4) int32 CPU tensor (batch, z, y, x)");
  TORCH_CHECK(shape.size() == 3 && out_shape.size() == 3 && ksize.size() == 3 && stride.size() == 3 &&
                  padding.size() == 3 && dilation.size() == 3,
              "3D shapes, kernel, stride, padding and dilation expected");
  const int64_t n = indices.size(0);
  const int64_t kd = ksize[0], kh = ksize[1], kw = ksize[2], kv = kd * kh * kw;
  const int64_t OD = out_shape[0], OH = out_shape[1], OW = out_shape[2];
  const int32_t* idx = indices.data_ptr<int32_t>();
  // candidate (output key, input row, offset) triples
  std::vector<int64_t> cand_key;
  std::vector<int32_t> cand_row, cand_k;
  cand_key.reserve(n * 4);
  cand_row.reserve(n * 4);
  cand_k.reserve(n * 4);
  int64_t o_of[3][8];
  int64_t k_of[3][8];
  int cnt[3];
  for (int64_t i = 0; i < n; ++i) {
    const int32_t* c = idx + 4 * i;
    TORCH_CHECK(c[0] >= 0 && c[1] >= 0 && c[1] < shape[0] && c[2] >= 0 && c[2] < shape[1] && c[3] >= 0 &&
                    c[3] < shape[2],
                "index row ", i, " lies outside the spatial shape");
    const int64_t out_dims[3] = {OD, OH, OW};
    bool any = true;
    for (int d = 0; d < 3; ++d) {
      cnt[d] = 0;
      for (int64_t kk = 0; kk < ksize[d]; ++kk) {
        const int64_t num = c[d + 1] + padding[d] - kk * dilation[d];
        if (num < 0 || num % stride[d] != 0) continue;
        const int64_t o = num / stride[d];
        if (o >= out_dims[d]) continue;
        TORCH_CHECK(cnt[d] < 8, "kernel larger than 8 taps per stride is not supported");
        o_of[d][cnt[d]] = o;
        k_of[d][cnt[d]] = kk;
        ++cnt[d];
      }
      any = any && cnt[d] > 0;
    }
    if (!any) continue;
    for (int a = 0; a < cnt[0]; ++a)
      for (int b = 0; b < cnt[1]; ++b)
        for (int e = 0; e < cnt[2]; ++e) {
          cand_key.push_back(((static_cast<int64_t>(c[0]) * OD + o_of[0][a]) * OH + o_of[1][b]) * OW + o_of[2][e]);
          cand_row.push_back(static_cast<int32_t>(i));
          cand_k.push_back(static_cast<int32_t>((k_of[0][a] * kh + k_of[1][b]) * kw + k_of[2][e]));
        }
  }
  std::vector<int64_t> ukeys(cand_key);
  std::sort(ukeys.begin(), ukeys.end());
  ukeys.erase(std::unique(ukeys.begin(), ukeys.end()), ukeys.end());
  const int64_t m = static_cast<int64_t>(ukeys.size());
  auto out_idx = torch::empty({m, 4}, indices.options());
  decode_sites(ukeys, OD, OH, OW, out_idx.data_ptr<int32_t>());
  auto by_out = torch::full({m, kv}, -1, indices.options());
  auto by_in = torch::full({n, kv}, -1, indices.options());
  int32_t* pbo = by_out.data_ptr<int32_t>();
  int32_t* pbi = by_in.data_ptr<int32_t>();
  const int64_t nc = static_cast<int64_t>(cand_key.size());
  at::parallel_for(0, nc, 4096, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {  // each (o, k) and each (i, k) occurs once: disjoint writes
      const int64_t o = std::lower_bound(ukeys.begin(), ukeys.end(), cand_key[c]) - ukeys.begin();
      pbo[o * kv + cand_k[c]] = cand_row[c];
      pbi[static_cast<int64_t>(cand_row[c]) * kv + cand_k[c]] = static_cast<int32_t>(o);
    }
  });
  return {out_idx, by_out, by_in, map_counts(by_out)};
}

// Submanifold rule book (stride 1, odd kernel, output sites = input sites) as a neighbour map:
// nbr[o, k] = row of the site at indices[o] + (offset k - centre) * dilation, or -1. Offsets are numbered
// like spconv's weight (k = (kz * KH + ky) * KW + kx). The sites are sorted by linear key once; then for
// every offset one merge pass walks the sorted keys with a pointer that only moves forward, so the
// whole map costs O(KV N) sequential reads. Rows are split over threads (each owns its rows).
// Also returns the pairs per offset (counts (KV,)). No pair lists are kept: the weight gradient reads the
// map itself.
std::vector<torch::Tensor> submanifold_rulebook(const torch::Tensor& indices, std::vector<int64_t> shape,
                                                std::vector<int64_t> ksize, std::vector<int64_t> dilation) {
  TORCH_CHECK(indices.device().is_cpu() && indices.scalar_type() == torch::kInt32 && indices.is_contiguous() &&
                  indices.dim() == 2 && indices.size(1) == 4,
              "indices must be a contiguous (N, 4) int32 CPU tensor (batch, z, y, x)");
  TORCH_CHECK(shape.size() == 3 && ksize.size() == 3 && dilation.size() == 3, "3D shape, kernel and dilation");
  for (int d = 0; d < 3; ++d) TORCH_CHECK(ksize[d] % 2 == 1, "submanifold kernel sizes must be odd");
  const int64_t n = indices.size(0);
  const int64_t kd = ksize[0], kh = ksize[1], kw = ksize[2], kv = kd * kh * kw;
  const int64_t D = shape[0], H = shape[1], W = shape[2];
  const int32_t* idx = indices.data_ptr<int32_t>();
  std::vector<int64_t> key(n), order(n);
  bool sorted = true;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t* c = idx + 4 * i;
    TORCH_CHECK(c[0] >= 0 && c[1] >= 0 && c[1] < D && c[2] >= 0 && c[2] < H && c[3] >= 0 && c[3] < W,
                "index row ", i, " lies outside the spatial shape");
    key[i] = ((static_cast<int64_t>(c[0]) * D + c[1]) * H + c[2]) * W + c[3];
    order[i] = i;
    if (i > 0 && key[i] <= key[i - 1]) sorted = false;
  }
  if (!sorted) std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return key[a] < key[b]; });
  std::vector<int64_t> skey(n);
  for (int64_t j = 0; j < n; ++j) skey[j] = key[order[j]];
  for (int64_t j = 1; j < n; ++j) TORCH_CHECK(skey[j] != skey[j - 1], "duplicate site in indices");
  std::vector<int64_t> dz(kv), dy(kv), dx(kv), delta(kv);
  for (int64_t k = 0; k < kv; ++k) {
    dz[k] = (k / (kh * kw) - kd / 2) * dilation[0];
    dy[k] = ((k / kw) % kh - kh / 2) * dilation[1];
    dx[k] = (k % kw - kw / 2) * dilation[2];
    delta[k] = (dz[k] * H + dy[k]) * W + dx[k];
  }
  auto nbr = torch::empty({n, kv}, indices.options());
  int32_t* pn = nbr.data_ptr<int32_t>();
  at::parallel_for(0, n, 2048, [&](int64_t j0, int64_t j1) {
    std::vector<int64_t> ptr(kv);
    for (int64_t k = 0; k < kv; ++k)
      ptr[k] = std::lower_bound(skey.begin(), skey.end(), skey[j0] + delta[k]) - skey.begin();
    for (int64_t j = j0; j < j1; ++j) {
      const int64_t row = order[j];
      const int32_t* c = idx + 4 * row;
      int32_t* out = pn + row * kv;
      for (int64_t k = 0; k < kv; ++k) {
        const int64_t target = skey[j] + delta[k];
        int64_t p = ptr[k];
        while (p < n && skey[p] < target) ++p;
        ptr[k] = p;
        const int64_t z = c[1] + dz[k], y = c[2] + dy[k], x = c[3] + dx[k];
        const bool inside = z >= 0 && z < D && y >= 0 && y < H && x >= 0 && x < W;
        out[k] = (inside && p < n && skey[p] == target) ? static_cast<int32_t>(order[p]) : -1;
      }
    }
  });
  return {nbr, map_counts(nbr)};
}

// --- voxel means --------------------------------------------------------------------------------------
//
// The occupied cells of a frame's points: an open-addressing hash table finds the distinct cells in one
// pass over the points, only those are sorted (radix), and the points are renumbered: O(P + M) for P
// points in M cells, against torch's sort of all P. Single-threaded and in point order, so the result
// never depends on the thread count. (For site sets that are mostly distinct already, torch.unique's
// sort is as fast: measured, so those stay on torch.)

// Sort non-negative keys in place: least-significant-digit radix sort, 11 bits a pass, as many passes as
// the largest key needs (two for the demo's grid).
static void radix_sort_keys(std::vector<int64_t>& keys) {
  const int64_t m = static_cast<int64_t>(keys.size());
  int64_t top = 0;
  for (int64_t k : keys) top = std::max(top, k);
  constexpr int kBits = 11;
  constexpr int64_t kBuckets = int64_t{1} << kBits;
  std::vector<int64_t> tmp(m);
  std::vector<int64_t> count(kBuckets);
  for (int shift = 0; shift < 63 && (top >> shift) > 0; shift += kBits) {
    std::fill(count.begin(), count.end(), 0);
    for (int64_t k : keys) ++count[(k >> shift) & (kBuckets - 1)];
    int64_t sum = 0;
    for (int64_t& c : count) {
      const int64_t here = c;
      c = sum;
      sum += here;
    }
    for (int64_t k : keys) tmp[count[(k >> shift) & (kBuckets - 1)]++] = k;
    keys.swap(tmp);
  }
}

// slot[i] = rank of key[i] among the sorted distinct non-negative keys (-1 where key[i] < 0); the sorted
// distinct keys are returned.
static std::vector<int64_t> rank_keys(const int64_t* key, int64_t n, int64_t* slot) {
  int64_t cap = 16;
  while (cap < 2 * n) cap <<= 1;
  int shift = 64;
  for (int64_t c = cap; c > 1; c >>= 1) --shift;
  const uint64_t mask = static_cast<uint64_t>(cap - 1);
  auto home = [&](int64_t k) { return (static_cast<uint64_t>(k) * 0x9E3779B97F4A7C15ull) >> shift; };
  std::vector<int64_t> table_key(cap, -1);
  std::vector<int32_t> table_rank(cap);
  std::vector<int64_t> distinct;
  distinct.reserve(std::min<int64_t>(n, 1 << 16));
  for (int64_t i = 0; i < n; ++i) {  // slot[i] = the key's table position for now
    const int64_t k = key[i];
    if (k < 0) {
      slot[i] = -1;
      continue;
    }
    uint64_t h = home(k);
    while (table_key[h] != -1 && table_key[h] != k) h = (h + 1) & mask;
    if (table_key[h] == -1) {
      table_key[h] = k;
      distinct.push_back(k);
    }
    slot[i] = static_cast<int64_t>(h);
  }
  radix_sort_keys(distinct);
  const int64_t m = static_cast<int64_t>(distinct.size());
  for (int64_t j = 0; j < m; ++j) {
    uint64_t h = home(distinct[j]);
    while (table_key[h] != distinct[j]) h = (h + 1) & mask;
    table_rank[h] = static_cast<int32_t>(j);
  }
  for (int64_t i = 0; i < n; ++i)
    if (slot[i] >= 0) slot[i] = table_rank[slot[i]];
  return distinct;
}

// Points (P, 1 + C) float32 [b, x, y, z, ...] -> the occupied cells of a grid and the mean of each
// cell's points' C channels. A point's cell is floor((xyz - lo) / size) in float32 (as the torch path
// computes it); it is kept when the cell lies in the grid and lo <= xyz < hi (lower bounds inclusive,
// upper exclusive). Returns sites (M, 4) int32 [b, z, y, x] sorted by (b, z, y, x), means (M, C) float32
// (sums in double, in point order) and counts (M,) int64.
std::vector<torch::Tensor> voxel_means(const torch::Tensor& points, std::vector<double> lo, std::vector<double> size,
                                       std::vector<double> hi, std::vector<int64_t> grid_xyz) {
  TORCH_CHECK(points.device().is_cpu() && points.scalar_type() == torch::kFloat32 && points.is_contiguous() &&
                  points.dim() == 2 && points.size(1) >= 4,
              "points must be a contiguous (P, >= 4) float32 CPU tensor [b, x, y, z, ...]");
  TORCH_CHECK(lo.size() == 3 && size.size() == 3 && hi.size() == 3 && grid_xyz.size() == 3,
              "lo, size, hi and grid_xyz need 3 values each");
  const int64_t p = points.size(0), cols = points.size(1), c = cols - 1;
  const float* pts = points.data_ptr<float>();
  float flo[3], fsize[3], fhi[3];
  for (int d = 0; d < 3; ++d) {
    flo[d] = static_cast<float>(lo[d]);
    fsize[d] = static_cast<float>(size[d]);
    fhi[d] = static_cast<float>(hi[d]);
  }
  const int64_t nx = grid_xyz[0], ny = grid_xyz[1], nz = grid_xyz[2];
  std::vector<int64_t> key(p), slot(p);
  for (int64_t i = 0; i < p; ++i) {
    const float* row = pts + i * cols;
    const float bf = row[0];
    TORCH_CHECK(bf >= 0.0f && bf < 2147483648.0f, "voxel_means: point ", i, " has batch index ", bf);
    const int64_t b = static_cast<int64_t>(bf);
    int64_t cell[3];
    bool inside = true;
    for (int d = 0; d < 3; ++d) {
      const float v = row[1 + d];
      const float t = (v - flo[d]) / fsize[d];
      const float f = std::floor(t);
      // NaN and far-out coordinates fail these comparisons and are dropped, as the torch path drops them
      inside = inside && v >= flo[d] && v < fhi[d] && f >= 0.0f && f < static_cast<float>(grid_xyz[d]);
      cell[d] = inside ? static_cast<int64_t>(f) : 0;
    }
    key[i] = inside ? ((b * nz + cell[2]) * ny + cell[1]) * nx + cell[0] : -1;
  }
  const std::vector<int64_t> sorted = rank_keys(key.data(), p, slot.data());
  const int64_t m = static_cast<int64_t>(sorted.size());
  auto sites = torch::empty({m, 4}, points.options().dtype(torch::kInt32));
  auto counts = torch::zeros({m}, points.options().dtype(torch::kInt64));
  auto means = torch::empty({m, c}, points.options());
  int64_t* pc = counts.data_ptr<int64_t>();
  float* pm = means.data_ptr<float>();
  decode_sites(sorted, nz, ny, nx, sites.data_ptr<int32_t>());
  std::vector<double> sums(m * c, 0.0);
  for (int64_t i = 0; i < p; ++i) {
    const int64_t j = slot[i];
    if (j < 0) continue;
    ++pc[j];
    const float* row = pts + i * cols + 1;
    double* s = sums.data() + j * c;
    for (int64_t q = 0; q < c; ++q) s[q] += row[q];
  }
  for (int64_t j = 0; j < m; ++j)
    for (int64_t q = 0; q < c; ++q) pm[j * c + q] = static_cast<float>(sums[j * c + q] / static_cast<double>(pc[j]));
  return {sites, means, counts};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("neighbour_conv", &neighbour_conv, "dst[r] = sum_k src[nbr[r, k]] @ w[k] (fused gather-GEMM-scatter)");
  m.def("submanifold_rulebook", &submanifold_rulebook, "(neighbour map, counts) of a subm conv");
  m.def("strided_rulebook", &strided_rulebook, "(out indices, by_out, by_in, counts) of a strided conv");
  m.def("map_weight_grad", &map_weight_grad, "dW[k] = sum_r feat[nbr[r, k]]^T grad[r] (the forward's map)");
  m.def("voxel_means", &voxel_means, "(sites, means, counts) of points on a grid");
}
