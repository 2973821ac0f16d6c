/*
 * ray_gait.heatmap._kernel: compiled renderer of the Gaussian limb and joint maps (step 1).
 *
 * Same semantics as ray_gait/heatmap/render.py (and OpenGait's generator), per frame:
 *   channel 0 = max over the limbs, channel 1 = max over the joints, of
 *   value * exp(-d^2 / 2 / sigma^2) inside each item's window
 *   x in [max(trunc(lo_x - 3 sigma), 0), min(trunc(hi_x + 3 sigma) + 1, W)) (likewise y),
 *   items with value < eps skipped, a limb's value = min of its two joint values, a limb with
 *   squared length < 1 drawn as its start joint (start joint's value and window), then
 *   level = min(floor(256 * float32(max)), 255) and output = gray[level].
 * Only the pixels inside the windows are evaluated, in float32 and in the log2 domain (per item a
 * few multiply-adds and a maximum per pixel; one inlined 2^x per pixel at the quantization), in
 * loops that gcc vectorizes at -O3 on the baseline instruction set (SSE2 / NEON): no -march flags.
 *
 * Plain C on Python.h and the buffer protocol only (no numpy headers).  The GIL is released while
 * rendering.  Inputs are checked for size here; dtypes and contiguity are the caller's job
 * (ray_gait/heatmap/fast.py).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__)
#define HOT static inline __attribute__((always_inline))
#else
#define HOT static inline
#endif

/* On x86-64 (gcc, clang) the drawing is compiled twice, for the baseline (SSE2) and for AVX2, and
 * picked at run time; both run the same IEEE float32 operations lane by lane (no FMA: the build
 * uses -ffp-contract=off), so they give identical maps. */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define KERNEL_AVX2_DISPATCH 1
#else
#define KERNEL_AVX2_DISPATCH 0
#endif

/* 2^x in float32 for x <= 0, within about 2e-7 relative (Cephes' exp2f polynomial on
 * |f| <= 1/2).  Arguments are clamped to [-126, 0]: below, the result (~1e-38) is far under one
 * gray level; above (values over 1), every level saturates at 255 anyway. */
