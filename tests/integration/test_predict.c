/* test_predict.c: paid predictions end to end. A real coordinator (CURVE on loopback)
 * trains a small shareholding task with three in-process participants; then users pay for
 * predictions through blockfed-predict and through the protocol directly:
 *   - --model FILE and --task ID give identical results for the same model and images;
 *   - the fee is ceil((base + fee*classified) * rate) exactly, and only classified images count;
 *   - truncated, zero-byte, absurd-header and non-image inputs get clear errors and cost nothing;
 *   - insufficient balance is refused with nothing held; reward-mode and unfinished tasks refuse;
 *   - a retried request (same request id) is answered again and charged once;
 *   - concurrent payers keep every balance exact; payers' debits equal shareholders' credits;
 *     `blockfed-coordinator ledger verify` passes afterwards.
 * Usage: test_predict COORDINATOR CLIENT PREDICT */
#include <pthread.h>

#include "bf_ledger.h"
#include "fed_participant.h"
#include "test_images.h"

/* BF_TEST_ENDPOINT: another port, for the run on PostgreSQL (tests/CMakeLists.txt) */
#define ENDPOINT (getenv("BF_TEST_ENDPOINT") ? getenv("BF_TEST_ENDPOINT") : "tcp://127.0.0.1:27717")
#define N_THREADS 4
#define PER_THREAD 40

static const char *server_key_g;

/* Price of the shareholding task below: base 0.05, 0.07 per image, rate 3/2. */
static int64_t price(int64_t images) {
    int64_t p;
    bf_money_price(5, 7, images, 3, 2, &p, NULL);
    return p;
}

static bf_msg_t *create_task(fed_client_t *c, const char *id, const char *mode) {
    bf_msg_t *r = fed_req(c, "TASK_CREATE");
    bf_msg_set_str(r, "task", id), bf_msg_set_str(r, "name", "quadrants"), bf_msg_set_str(r, "model", "cnn");
    bf_msg_set_str(r, "dataset", "tiny"), bf_msg_set_uint(r, "rounds", 1), bf_msg_set_str(r, "mode", mode);
    if (!strcmp(mode, "reward")) bf_msg_set_str(r, "pool", "1.00");
    else bf_msg_set_str(r, "fee", "0.07"), bf_msg_set_str(r, "base_fee", "0.05"), bf_msg_set_str(r, "rate", "3/2");
    bf_msg_set_uint(r, "min_clients", 3), bf_msg_set_uint(r, "local_epochs", 1);
    bf_msg_set_uint(r, "batch", 32), bf_msg_set_double(r, "lr", 0.05), bf_msg_set_uint(r, "round_timeout", 120);
    bf_msg_set_str(r, "partition", "iid"), bf_msg_set_str(r, "strategy", "fedavg");
    return call(c, r);
}

static bf_msg_t *predict(fed_client_t *c, const char *task, const char *request, uint8_t **imgs, const size_t *lens,
                         int n) {
    bf_msg_t *r = fed_req(c, "PREDICT");
    bf_msg_set_str(r, "task", task);
    bf_msg_set_uint(r, "top", 2);
    if (request) bf_msg_set_str(r, "request", request);
    for (int i = 0; i < n; i++) bf_msg_add_frame(r, imgs[i], lens[i]);
    return call(c, r);
}

static int64_t cents(const char *s) {
    int64_t v = -1;
    if (s) bf_money_parse_amount(s, 2, &v, NULL);
    return v;
}

static void recharge(fed_client_t *c, const char *amount) {
    bf_msg_t *r = fed_req(c, "RECHARGE");
    bf_msg_set_str(r, "amount", amount);
    bf_msg_t *rep = call(c, r);
    expect_ok(rep, "recharge");
    bf_msg_destroy(&rep);
}

static int64_t user_id(bf_ledger_t *L, const char *name) {
    int64_t id = 0;
    bf_ledger_user_find(L, name, &id, NULL);
    return id;
}

