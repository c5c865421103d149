// The cuBLAS entry points kiln calls, emulated on the host: handles bound to emulated streams and
// a naive column-major GEMM accumulated in double for cublasGemmEx / cublasSgemm, with every
// operand checked to lie inside one live device allocation.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <set>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "tools/cuda_emu/emu_internal.h"

using namespace kiln_emu;

namespace {

std::mutex g_blas_mu;

struct BlasHandle {
  cudaStream_t stream = nullptr;
  cublasMath_t math = CUBLAS_DEFAULT_MATH;
};
std::set<BlasHandle*> g_handles;

BlasHandle* find_handle(cublasHandle_t h) {
  std::lock_guard<std::mutex> l(g_blas_mu);
  auto* b = reinterpret_cast<BlasHandle*>(h);
  return g_handles.count(b) ? b : nullptr;
}

bool element_bytes(cudaDataType t, size_t* bytes) {
  switch (t) {
    case CUDA_R_32F: *bytes = 4; return true;
    case CUDA_R_16F:
    case CUDA_R_16BF: *bytes = 2; return true;
    default: return false;
  }
}

double load(const void* p, cudaDataType t, size_t i) {
  switch (t) {
    case CUDA_R_32F: return static_cast<const float*>(p)[i];
    case CUDA_R_16F: return __half2float(static_cast<const __half*>(p)[i]);
    case CUDA_R_16BF: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    default: return 0.0;
  }
}

// A column-major operand of `rows` × `cols` with leading dimension ld must lie in one live
// device allocation.
bool operand_ok(const void* p, cudaDataType t, int64_t rows, int64_t cols, int64_t ld,
                const char* name) {
  if (rows == 0 || cols == 0) return true;
  size_t eb = 0;
  element_bytes(t, &eb);
  const size_t bytes = (static_cast<size_t>(cols - 1) * static_cast<size_t>(ld) +
                        static_cast<size_t>(rows)) * eb;
  return classify(p, bytes, "cublasGemmEx", name) == Side::kDevice;
}

// C = alpha·op(A)·op(B) + beta·C, column-major, accumulated in double; C is not read when
// beta = 0 (as cuBLAS).
cublasStatus_t gemm(cublasHandle_t handle, cublasOperation_t ta, cublasOperation_t tb, int m,
                    int n, int k, float alpha, const void* A, cudaDataType at, int lda,
                    const void* B, cudaDataType bt, int ldb, float beta, void* C, cudaDataType ct,
                    int ldc, const char* op) {
  if (find_handle(handle) == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  size_t eb = 0;
  if (!element_bytes(at, &eb) || !element_bytes(bt, &eb) || !element_bytes(ct, &eb)) {
    return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  const bool a_t = ta != CUBLAS_OP_N, b_t = tb != CUBLAS_OP_N;
  const int a_rows = a_t ? k : m, b_rows = b_t ? n : k;
  if (m < 0 || n < 0 || k < 0 || lda < std::max(1, a_rows) || ldb < std::max(1, b_rows) ||
      ldc < std::max(1, m)) {
    std::fprintf(stderr, "[cuda-emu] %s: invalid shape m=%d n=%d k=%d lda=%d ldb=%d ldc=%d\n", op,
                 m, n, k, lda, ldb, ldc);
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  if (!operand_ok(A, at, a_rows, a_t ? m : k, lda, "A") ||
      !operand_ok(B, bt, b_rows, b_t ? k : n, ldb, "B") || !operand_ok(C, ct, m, n, ldc, "C")) {
    return CUBLAS_STATUS_EXECUTION_FAILED;
  }
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  device_access_begin();
  std::vector<double> a(static_cast<size_t>(m) * k), b(static_cast<size_t>(k) * n);
  for (int i = 0; i < m; ++i) {
    for (int l = 0; l < k; ++l) {
      a[static_cast<size_t>(i) * k + l] =
          load(A, at, a_t ? static_cast<size_t>(l) + static_cast<size_t>(i) * lda
                          : static_cast<size_t>(i) + static_cast<size_t>(l) * lda);
    }
  }
  for (int j = 0; j < n; ++j) {
    for (int l = 0; l < k; ++l) {
      b[static_cast<size_t>(j) * k + l] =
          load(B, bt, b_t ? static_cast<size_t>(j) + static_cast<size_t>(l) * ldb
                          : static_cast<size_t>(l) + static_cast<size_t>(j) * ldb);
    }
  }
  for (int j = 0; j < n; ++j) {
    for (int i = 0; i < m; ++i) {
      double s = 0.0;
      const double* ar = a.data() + static_cast<size_t>(i) * k;
      const double* bc = b.data() + static_cast<size_t>(j) * k;
      for (int l = 0; l < k; ++l) s += ar[l] * bc[l];
      const size_t ci = static_cast<size_t>(i) + static_cast<size_t>(j) * ldc;
      double v = alpha * s;
      if (beta != 0.0f) v += beta * load(C, ct, ci);
      switch (ct) {
        case CUDA_R_32F: static_cast<float*>(C)[ci] = static_cast<float>(v); break;
        case CUDA_R_16F: static_cast<__half*>(C)[ci] = __float2half_rn(static_cast<float>(v)); break;
        case CUDA_R_16BF:
          static_cast<__nv_bfloat16*>(C)[ci] = __float2bfloat16_rn(static_cast<float>(v));
          break;
        default: break;
      }
    }
  }
  device_access_end(op);
  return CUBLAS_STATUS_SUCCESS;
}

}  // namespace

cublasStatus_t cublasCreate(cublasHandle_t* h) {
  if (device_count() == 0 || injected_failure("cublas")) return CUBLAS_STATUS_NOT_INITIALIZED;
  auto* b = new BlasHandle();
  std::lock_guard<std::mutex> l(g_blas_mu);
  g_handles.insert(b);
  *h = reinterpret_cast<cublasHandle_t>(b);
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t h) {
  std::lock_guard<std::mutex> l(g_blas_mu);
  auto* b = reinterpret_cast<BlasHandle*>(h);
  if (g_handles.erase(b) == 0) return CUBLAS_STATUS_NOT_INITIALIZED;
  delete b;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s) {
  BlasHandle* b = find_handle(h);
  if (b == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!valid_stream(s)) return CUBLAS_STATUS_INVALID_VALUE;
  b->stream = s;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t mode) {
  BlasHandle* b = find_handle(h);
  if (b == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  b->math = mode;
  return CUBLAS_STATUS_SUCCESS;
}

const char* cublasGetStatusString(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    default: return "CUBLAS_STATUS_UNKNOWN";
  }
}

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t ta, cublasOperation_t tb,
                            int m, int n, int k, const void* alpha, const void* A,
                            cudaDataType at, int lda, const void* B, cudaDataType bt, int ldb,
                            const void* beta, void* C, cudaDataType ct, int ldc,
                            cublasComputeType_t compute, cublasGemmAlgo_t) {
  if (compute != CUBLAS_COMPUTE_32F && compute != CUBLAS_COMPUTE_32F_PEDANTIC) {
    std::fprintf(stderr, "[cuda-emu] cublasGemmEx: compute type %d is not emulated\n",
                 static_cast<int>(compute));
    return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  return gemm(handle, ta, tb, m, n, k, *static_cast<const float*>(alpha), A, at, lda, B, bt, ldb,
              *static_cast<const float*>(beta), C, ct, ldc, "cublasGemmEx");
}

cublasStatus_t cublasSgemm(cublasHandle_t handle, cublasOperation_t ta, cublasOperation_t tb,
                           int m, int n, int k, const float* alpha, const float* A, int lda,
                           const float* B, int ldb, const float* beta, float* C, int ldc) {
  return gemm(handle, ta, tb, m, n, k, *alpha, A, CUDA_R_32F, lda, B, CUDA_R_32F, ldb, *beta, C,
              CUDA_R_32F, ldc, "cublasSgemm");
}