HOT float exp2_nonpositive(float x)
{
    x = x < -126.0f ? -126.0f : x;
    x = x > 0.0f ? 0.0f : x;
    /* n = round(x) by the 1.5 * 2^23 trick (valid without -ffast-math); f = x - n is exact. */
    float n = x + 12582912.0f;
    n -= 12582912.0f;
    const float f = x - n;
    float p = 1.535336188319500e-4f;
    p = p * f + 1.339887440266574e-3f;
    p = p * f + 9.618437357674640e-3f;
    p = p * f + 5.550332471162809e-2f;
    p = p * f + 2.402264791363012e-1f;
    p = p * f + 6.931472028550421e-1f;
    p = p * f + 1.0f;
    const int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

typedef struct {
    int x0, x1, y0, y1;     /* window [x0, x1) x [y0, y1), non-empty */
    int segment;            /* 1: limb segment, 0: a point (joint or short limb) */
    double sx, sy, ex, ey;  /* start (the point) and end */
    float log_value;        /* log2(value): maps hold max of log2(value) - d^2 k, k = log2(e) / 2 sigma^2 */
} Item;

/* Window bounds of Python's max(int(lo - 3s), 0) and min(int(hi + 3s) + 1, size), without
 * converting out-of-range doubles to int. */
static int window_start(double lo, double reach, int size)
{
    double a = lo - reach;
    if (!(a < (double)size))
        return size;
    return a > 0.0 ? (int)a : 0;
}

static int window_stop(double hi, double reach, int size)
{
    double b = hi + reach;
    if (!(b < (double)size))
        return size;
    return b > -1.0 ? (int)b + 1 : 0;
}

/* Fill item with the window of [lo_x, hi_x] x [lo_y, hi_y]; returns 0 when the window is empty. */
static int set_window(Item *item, double lo_x, double hi_x, double lo_y, double hi_y, double reach,
                      int height, int width)
{
    item->x0 = window_start(lo_x, reach, width);
    item->x1 = window_stop(hi_x, reach, width);
    item->y0 = window_start(lo_y, reach, height);
    item->y1 = window_stop(hi_y, reach, height);
    return item->x1 > item->x0 && item->y1 > item->y0;
}

/* The maps are built in the log2 domain: max over items of value * exp(-d^2 / 2 sigma^2) is
 * 2^(max over items of (log2(value) - d^2 k)) with k = log2(e) / 2 sigma^2, so the loops over items
 * only add and compare, and one 2^x per pixel is left for the quantization. */

/* A point (joint, or limb shorter than one pixel): buf = max(buf, log2(value) - dy^2 k - dx^2 k). */
HOT void draw_point(float *buf, int width, const Item *it, float k, float *ax)
{
    const int n = it->x1 - it->x0;
    const float cx = (float)it->sx, cy = (float)it->sy;
    for (int i = 0; i < n; i++) {
        float dx = (float)(it->x0 + i) - cx;
        ax[i] = -(dx * dx) * k;
    }
    for (int y = it->y0; y < it->y1; y++) {
        float dy = (float)y - cy;
        float ay = it->log_value - (dy * dy) * k;
        float *row = buf + (size_t)y * width + it->x0;
        for (int i = 0; i < n; i++) {
            float a = ay + ax[i];
            row[i] = a > row[i] ? a : row[i];
        }
    }
}

/* A limb: d = distance to the segment (to the start if the projection coefficient c <= 0, to the
 * end if c >= 1, else to the line).  Branch-free: with p = (pixel - start) . (end - start) = c L^2
 * and cross = (pixel - start) x (end - start), d^2 = (cross^2 + (p - clamp(p, 0, L^2))^2) / L^2
 * (Lagrange's identity gives |pixel - start|^2 for c <= 0, and |pixel - end|^2 for c >= 1). */
HOT void draw_segment(float *buf, int width, const Item *it, float k)
{
    const int n = it->x1 - it->x0;
    const float sx = (float)it->sx, sy = (float)it->sy;
    const float abx = (float)(it->ex - it->sx), aby = (float)(it->ey - it->sy);
    const float ab2 = abx * abx + aby * aby;
    const float k_ab2 = k / ab2;
    const float log_value = it->log_value;
    for (int y = it->y0; y < it->y1; y++) {
        const float dy = (float)y - sy;
        const float py = dy * aby;
        const float crossy = dy * abx;
        float *row = buf + (size_t)y * width + it->x0;
        for (int i = 0; i < n; i++) {
            const float dx = (float)(it->x0 + i) - sx;
            const float p = dx * abx + py;
            float q = p > 0.0f ? p : 0.0f;
            q = q < ab2 ? q : ab2;
            const float along = p - q;
            const float cross = dx * aby - crossy;
            const float a = log_value - (cross * cross + along * along) * k_ab2;
            row[i] = a > row[i] ? a : row[i];   /* a NaN (overflowing coordinates) is dropped */
        }
    }
}

typedef struct {
    const double *pts;      /* (T, V, 2) */
    const double *values;   /* (T, V) */
    const int64_t *limbs;   /* (L, 2) */
    const uint8_t *gray;    /* (256,) */
    uint8_t *out;           /* (T, 2, H, W) */
    int32_t *rows;          /* (T, 2, 2) first and last row with a non-zero level, or -1 -1; may be NULL */
    Py_ssize_t n_frames, n_joints, n_limbs;
    double sigma, eps;
    int height, width;
    int force_generic;      /* 1: the baseline build of the drawing even where AVX2 is available */
} Job;

/* Levels of one channel inside the box (everything else stays 0), and the first and last row with
 * content.  Two passes per row: levels (vectorized, 2^x included), then the gray table lookup. */
HOT void quantize(const float *buf, uint8_t *out, int width, int bx0, int bx1, int by0, int by1,
                     const uint8_t *gray, uint8_t *levels, int32_t *rows)
{
    const int n = bx1 - bx0;
    int first = -1, last = -1;
    for (int y = by0; y < by1; y++) {
        const float *src = buf + (size_t)y * width + bx0;
        uint8_t *dst = out + (size_t)y * width + bx0;
        for (int i = 0; i < n; i++) {
            float level = exp2_nonpositive(src[i]) * 256.0f;   /* in [0, 256] */
            level = level < 255.0f ? level : 255.0f;
            levels[i] = (uint8_t)(int32_t)level;
        }
        unsigned any = 0;
        for (int i = 0; i < n; i++)
            any |= levels[i];
        if (!any)   /* gray[0] = 0 (checked by the caller): the row stays blank */
            continue;
        any = 0;
        for (int i = 0; i < n; i++) {
            dst[i] = gray[levels[i]];
            any |= dst[i];
        }
        if (!any)
            continue;
        if (first < 0)
            first = y;
        last = y;
    }
    if (rows) {
        rows[0] = first;
        rows[1] = last;
    }
}

/* Draw one channel's items (count >= 1) into buf in the log2 domain, then quantize into out. */
HOT void draw_channel_body(float *buf, uint8_t *out, int H, int W, const Item *items, Py_ssize_t count,
                           float k, float *ax, uint8_t *levels, const uint8_t *gray, int32_t *rows)
{
    int bx0 = W, bx1 = 0, by0 = H, by1 = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        bx0 = items[i].x0 < bx0 ? items[i].x0 : bx0;
        bx1 = items[i].x1 > bx1 ? items[i].x1 : bx1;
        by0 = items[i].y0 < by0 ? items[i].y0 : by0;
        by1 = items[i].y1 > by1 ? items[i].y1 : by1;
    }
    for (int y = by0; y < by1; y++) {
        float *row = buf + (size_t)y * W;
        for (int x = bx0; x < bx1; x++)
            row[x] = -INFINITY;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        if (items[i].segment)
            draw_segment(buf, W, &items[i], k);
        else
            draw_point(buf, W, &items[i], k, ax);
    }
    quantize(buf, out, W, bx0, bx1, by0, by1, gray, levels, rows);
}