static bf_ledger_balance_t cash(bf_ledger_t *L, const char *name) {
    bf_ledger_balance_t b = {0};
    bf_ledger_balance(L, user_id(L, name), BF_LEDGER_CNY, &b, NULL);
    return b;
}

/* Number of result entries with a "top" list, and whether error texts contain the needles. */
static int classified_in(const bf_msg_t *rep, int n, const char *const *needles) {
    const msgpack_object *r = bf_msg_any(rep, "results");
    if (!r || r->type != MSGPACK_OBJECT_ARRAY || (int)r->via.array.size != n) return -1;
    int ok = 0;
    for (int i = 0; i < n; i++) {
        const msgpack_object *e = &r->via.array.ptr[i], *t = bf_mp_get(e, "top"), *er = bf_mp_get(e, "error");
        if (t) ok++;
        if (needles && needles[i]) {
            char msg[600] = "";
            if (er && er->type == MSGPACK_OBJECT_STR)
                snprintf(msg, sizeof msg, "%.*s", (int)er->via.str.size, er->via.str.ptr);
            CHECK_MSG(er && strstr(msg, needles[i]), "image %d: error '%s', expected '%s'", i, msg, needles[i]);
        }
    }
    return ok;
}

/* ---- concurrent payers -------------------------------------------------------------------- */

typedef struct {
    int k;
    int64_t paid; /* sum of the fees the coordinator reported */
    int failures;
    uint8_t **imgs;
    size_t *lens;
} payer_t;

static void *payer_main(void *arg) {
    payer_t *p = arg;
    fed_client_t c;
    char name[16];
    fed_client_open(&c, ENDPOINT, server_key_g);
    snprintf(name, sizeof name, "buyer%d", p->k);
    reg(&c, name);
    recharge(&c, "20.00");
    for (int i = 0; i < PER_THREAD; i++) {
        int n = 1 + (i + p->k) % 3;
        bf_msg_t *rep = predict(&c, "m1", NULL, p->imgs, p->lens, n);
        if (!fed_is(rep, "PREDICTION") || classified_in(rep, n, NULL) != n) p->failures++;
        else p->paid += cents(bf_msg_str(rep, "fee"));
        bf_msg_destroy(&rep);
    }
    fed_client_close(&c);
    return NULL;
}

/* The results array of a blockfed-predict --json output (everything between "results": and the
 * closing bracket of that array), for comparing a local and a remote run. */
static const char *results_of(const char *json, char *out, size_t cap) {
    const char *a = strstr(json, "\"model\":");
    const char *b = a ? strstr(a, "]}") : NULL;
    if (!a || !b) return "";
    snprintf(out, cap, "%.*s", (int)(b - a + 1), a);
    return out;
}

static void write_file(const char *path, const uint8_t *b, size_t n) {
    FILE *f = fopen(path, "wb");
    if (n) fwrite(b, 1, n, f);
    fclose(f);
}

