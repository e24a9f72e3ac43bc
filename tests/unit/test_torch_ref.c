/* test_torch_ref.c: ResNet8 against PyTorch 1.13 (fixture from scripts/torch_fixture.py).
 *
 * Both sides set weights and inputs by the same formula, then compare: training-mode logits and
 * loss, every parameter gradient, BN running statistics after the step (PyTorch keeps the unbiased
 * variance), eval-mode logits, and parameters after two SGD steps (momentum 0.9, weight decay
 * 5e-4, Nesterov, lr 0.1). Bounds: loss 1e-5 absolute; logits 1e-4 absolute; each gradient tensor
 * 1e-3 relative L2 error; running stats 1e-5 absolute; parameters after SGD 1e-5 absolute. */
#include <string.h>

#include "bf_models.h"
#include "bf_mp.h"
#include "test.h"

static double formula(const char *name, int index, size_t i) {
    double v = sin(0.1 * (double)i + index);
    size_t n = strlen(name);
#define ENDS(s) (n >= strlen(s) && !strcmp(name + n - strlen(s), s))
    if (ENDS("running_var")) return 1.0 + 0.5 * fabs(v);
    if (ENDS("running_mean") || ENDS("bias")) return 0.1 * v;
    if (strstr(name, ".bn") || !strncmp(name, "bn", 2) || strstr(name, "downsample.1")) return 1.0 + 0.2 * v;
    return 0.2 * v;
#undef ENDS
}

static void set_formula(bf_net_t *net) {
    for (int t = 0; t < bf_net_num_tensors(net); t++) {
        const bf_tensor_view_t *v = bf_net_tensor(net, t);
        float *p = (v->is_buffer ? bf_net_buffers(net) : bf_net_params(net)) + v->offset;
        for (size_t i = 0; i < v->count; i++) p[i] = (float)formula(v->name, t, i);
    }
}

/* msgpack bin payloads are not float-aligned: copy into a ring of aligned buffers. */
static const float *bin(const msgpack_object *o, size_t count, const char *what) {
    static float *ring[4];
    static int next;
    if (!o || o->type != MSGPACK_OBJECT_BIN || o->via.bin.size != count * sizeof(float)) {
        fprintf(stderr, "fixture: %s missing or of the wrong size\n", what);
        bf_test_failures++;
        return NULL;
    }
    float **slot = &ring[next++ % 4];
    free(*slot);
    *slot = malloc(o->via.bin.size);
    memcpy(*slot, o->via.bin.ptr, o->via.bin.size);
    return *slot;
}

static double max_abs_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

static double rel_l2(const float *a, const float *ref, size_t n) {
    double d = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        d += ((double)a[i] - ref[i]) * ((double)a[i] - ref[i]);
        r += (double)ref[i] * ref[i];
    }
    return sqrt(d / (r > 0 ? r : 1e-30));
}

/* Learning-rate (and one-cycle momentum) schedules against torch.optim.lr_scheduler over 50 steps. */
static void check_schedule(const msgpack_object *sched, const char *key, const char *spec, int momentum) {
    const msgpack_object *ref = bf_mp_get(sched, key);
    CHECK_MSG(ref && ref->type == MSGPACK_OBJECT_ARRAY && ref->via.array.size == 50, "fixture: %s", key);
    if (!ref || ref->type != MSGPACK_OBJECT_ARRAY || ref->via.array.size != 50) return;
    bf_schedule_t s;
    bf_err_t err;
    CHECK_MSG(bf_schedule_parse(spec, 0.1, 50, &s, &err) == 0, "%s", err.msg);
    double worst = 0;
    for (int k = 0; k < 50; k++) {
        double lr = 0, m = 0.9, want = 0;
        bf_schedule_at(&s, k, &lr, &m);
        bf_mp_as_double(&ref->via.array.ptr[k], &want);
        double got = momentum ? m : lr;
        worst = fmax(worst, fabs(got - want));
        CHECK_MSG(fabs(got - want) <= 1e-9 + 1e-9 * fabs(want), "%s step %d: %.12g vs PyTorch %.12g", key, k, got, want);
    }
    printf("schedule %-18s max diff vs PyTorch %.2e\n", key, worst);
}