typedef void (*DrawChannel)(float *, uint8_t *, int, int, const Item *, Py_ssize_t, float, float *, uint8_t *,
                            const uint8_t *, int32_t *);

static void draw_channel_generic(float *buf, uint8_t *out, int H, int W, const Item *items, Py_ssize_t count,
                                 float k, float *ax, uint8_t *levels, const uint8_t *gray, int32_t *rows)
{
    draw_channel_body(buf, out, H, W, items, count, k, ax, levels, gray, rows);
}

#if KERNEL_AVX2_DISPATCH
__attribute__((target("avx2")))
static void draw_channel_avx2(float *buf, uint8_t *out, int H, int W, const Item *items, Py_ssize_t count,
                              float k, float *ax, uint8_t *levels, const uint8_t *gray, int32_t *rows)
{
    draw_channel_body(buf, out, H, W, items, count, k, ax, levels, gray, rows);
}
#endif

/* The drawing routine for this CPU ("avx2" or "generic"); generic when forced. */
static DrawChannel pick_draw_channel(int force_generic, const char **name)
{
#if KERNEL_AVX2_DISPATCH
    if (!force_generic) {
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx2")) {
            *name = "avx2";
            return draw_channel_avx2;
        }
    }
#else
    (void)force_generic;
#endif
    *name = "generic";
    return draw_channel_generic;
}