int main(int argc, char **argv) {
    if (argc < 4) return fprintf(stderr, "usage: test_predict COORDINATOR CLIENT PREDICT\n"), 2;
    const char *coord = argv[1], *client = argv[2], *predictor = argv[3];
    zsys_init();
    zsys_set_logstream(NULL);
    char home[600], spec[700], key[41];
    CHECK(fed_prepare(coord, "predict", 1100, 200, 3, home, sizeof home, spec, sizeof spec, key) == 0);
    server_key_g = key;
    const char *extra[] = {"--block-size", "100", "--blocks-per-join", "3", "--liveness", "30", NULL};
    pid_t pid = fed_start(coord, home, ENDPOINT, spec, extra);

    /* Three participants train the shareholding task m1 for one round; r1 is a reward task. */
    part_t p[3];
    const char *names[3] = {"alice", "bob", "carol"};
    for (int i = 0; i < 3; i++) {
        memset(&p[i], 0, sizeof p[i]);
        fed_client_open(&p[i].c, ENDPOINT, key);
        reg(&p[i].c, names[i]);
    }
    recharge(&p[0].c, "5.00");
    bf_msg_t *rep = create_task(&p[0].c, "m1", "shareholding");
    expect_ok(rep, "create m1");
    bf_msg_destroy(&rep);
    rep = create_task(&p[0].c, "r1", "reward");
    expect_ok(rep, "create r1");
    bf_msg_destroy(&rep);

    /* Before the model exists: refused. */
    uint8_t *good[3];
    size_t glen[3];
    good[0] = ti_encode('p', 0, 16, 16, 1, 1, &glen[0]);
    good[1] = ti_encode('g', 3, 16, 16, 1, 2, &glen[1]);
    good[2] = ti_encode('b', 1, 28, 28, 3, 3, &glen[2]); /* RGB, resized */
    rep = predict(&p[1].c, "m1", NULL, good, glen, 1);
    CHECK_MSG(!strcmp(fed_code(rep), "BAD_STATE"), "prediction before training: %s", rep ? bf_msg_type(rep) : "timeout");
    bf_msg_destroy(&rep);

    for (int i = 0; i < 3; i++) join_and_fetch(&p[i], "m1");
    for (int i = 0; i < 3; i++) train_round(&p[i], "m1", 0);
    int done = 0;
    for (int tries = 0; tries < 600 && !done; tries++) {
        bf_msg_t *r = fed_req(&p[0].c, "TASK_STATUS");
        bf_msg_set_str(r, "task", "m1");
        rep = call(&p[0].c, r);
        const msgpack_object *st = rep ? bf_msg_any(rep, "status") : NULL, *s = st ? bf_mp_get(st, "state") : NULL;
        done = s && s->type == MSGPACK_OBJECT_STR && !strncmp(s->via.str.ptr, "completed", 9);
        bf_msg_destroy(&rep);
        if (!done) zclock_sleep(100);
    }
    CHECK_MSG(done, "task m1 did not complete");

    char path[900], ledger_path[700];
    snprintf(ledger_path, sizeof ledger_path, "%s/ledger.db", home);
    bf_err_t err;
    bf_ledger_t *L = bf_ledger_open(ledger_path, &err);
    CHECK_MSG(L != NULL, "%s", err.msg);

    /* dave uses the program, with its own profile. */
    char dave[700], out[900];
    snprintf(dave, sizeof dave, "%s/predict-dave", bf_test_tmpdir());
    snprintf(out, sizeof out, "%s.out", dave);
    snprintf(path, sizeof path, "rm -rf '%s'", dave);
    CHECK(system(path) == 0);
    const char *regargs[] = {"--home", dave, "register", "dave", "--coordinator", ENDPOINT, "--server-key", key, NULL};
    CHECK(bf_spawn(client, regargs, out, 1) == 0);
    const char *rchargs[] = {"--home", dave, "recharge", "2.00", NULL};
    CHECK(bf_spawn(client, rchargs, out, 1) == 0);

    char files[6][800];
    const char *fnames[6] = {"good0.png", "good1.pgm", "good2.bmp", "trunc.png", "empty.png", "bomb.png"};
    for (int i = 0; i < 6; i++) snprintf(files[i], sizeof files[i], "%s/predict-%s", bf_test_tmpdir(), fnames[i]);
    for (int i = 0; i < 3; i++) write_file(files[i], good[i], glen[i]);
    write_file(files[3], good[0], glen[0] / 2);
    write_file(files[4], good[0], 0);
    size_t bomb_len;
    uint8_t *bomb = ti_png_header(100000, 100000, &bomb_len);
    write_file(files[5], bomb, bomb_len);

    /* --model and --task: identical results for the same model and images. */
    char model[900], local[4096], remote[4096], a[4096], b[4096];
    snprintf(model, sizeof model, "%s/checkpoints/m1/round-0000.bfm", home);
    const char *largs[] = {"--model", model, "--json", "--top", "4", files[0], files[1], files[2], NULL};
    CHECK(bf_spawn(predictor, largs, out, 1) == 0);
    snprintf(local, sizeof local, "%s", bf_slurp(out));
    const char *rargs[] = {"--home", dave, "--task", "m1", "--json", "--top", "4", files[0], files[1], files[2], NULL};
    CHECK(bf_spawn(predictor, rargs, out, 1) == 0);
    snprintf(remote, sizeof remote, "%s", bf_slurp(out));
    results_of(local, a, sizeof a);
    results_of(remote, b, sizeof b);
    CHECK_MSG(a[0] && !strcmp(a, b), "--model and --task differ:\n  local  %s\n  remote %s", local, remote);
    CHECK_MSG(strstr(remote, "\"fee\":\"0.39\""), "3 images cost ceil((5 + 3*7) * 3/2) = 39 cents: %s", remote);
    bf_ledger_balance_t bd = cash(L, "dave");
    CHECK(bd.posted == 200 - 39 && bd.pending_debits == 0);

    /* Bad files among good ones: only the good ones are charged; exit status 1 names them. */
    const char *mixed[] = {"--home", dave, "--task", "m1", "--json", files[0], files[3], files[4], files[5], files[1], NULL};
    CHECK(bf_spawn(predictor, mixed, out, 1) == 1);
    const char *mo = bf_slurp(out);
    CHECK_MSG(strstr(mo, "\"fee\":\"0.29\"") && strstr(mo, "empty file") && strstr(mo, "exceeds the size limit"),
              "mixed request: %s", mo);
    CHECK(cash(L, "dave").posted == 200 - 39 - 29);

    /* The same through the protocol, with a zero-byte frame and a non-image. */
    fed_client_t eve;
    fed_client_open(&eve, ENDPOINT, key);
    reg(&eve, "eve");
    uint8_t junk[] = "plain text, not an image";
    uint8_t *frames[5] = {good[1], junk, good[0], bomb, good[0]};
    size_t flens[5] = {glen[1], sizeof junk, 0, bomb_len, glen[0] / 3};
    rep = predict(&eve, "m1", NULL, frames, flens, 5);
    CHECK_MSG(!strcmp(fed_code(rep), "INSUFFICIENT_FUNDS"), "no money: %s", rep ? bf_msg_type(rep) : "timeout");
    bf_msg_destroy(&rep);
    bf_ledger_balance_t be = cash(L, "eve");
    CHECK(be.posted == 0 && be.pending_debits == 0);
    recharge(&eve, "1.00");
    const char *needles[5] = {NULL, "cannot", "empty image data", "exceeds the size limit", ""};
    rep = predict(&eve, "m1", NULL, frames, flens, 5);
    CHECK_MSG(fed_is(rep, "PREDICTION"), "eve: %s %s", rep ? fed_code(rep) : "timeout", rep ? bf_msg_str(rep, "message") : "");
    CHECK(classified_in(rep, 5, needles) == 1);
    CHECK(rep && cents(bf_msg_str(rep, "fee")) == price(1) && cents(bf_msg_str(rep, "balance")) == 100 - price(1));
    bf_msg_destroy(&rep);
    CHECK(cash(L, "eve").posted == 100 - price(1));

    /* A retried request is answered from its record and charged once. */
    const char *rid = "5b1f0c0ffee0000000000000000000000000000000000000000000000000abcd";
    bf_msg_t *first = predict(&eve, "m1", rid, good, glen, 2), *second = predict(&eve, "m1", rid, good, glen, 2);
    CHECK(fed_is(first, "PREDICTION") && fed_is(second, "PREDICTION"));
    if (fed_is(first, "PREDICTION") && fed_is(second, "PREDICTION")) {
        CHECK(bf_msg_uint(first, "usage", 0) == bf_msg_uint(second, "usage", 1));
        CHECK(!strcmp(bf_msg_str(first, "fee"), bf_msg_str(second, "fee")));
        const msgpack_object *r1 = bf_msg_any(first, "results"), *r2 = bf_msg_any(second, "results");
        CHECK(r1 && r2 && msgpack_object_equal(*r1, *r2));
    }
    bf_msg_destroy(&first);
    bf_msg_destroy(&second);
    CHECK(cash(L, "eve").posted == 100 - price(1) - price(2));

    /* Reward-mode model, unknown task, unregistered key: refused. */
    rep = predict(&eve, "r1", NULL, good, glen, 1);
    CHECK(!strcmp(fed_code(rep), "BAD_STATE") && strstr(bf_msg_str(rep, "message"), "reward"));
    bf_msg_destroy(&rep);
    rep = predict(&eve, "nope", NULL, good, glen, 1);
    CHECK(!strcmp(fed_code(rep), "NOT_FOUND"));
    bf_msg_destroy(&rep);
    fed_client_t stranger;
    fed_client_open(&stranger, ENDPOINT, key);
    rep = predict(&stranger, "m1", NULL, good, glen, 1);
    CHECK(!strcmp(fed_code(rep), "UNAUTHORIZED"));
    bf_msg_destroy(&rep);
    fed_client_close(&stranger);

    /* Concurrent payers: balances stay exact, payers' debits are the shareholders' credits. */
    pthread_t th[N_THREADS];
    payer_t pay[N_THREADS];
    for (int k = 0; k < N_THREADS; k++) {
        pay[k] = (payer_t){.k = k, .imgs = good, .lens = glen};
        CHECK(pthread_create(&th[k], NULL, payer_main, &pay[k]) == 0);
    }
    for (int k = 0; k < N_THREADS; k++) {
        pthread_join(th[k], NULL);
        char name[16];
        snprintf(name, sizeof name, "buyer%d", pay[k].k);
        bf_ledger_balance_t bk = cash(L, name);
        CHECK_MSG(pay[k].failures == 0, "%s: %d failed predictions", name, pay[k].failures);
        CHECK_MSG(bk.posted == 2000 - pay[k].paid && bk.pending_debits == 0, "%s: balance %lld, paid %lld", name,
                  (long long)bk.posted, (long long)pay[k].paid);
    }
    int64_t debits = (39 + 29) + price(1) + price(2);
    for (int k = 0; k < N_THREADS; k++) debits += pay[k].paid;
    bf_ledger_task_t info;
    bf_ledger_share_t *sh = NULL;
    size_t nsh = 0;
    int64_t ltask = 0, credited = 0;
    bf_ledger_usage_t *usage = NULL;
    size_t nus = 0;
    /* The shareholding task is the first task alice created in the ledger. */
    for (int64_t id = 1; id < 10 && !ltask; id++)
        if (bf_ledger_task_get(L, id, &info, NULL) == 0 && info.mode == BF_LEDGER_MODE_SHAREHOLDING) ltask = id;
    CHECK(ltask > 0 && bf_ledger_task_shares(L, ltask, &sh, &nsh, &err) == 0 && nsh >= 1);
    for (size_t i = 0; i < nsh; i++) credited += sh[i].received;
    CHECK_MSG(credited == debits && info.total_revenue == debits, "payers paid %lld, shareholders got %lld (revenue %lld)",
              (long long)debits, (long long)credited, (long long)info.total_revenue);
    CHECK(bf_ledger_usage(L, ltask, &usage, &nus, &err) == 0);
    for (size_t i = 0; i < nus; i++) CHECK(usage[i].status != BF_LEDGER_HOLD_PENDING);
    free(sh);
    free(usage);

    const char *vargs[] = {"ledger", "verify", "--home", home, NULL};
    CHECK_MSG(bf_spawn(coord, vargs, out, 1) == 0, "ledger verify: %s", bf_slurp(out));
    fed_client_close(&eve);
    free(bomb);
    for (int i = 0; i < 3; i++) free(good[i]);

    bf_ledger_close(&L);
    fed_stop(pid, SIGTERM);
    for (int i = 0; i < 3; i++) {
        fed_client_close(&p[i].c);
        free(p[i].params), free(p[i].buffers), free(p[i].global), free(p[i].global_b);
        bf_dataset_free(&p[i].data);
    }
    return bf_test_done("test_predict");
}