int main(int argc, char **argv) {
    bf_blas_init(argc, argv);
    if (argc < 2) return fprintf(stderr, "usage: test_torch_ref FIXTURE\n"), 2;
    printf("engine path %s\n", bf_engine_isa_name());
    FILE *f = fopen(argv[1], "rb");
    CHECK_MSG(f != NULL, "cannot open %s", argv[1]);
    if (!f) return bf_test_done("test_torch_ref");
    static uint8_t buf[4 << 20];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    msgpack_unpacked u;
    bf_err_t err;
    CHECK_MSG(bf_mp_parse(buf, len, 8, 100000, &u, &err) == 0, "%s", err.msg);
    const msgpack_object *root = &u.data;
    const msgpack_object *sched = bf_mp_get(root, "schedules");
    check_schedule(sched, "onecycle_lr", "onecycle", 0);
    check_schedule(sched, "onecycle_momentum", "onecycle", 1);
    check_schedule(sched, "cosine_lr", "cosine", 0);
    check_schedule(sched, "step_lr", "step:10:0.5", 0);

    const int B = 8, K = 10, C = 1, H = 16, W = 16;
    float x[8 * 16 * 16];
    int32_t y[8];
    for (int j = 0; j < B * C * H * W; j++) x[j] = (float)sin(0.37 * j);
    for (int i = 0; i < B; i++) y[i] = (3 * i) % K;

    bf_net_t *net = bf_net_new("resnet8", C, H, W, K, B, 2, &err);
    set_formula(net);
    double loss = bf_net_train_step(net, x, y, B, NULL);
    double ref_loss = 0;
    bf_mp_as_double(bf_mp_get(root, "loss"), &ref_loss);
    printf("loss: ours %.7f, PyTorch %.7f\n", loss, ref_loss);
    CHECK_NEAR(loss, ref_loss, 1e-5);

    const msgpack_object *grads = bf_mp_get(root, "grads"), *running = bf_mp_get(root, "running");
    double worst = 0;
    const char *worst_name = "";
    for (int t = 0; t < bf_net_num_tensors(net); t++) {
        const bf_tensor_view_t *v = bf_net_tensor(net, t);
        if (v->is_buffer) {
            const float *ref = bin(bf_mp_get(running, v->name), v->count, v->name);
            if (ref) {
                double d = max_abs_diff(bf_net_buffers(net) + v->offset, ref, v->count);
                CHECK_MSG(d <= 1e-5, "%s: max diff %.3g", v->name, d);
            }
            continue;
        }
        const float *ref = bin(bf_mp_get(grads, v->name), v->count, v->name);
        if (!ref) continue;
        double e = rel_l2(bf_net_grads(net) + v->offset, ref, v->count);
        CHECK_MSG(e <= 1e-3, "gradient %s: relative L2 error %.3g", v->name, e);
        if (e > worst) worst = e, worst_name = v->name;
    }
    printf("gradients: worst relative L2 error %.2e (%s)\n", worst, worst_name);

    float logits[80];
    bf_net_predict(net, x, B, logits);
    const float *ref_eval = bin(bf_mp_get(root, "eval_logits"), 80, "eval_logits");
    if (ref_eval) {
        double d = max_abs_diff(logits, ref_eval, 80);
        printf("eval-mode logits after the step: max diff %.2e\n", d);
        CHECK(d <= 1e-4);
    }
    /* two SGD steps */
    bf_net_t *s = bf_net_new("resnet8", C, H, W, K, B, 2, &err);
    set_formula(s);
    bf_sgd_t *opt = bf_sgd_new(bf_net_num_params(s), 0.9, 5e-4, 1);
    for (int k = 0; k < 2; k++) {
        bf_net_train_step(s, x, y, B, NULL);
        bf_sgd_step(opt, bf_net_params(s), bf_net_grads(s), 0.1);
    }
    const msgpack_object *after = bf_mp_get(root, "after_sgd2");
    double worst_p = 0;
    for (int t = 0; t < bf_net_num_tensors(s); t++) {
        const bf_tensor_view_t *v = bf_net_tensor(s, t);
        if (v->is_buffer) continue;
        const float *ref = bin(bf_mp_get(after, v->name), v->count, v->name);
        if (!ref) continue;
        double d = max_abs_diff(bf_net_params(s) + v->offset, ref, v->count);
        CHECK_MSG(d <= 1e-5, "after 2 SGD steps, %s: max diff %.3g", v->name, d);
        worst_p = fmax(worst_p, d);
    }
    printf("parameters after 2 SGD steps: max diff %.2e\n", worst_p);
    bf_sgd_destroy(&opt);
    bf_net_destroy(&s);
    bf_net_destroy(&net);
    msgpack_unpacked_destroy(&u);
    return bf_test_done("test_torch_ref");
}