static int render(const Job *job)
{
    const int H = job->height, W = job->width;
    const Py_ssize_t V = job->n_joints, L = job->n_limbs;
    const double reach = 3.0 * job->sigma;
    const float k = (float)(1.4426950408889634 / (2.0 * job->sigma * job->sigma));   /* log2(e) / 2 sigma^2 */
    const size_t plane = (size_t)H * W;
    float *limb_buf = (float *)malloc(2 * plane * sizeof(float));
    float *ax = (float *)malloc(((size_t)W + 1) * sizeof(float));
    uint8_t *levels = (uint8_t *)malloc((size_t)W + 1);
    Item *items = (Item *)malloc((size_t)(L + V + 1) * sizeof(Item));
    if (!limb_buf || !ax || !levels || !items) {
        free(limb_buf);
        free(ax);
        free(levels);
        free(items);
        return -1;
    }
    float *joint_buf = limb_buf + plane;
    const char *isa_name;
    const DrawChannel draw_channel = pick_draw_channel(job->force_generic, &isa_name);

    for (Py_ssize_t t = 0; t < job->n_frames; t++) {
        const double *p = job->pts + (size_t)t * V * 2;
        const double *v = job->values + (size_t)t * V;
        uint8_t *out = job->out + (size_t)t * 2 * plane;
        int32_t *rows = job->rows ? job->rows + t * 4 : NULL;
        memset(out, 0, 2 * plane);

        for (int channel = 0; channel < 2; channel++) {
            Py_ssize_t count = 0;
            if (channel == 0) {
                for (Py_ssize_t l = 0; l < L; l++) {
                    const int64_t a = job->limbs[2 * l], b = job->limbs[2 * l + 1];
                    const double va = v[a], vb = v[b];
                    const double value = va < vb ? va : vb;
                    if (!(value >= job->eps))
                        continue;
                    Item *it = &items[count];
                    const double ax = p[2 * a], ay = p[2 * a + 1], bx = p[2 * b], by = p[2 * b + 1];
                    if (!(isfinite(ax) && isfinite(ay) && isfinite(bx) && isfinite(by)))
                        continue;
                    it->sx = ax; it->sy = ay; it->ex = bx; it->ey = by;
                    const double d2_ab = (ax - bx) * (ax - bx) + (ay - by) * (ay - by);
                    /* A value <= 0 never rises above the blank map (possible only with eps <= 0). */
                    if (d2_ab < 1.0) {
                        if (!(va > 0.0) || !set_window(it, ax, ax, ay, ay, reach, H, W))
                            continue;
                        it->segment = 0;
                        it->log_value = (float)log2(va);
                    } else {
                        if (!(value > 0.0) || !set_window(it, ax < bx ? ax : bx, ax < bx ? bx : ax,
                                                          ay < by ? ay : by, ay < by ? by : ay, reach, H, W))
                            continue;
                        it->segment = 1;
                        it->log_value = (float)log2(value);
                    }
                    count++;
                }
            } else {
                for (Py_ssize_t j = 0; j < V; j++) {
                    if (!(v[j] >= job->eps) || !(v[j] > 0.0))
                        continue;
                    Item *it = &items[count];
                    const double x = p[2 * j], y = p[2 * j + 1];
                    if (!(isfinite(x) && isfinite(y)))
                        continue;
                    it->sx = it->ex = x;
                    it->sy = it->ey = y;
                    it->segment = 0;
                    it->log_value = (float)log2(v[j]);
                    if (!set_window(it, x, x, y, y, reach, H, W))
                        continue;
                    count++;
                }
            }
            if (count == 0) {
                if (rows) {
                    rows[2 * channel] = -1;
                    rows[2 * channel + 1] = -1;
                }
                continue;
            }
            draw_channel(channel == 0 ? limb_buf : joint_buf, out + channel * plane, H, W, items, count, k,
                         ax, levels, job->gray, rows ? rows + 2 * channel : NULL);
        }
    }
    free(limb_buf);
    free(ax);
    free(levels);
    free(items);
    return 0;
}

