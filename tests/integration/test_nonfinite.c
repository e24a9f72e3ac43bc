/* test_nonfinite.c: huge and non-finite numbers never become a model or a charge, on a real
 * coordinator over CURVE. (1) An UPDATE whose values are finite but huge (3e38) is refused
 * (BAD_REQUEST) and changes nothing: the round still closes on the two honest updates and the
 * final model is finite. (2) A final model whose outputs are not finite (its checkpoint replaced,
 * behind the coordinator's back, by one with every parameter 3e38, its recorded digest updated):
 * PREDICT answers the image as an error and charges nothing. usage: test_nonfinite COORDINATOR */
#include <sqlite3.h>

#include "fed_participant.h"
#include "test_images.h"

#define ENDPOINT "tcp://127.0.0.1:27767"

static double cash_of(fed_client_t *c) { return fed_cash_cents(c); }

int main(int argc, char **argv) {
    if (argc < 2) return fprintf(stderr, "usage: test_nonfinite COORDINATOR\n"), 2;
    zsys_init();
    zsys_set_logstream(NULL);
    char home[600], spec[700], key[41], path[900];
    CHECK(fed_prepare(argv[1], "nonfin", 900, 100, 61, home, sizeof home, spec, sizeof spec, key) == 0);
    const char *extra[] = {"--block-size", "100", "--blocks-per-join", "3", "--liveness", "10", NULL};
    pid_t coord = fed_start(argv[1], home, ENDPOINT, spec, extra);
    part_t p[2];
    for (int i = 0; i < 2; i++) {
        memset(&p[i], 0, sizeof p[i]);
        fed_client_open(&p[i].c, ENDPOINT, key);
        reg(&p[i].c, i ? "bob" : "alice");
    }
    bf_msg_t *r = fed_req(&p[0].c, "TASK_CREATE");
    bf_msg_set_str(r, "task", "nf"), bf_msg_set_str(r, "name", "nf"), bf_msg_set_str(r, "model", "cnn");
    bf_msg_set_str(r, "dataset", "tiny"), bf_msg_set_uint(r, "rounds", 1), bf_msg_set_str(r, "mode", "shareholding");
    bf_msg_set_str(r, "fee", "0.10"), bf_msg_set_uint(r, "min_clients", 2), bf_msg_set_uint(r, "local_epochs", 1);
    bf_msg_set_uint(r, "batch", 32), bf_msg_set_double(r, "lr", 0.05), bf_msg_set_uint(r, "round_timeout", 60);
    bf_msg_set_str(r, "partition", "iid"), bf_msg_set_str(r, "strategy", "fedavg");
    bf_msg_t *rep = call(&p[0].c, r);
    expect_ok(rep, "task create");
    bf_msg_destroy(&rep);
    for (int i = 0; i < 2; i++) join_and_fetch(&p[i], "nf");

    /* (1) a finite but huge update */
    bf_msg_t *round = NULL;
    for (int i = 0; i < 200 && !fed_is(round, "ROUND"); i++) {
        bf_msg_destroy(&round);
        r = fed_req(&p[0].c, "ROUND_GET");
        bf_msg_set_str(r, "task", "nf");
        round = call(&p[0].c, r);
        if (!fed_is(round, "ROUND")) zclock_sleep(100);
    }
    CHECK(fed_is(round, "ROUND"));
    size_t np = 0, nb = 0;
    bf_msg_frame(round, 0, &np), bf_msg_frame(round, 1, &nb);
    np /= 4, nb /= 4;
    float *huge = malloc(sizeof(float) * (np + nb + 1));
    for (size_t i = 0; i < np + nb; i++) huge[i] = 3e38f;
    bf_msg_t *u = fed_req(&p[0].c, "UPDATE");
    bf_msg_set_str(u, "task", "nf"), bf_msg_set_uint(u, "round", 0), bf_msg_set_uint(u, "samples", 300);
    bf_msg_set_double(u, "loss", 1.0);
    bf_msg_add_f32(u, huge, np), bf_msg_add_f32(u, huge + np, nb);
    rep = call(&p[0].c, u);
    CHECK_MSG(!strcmp(fed_code(rep), "BAD_REQUEST"), "a 3e38 update: %s", rep ? bf_msg_type(rep) : "timeout");
    bf_msg_destroy(&rep);
    bf_msg_destroy(&round);
    for (int i = 0; i < 2; i++) train_round(&p[i], "nf", 0);
    fed_wait_done(&p[0].c, "nf");
    fed_stop(coord, SIGTERM);
    snprintf(path, sizeof path, "%s/checkpoints/nf/round-0000.bfm", home);
    bf_err_t err;
    bf_model_meta_t meta;
    bf_net_t *g = bf_model_load(path, 1, 1, &meta, &err);
    CHECK_MSG(g != NULL, "%s", err.msg);
    int finite = 1;
    for (size_t i = 0; g && i < bf_net_num_params(g); i++) finite &= isfinite(bf_net_params(g)[i]) != 0;
    CHECK_MSG(finite, "the final model is not finite");

    /* (2) a model whose outputs overflow */
    for (size_t i = 0; g && i < bf_net_num_params(g); i++) bf_net_params(g)[i] = 3e38f;
    CHECK(g && bf_model_save(g, &meta, path, &err) == 0);
    bf_net_destroy(&g);
    uint8_t *b = NULL;
    size_t n = 0;
    char hex[65] = "";
    CHECK(bf_file_read(path, BF_MODEL_FILE_MAX, &b, &n, &err) == 0);
    bf_sha256_hex(b, n, hex);
    free(b);
    char db[800], sql[300];
    snprintf(db, sizeof db, "%s/coordinator.db", home);
    snprintf(sql, sizeof sql, "UPDATE task SET checkpoint_sha='%s', result_hash='%s' WHERE id='nf'", hex, hex);
    sqlite3 *s = NULL;
    CHECK(sqlite3_open(db, &s) == SQLITE_OK && sqlite3_exec(s, sql, NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(s);
    coord = fed_start(argv[1], home, ENDPOINT, spec, extra);
    fed_client_t dave;
    fed_client_open(&dave, ENDPOINT, key);
    reg(&dave, "dave");
    r = fed_req(&dave, "RECHARGE");
    bf_msg_set_str(r, "amount", "1.00");
    rep = call(&dave, r);
    expect_ok(rep, "recharge");
    bf_msg_destroy(&rep);
    double before = cash_of(&dave);
    size_t len;
    uint8_t *img = ti_encode('p', 3, 16, 16, 1, 7, &len);
    r = fed_req(&dave, "PREDICT");
    bf_msg_set_str(r, "task", "nf"), bf_msg_set_uint(r, "top", 2);
    bf_msg_add_frame(r, img, len);
    rep = call(&dave, r);
    free(img);
    const msgpack_object *res = fed_is(rep, "PREDICTION") ? bf_msg_any(rep, "results") : NULL;
    const msgpack_object *e0 = res && res->type == MSGPACK_OBJECT_ARRAY && res->via.array.size == 1 ? &res->via.array.ptr[0] : NULL;
    const msgpack_object *er = e0 ? bf_mp_get(e0, "error") : NULL;
    CHECK_MSG(er && er->type == MSGPACK_OBJECT_STR && memmem(er->via.str.ptr, er->via.str.size, "not finite", 10),
              "PREDICT on a model with non-finite outputs: %s %s", rep ? bf_msg_type(rep) : "timeout",
              fed_is(rep, "ERROR") ? bf_msg_str(rep, "message") : (e0 && bf_mp_get(e0, "top") ? "(classified)" : ""));
    bf_msg_destroy(&rep);
    CHECK_MSG(cash_of(&dave) == before, "charged %.0f cents for a non-finite prediction", before - cash_of(&dave));
    fed_stop(coord, SIGTERM);
    free(huge);
    fed_client_close(&dave);
    fed_finish(argv[1], home, p, 2, &p[0].c);
    return bf_test_done("test_nonfinite");
}
