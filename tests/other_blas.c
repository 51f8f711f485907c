/* Another BLAS kernel, for tests/test_reproducible.py: NumPy's matrix products, computed correctly but
 * rounded differently from OpenBLAS. Preloaded (LD_PRELOAD) in front of the OpenBLAS that NumPy's
 * wheel bundles, it answers the calls NumPy makes (gemm, gemv, dot and syrk, in float64 and float32),
 * summing every dot product from the last term to the first (OpenBLAS's kernels start with the
 * first), with a separate multiply and add (OTHER_BLAS=reverse) or fused multiply-adds
 * (OTHER_BLAS=reverse-fma): what another BLAS kernel (another summation order, FMA or not) does to
 * the last bits.
 * Every call is counted in the file named by OTHER_BLAS_LOG, so a test can check it was used.
 * Symbols are those of NumPy 2.x's scipy-openblas wheels (64-bit integers, suffix 64_).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int64_t blasint;
enum { RowMajor = 101, ColMajor = 102, NoTrans = 111, Upper = 121 };

static void note(const char *name) {
    const char *path = getenv("OTHER_BLAS_LOG");
    if (path) {
        FILE *f = fopen(path, "a");
        if (f) { fprintf(f, "%s\n", name); fclose(f); }
    }
}

static int use_fma(void) {
    const char *mode = getenv("OTHER_BLAS");
    return mode && strcmp(mode, "reverse-fma") == 0;
}

/* a[i] * b[i] summed over i < n, element i at a + i * sa and b + i * sb */
#define DOT_IMPL(T, NAME, FMA)                                                              \
static T NAME(const T *a, blasint sa, const T *b, blasint sb, blasint n) {                 \
    T sum = 0;                                                                              \
    if (use_fma()) {                                                                        \
        for (blasint i = n - 1; i >= 0; i--) sum = FMA(a[i * sa], b[i * sb], sum);          \
    } else {                                                                                \
        for (blasint i = n - 1; i >= 0; i--) {                                              \
            volatile T product = a[i * sa] * b[i * sb]; /* volatile: no contraction to FMA */ \
            sum += product;                                                                 \
        }                                                                                   \
    }                                                                                       \
    return sum;                                                                             \
}
DOT_IMPL(double, dsum, fma)
DOT_IMPL(float, ssum, fmaf)

/* Element (i, j) of op(M) for a matrix stored with leading dimension ld, and the strides that walk
 * a row of op(M) (along j) in memory. */
#define LAYOUT(order, trans, ld, row_step, col_step)                                        \
    blasint row_step, col_step;                                                             \
    if ((order == RowMajor) == (trans == NoTrans)) { row_step = ld; col_step = 1; }         \
    else { row_step = 1; col_step = ld; }

#define GEMM_IMPL(T, NAME, SUM)                                                             \
void NAME(int order, int ta, int tb, blasint m, blasint n, blasint k, T alpha,             \
          const T *a, blasint lda, const T *b, blasint ldb, T beta, T *c, blasint ldc) {   \
    note(#NAME);                                                                            \
    LAYOUT(order, ta, lda, a_row, a_col)                                                    \
    LAYOUT(order, tb, ldb, b_row, b_col)                                                    \
    LAYOUT(order, NoTrans, ldc, c_row, c_col)                                               \
    for (blasint i = 0; i < m; i++)                                                         \
        for (blasint j = 0; j < n; j++) {                                                   \
            T s = alpha * SUM(a + i * a_row, a_col, b + j * b_col, b_row, k);               \
            T *out = c + i * c_row + j * c_col;                                             \
            *out = beta == 0 ? s : s + beta * *out;                                         \
        }                                                                                   \
}
GEMM_IMPL(double, scipy_cblas_dgemm64_, dsum)
GEMM_IMPL(float, scipy_cblas_sgemm64_, ssum)

#define GEMV_IMPL(T, NAME, SUM)                                                             \
void NAME(int order, int trans, blasint m, blasint n, T alpha, const T *a, blasint lda,    \
          const T *x, blasint incx, T beta, T *y, blasint incy) {                          \
    note(#NAME);                                                                            \
    if (incx < 0 || incy < 0) abort();                                                      \
    LAYOUT(order, trans, lda, a_row, a_col)                                                 \
    blasint rows = trans == NoTrans ? m : n, cols = trans == NoTrans ? n : m;               \
    for (blasint i = 0; i < rows; i++) {                                                    \
        T s = alpha * SUM(a + i * a_row, a_col, x, incx, cols);                             \
        y[i * incy] = beta == 0 ? s : s + beta * y[i * incy];                               \
    }                                                                                       \
}
GEMV_IMPL(double, scipy_cblas_dgemv64_, dsum)
GEMV_IMPL(float, scipy_cblas_sgemv64_, ssum)

double scipy_cblas_ddot64_(blasint n, const double *x, blasint incx, const double *y, blasint incy) {
    note("scipy_cblas_ddot64_");
    if (incx < 0 || incy < 0) abort();
    return dsum(x, incx, y, incy, n);
}

float scipy_cblas_sdot64_(blasint n, const float *x, blasint incx, const float *y, blasint incy) {
    note("scipy_cblas_sdot64_");
    if (incx < 0 || incy < 0) abort();
    return ssum(x, incx, y, incy, n);
}

/* C = alpha op(A) op(A)^T + beta C on one triangle, as NumPy asks for A @ A.T. */
#define SYRK_IMPL(T, NAME, SUM)                                                             \
void NAME(int order, int uplo, int trans, blasint n, blasint k, T alpha, const T *a,       \
          blasint lda, T beta, T *c, blasint ldc) {                                        \
    note(#NAME);                                                                            \
    LAYOUT(order, trans, lda, a_row, a_col)                                                 \
    LAYOUT(order, NoTrans, ldc, c_row, c_col)                                               \
    for (blasint i = 0; i < n; i++)                                                         \
        for (blasint j = 0; j < n; j++) {                                                   \
            if (uplo == Upper ? j < i : j > i) continue;                                    \
            T s = alpha * SUM(a + i * a_row, a_col, a + j * a_row, a_col, k);               \
            T *out = c + i * c_row + j * c_col;                                             \
            *out = beta == 0 ? s : s + beta * *out;                                         \
        }                                                                                   \
}
SYRK_IMPL(double, scipy_cblas_dsyrk64_, dsum)
SYRK_IMPL(float, scipy_cblas_ssyrk64_, ssum)