static int check_buffer(const Py_buffer *buf, Py_ssize_t expected, const char *name)
{
    if (buf->len != expected) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd bytes, got %zd", name, expected, buf->len);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(render_maps_doc,
"render_maps(pts, values, limbs, gray, out, rows, n_frames, n_joints, sigma, height, width, eps,\n"
"            generic=False)\n"
"\n"
"Render gray limb and joint maps into `out`.  Buffers (C-contiguous): pts float64 (T, V, 2),\n"
"values float64 (T, V), limbs int64 (L, 2), gray uint8 (256,), out writable uint8 (T, 2, H, W),\n"
"rows writable int32 (T, 2, 2) (first and last row with content per frame and channel, -1 if\n"
"none) or None.  generic: use the baseline build even where AVX2 is available (same results).\n"
"Releases the GIL.");

PyDoc_STRVAR(isa_doc,
"isa(generic=False) -> str\n"
"\n"
"The build of the drawing loops that render_maps uses on this CPU: 'avx2' or 'generic'.");

static PyObject *py_isa(PyObject *self, PyObject *args)
{
    int force_generic = 0;
    const char *name;
    (void)self;
    if (!PyArg_ParseTuple(args, "|p", &force_generic))
        return NULL;
    (void)pick_draw_channel(force_generic, &name);
    return PyUnicode_FromString(name);
}

static PyObject *py_render_maps(PyObject *self, PyObject *args)
{
    Py_buffer pts = {0}, values = {0}, limbs = {0}, gray = {0}, out = {0}, rows = {0};
    PyObject *rows_obj = NULL;
    Job job;
    Py_ssize_t n_frames, n_joints;
    double sigma, eps;
    int height, width;
    PyObject *result = NULL;
    int has_rows = 0;
    int force_generic = 0;

    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*y*y*w*Onndiid|p", &pts, &values, &limbs, &gray, &out, &rows_obj,
                          &n_frames, &n_joints, &sigma, &height, &width, &eps, &force_generic))
        return NULL;
    if (rows_obj != Py_None) {
        if (PyObject_GetBuffer(rows_obj, &rows, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
            goto done;
        has_rows = 1;
    }
    if (n_frames < 0 || n_joints < 1 || height < 1 || width < 1) {
        PyErr_SetString(PyExc_ValueError, "need n_frames >= 0, n_joints >= 1, height >= 1, width >= 1");
        goto done;
    }
    if (!(sigma > 0.0) || !isfinite(sigma)) {
        PyErr_SetString(PyExc_ValueError, "sigma must be a positive finite number");
        goto done;
    }
    if (limbs.len % (2 * (Py_ssize_t)sizeof(int64_t)) != 0) {
        PyErr_SetString(PyExc_ValueError, "limbs: expected int64 (L, 2)");
        goto done;
    }
    if (check_buffer(&pts, n_frames * n_joints * 2 * (Py_ssize_t)sizeof(double), "pts") < 0 ||
        check_buffer(&values, n_frames * n_joints * (Py_ssize_t)sizeof(double), "values") < 0 ||
        check_buffer(&gray, 256, "gray") < 0 ||
        check_buffer(&out, n_frames * 2 * (Py_ssize_t)height * width, "out") < 0 ||
        (has_rows && check_buffer(&rows, n_frames * 4 * (Py_ssize_t)sizeof(int32_t), "rows") < 0))
        goto done;
    if (((const uint8_t *)gray.buf)[0] != 0) {
        PyErr_SetString(PyExc_ValueError, "gray[0] must be 0 (pixels outside every window are 0)");
        goto done;
    }
    job.n_limbs = limbs.len / (2 * (Py_ssize_t)sizeof(int64_t));
    job.limbs = (const int64_t *)limbs.buf;
    for (Py_ssize_t i = 0; i < 2 * job.n_limbs; i++) {
        if (job.limbs[i] < 0 || job.limbs[i] >= n_joints) {
            PyErr_Format(PyExc_ValueError, "limb joint index %lld out of range for %zd joints",
                         (long long)job.limbs[i], n_joints);
            goto done;
        }
    }
    job.pts = (const double *)pts.buf;
    job.values = (const double *)values.buf;
    job.gray = (const uint8_t *)gray.buf;
    job.out = (uint8_t *)out.buf;
    job.rows = has_rows ? (int32_t *)rows.buf : NULL;
    job.n_frames = n_frames;
    job.n_joints = n_joints;
    job.sigma = sigma;
    job.eps = eps;
    job.height = height;
    job.width = width;
    job.force_generic = force_generic;
    {
        int status;
        Py_BEGIN_ALLOW_THREADS
        status = render(&job);
        Py_END_ALLOW_THREADS
        if (status < 0) {
            PyErr_NoMemory();
            goto done;
        }
    }
    Py_INCREF(Py_None);
    result = Py_None;
done:
    PyBuffer_Release(&pts);
    PyBuffer_Release(&values);
    PyBuffer_Release(&limbs);
    PyBuffer_Release(&gray);
    PyBuffer_Release(&out);
    if (has_rows)
        PyBuffer_Release(&rows);
    return result;
}

PyDoc_STRVAR(unit_crop_doc,
"unit_crop(maps, n_images, height, width, index, r0, r1, c0, c1, table, out)\n"
"\n"
"out[:(r1 - r0) * (c1 - c0)] = table[maps[index, r0:r1, c0:c1]] row by row, where maps is a\n"
"C-contiguous uint8 (n_images, height, width) buffer, table float64 (256,) and out a writable\n"
"float64 buffer.  With table = numpy.arange(256) / 255.0 this is bit for bit `crop / 255.0`.");

static PyObject *py_unit_crop(PyObject *self, PyObject *args)
{
    Py_buffer maps = {0}, table = {0}, out = {0};
    Py_ssize_t n_images, height, width, index, r0, r1, c0, c1;
    PyObject *result = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*nnnnnnnny*w*", &maps, &n_images, &height, &width, &index, &r0, &r1, &c0, &c1,
                          &table, &out))
        return NULL;
    if (n_images < 0 || height < 0 || width < 0 || index < 0 || index >= n_images ||
        r0 < 0 || r1 < r0 || r1 > height || c0 < 0 || c1 < c0 || c1 > width) {
        PyErr_SetString(PyExc_ValueError, "unit_crop: index or crop out of range");
        goto done;
    }
    if (check_buffer(&maps, n_images * height * width, "maps") < 0 ||
        check_buffer(&table, 256 * (Py_ssize_t)sizeof(double), "table") < 0)
        goto done;
    if (out.len < (r1 - r0) * (c1 - c0) * (Py_ssize_t)sizeof(double)) {
        PyErr_SetString(PyExc_ValueError, "unit_crop: out is too small");
        goto done;
    }
    {
        const uint8_t *src = (const uint8_t *)maps.buf + (size_t)index * height * width;
        const double *lut = (const double *)table.buf;
        double *dst = (double *)out.buf;
        const Py_ssize_t w = c1 - c0;
        for (Py_ssize_t y = r0; y < r1; y++) {
            const uint8_t *row = src + (size_t)y * width + c0;
            for (Py_ssize_t x = 0; x < w; x++)
                dst[x] = lut[row[x]];
            dst += w;
        }
    }
    Py_INCREF(Py_None);
    result = Py_None;
done:
    PyBuffer_Release(&maps);
    PyBuffer_Release(&table);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"render_maps", py_render_maps, METH_VARARGS, render_maps_doc},
    {"isa", py_isa, METH_VARARGS, isa_doc},
    {"unit_crop", py_unit_crop, METH_VARARGS, unit_crop_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_kernel", "Compiled Gaussian limb and joint map renderer (step 1).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__kernel(void)
{
    return PyModule_Create(&module);
}
