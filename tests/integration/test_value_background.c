/* test_value_background.c: valuation off the round's critical path, on real coordinators over
 * CURVE with four in-process trainers (the real engine) on the generated `tiny` dataset.
 *
 *  1. inline: the same federation with `--valuation inline` (each round valued before it is
 *     aggregated, the old behaviour): the reference values. Then its store is turned back into
 *     schema version 4 (no valued flag, no times): the next start migrates it, every old round
 *     valued with its values.
 *  2. background (the default): every round's per-participant values in STATUS.history equal the
 *     inline run's exactly (the same game, the same code, the same starting model and updates,
 *     read back from the round's valuation file: bit-identical by construction), and so does the
 *     split of the pool. While the last round is being valued the task is still running, every
 *     round done, nobody paid, its history entry `valued: false` with no values; PINGs sent then
 *     are answered within 200 ms (the figures are printed); the settlement is logged after the
 *     last round's values.
 *  3. kill -9 while round 1 is being valued (its valuation file on disk, STATUS valued false),
 *     restart: round 2 trains from the checkpoint while round 1's valuation is redone from its
 *     file (with --value-backlog 1, so round 2 closes only once round 1 is valued); the values
 *     and the split equal the inline run's, the valuation files are deleted once valued, and
 *     `ledger verify` passes.
 *  4. kill -9 while the last round is valued, its valuation file cut short, restart: that round can
 *     never be valued: it is stored valued with no values, and the pool is split on round 1's.
 * With `measure`: 5 rounds, inline then background, printing the round wall times and the time
 * to settlement of each (docs/COORDINATOR.md's table).
 * usage: test_value_background COORDINATOR */
#include <sqlite3.h>

#include "fed_participant.h"

#define NPART 4
#define MAX_ROUNDS 8
#define TASK "vb"

static int ROUNDS = 2; /* 5 with `measure` */

typedef struct {
    double value[MAX_ROUNDS][NPART]; /* per round, per participant (join order): STATUS.history values */
    double cents[NPART];
    double seconds[MAX_ROUNDS], aggregate_seconds[MAX_ROUNDS], value_seconds[MAX_ROUNDS];
    double settled; /* seconds from the first round's start to the task completed */
} fed_result_t;

static const char *names[NPART] = {"alice", "bob", "carol", "dave"};

static const char *mp_str(const msgpack_object *o, char *buf, size_t cap) {
    snprintf(buf, cap, "%.*s", o && o->type == MSGPACK_OBJECT_STR ? (int)o->via.str.size : 0,
             o && o->type == MSGPACK_OBJECT_STR ? o->via.str.ptr : "");
    return buf;
}

static double mp_num(const msgpack_object *o) {
    double v = NAN;
    if (o) bf_mp_as_double(o, &v);
    return v;
}

static bf_msg_t *status(fed_client_t *c) {
    bf_msg_t *r = fed_req(c, "TASK_STATUS");
    bf_msg_set_str(r, "task", TASK);
    return fed_call(c, r);
}

/* From one STATUS: the state, the completed rounds, and round r's (0-based) history entry's
 * valued flag (-1: no such entry). */
static int status_round(const bf_msg_t *st, char state[32], int r, int *valued) {
    const msgpack_object *s = st ? bf_msg_any(st, "status") : NULL;
    mp_str(s ? bf_mp_get(s, "state") : NULL, state, 32);
    const msgpack_object *h = s ? bf_mp_get(s, "history") : NULL;
    *valued = -1;
    if (h && h->type == MSGPACK_OBJECT_ARRAY && (uint32_t)r < h->via.array.size) {
        const msgpack_object *v = bf_mp_get(&h->via.array.ptr[r], "valued");
        *valued = v && v->type == MSGPACK_OBJECT_BOOLEAN ? v->via.boolean : -1;
    }
    const msgpack_object *n = s ? bf_mp_get(s, "round") : NULL;
    return n && n->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (int)n->via.u64 : -1;
}

/* Polls STATUS until `rounds` rounds are done and round r is not valued yet: 0, or -1 if it was
 * valued first (the window was missed) or never came. */
static int wait_valuing(fed_client_t *c, int rounds, int r) {
    for (int i = 0; i < 3000; i++) {
        bf_msg_t *st = status(c);
        char state[32];
        int valued, done = status_round(st, state, r, &valued);
        bf_msg_destroy(&st);
        if (done >= rounds && valued == 0) return 0;
        if (done >= rounds && valued == 1) return -1;
        zclock_sleep(20);
    }
    return -1;
}

static int wait_state(fed_client_t *c, const char *want) {
    for (int i = 0; i < 1200; i++) {
        bf_msg_t *st = status(c);
        char state[32];
        int valued;
        status_round(st, state, 0, &valued);
        bf_msg_destroy(&st);
        if (!strcmp(state, want)) return 0;
        zclock_sleep(100);
    }
    return -1;
}

/* The history's values and times into res; checks every entry carries the new fields. Round `lost`
 * (0-based; -1: none) could not be valued: valued, no values (NaN here), no valuation time. */
static void read_history(fed_client_t *c, fed_result_t *res, int lost) {
    bf_msg_t *st = status(c);
    const msgpack_object *h = st ? bf_mp_get(bf_msg_any(st, "status"), "history") : NULL;
    CHECK(h && h->type == MSGPACK_OBJECT_ARRAY && h->via.array.size == (uint32_t)ROUNDS);
    for (int r = 0; r < ROUNDS; r++)
        for (int i = 0; i < NPART; i++) res->value[r][i] = NAN;
    for (uint32_t r = 0; h && h->type == MSGPACK_OBJECT_ARRAY && r < h->via.array.size && r < (uint32_t)ROUNDS; r++) {
        const msgpack_object *e = &h->via.array.ptr[r], *valued = bf_mp_get(e, "valued"), *vals = bf_mp_get(e, "values");
        CHECK_MSG(valued && valued->type == MSGPACK_OBJECT_BOOLEAN && valued->via.boolean, "round %u not valued", r + 1);
        res->seconds[r] = mp_num(bf_mp_get(e, "seconds"));
        res->aggregate_seconds[r] = mp_num(bf_mp_get(e, "aggregate_seconds"));
        res->value_seconds[r] = mp_num(bf_mp_get(e, "value_seconds"));
        CHECK_MSG(res->aggregate_seconds[r] > 0 && (res->value_seconds[r] > 0) == ((int)r != lost) && res->seconds[r] > 0,
                  "round %u: seconds %g, aggregate %g, value %g", r + 1, res->seconds[r], res->aggregate_seconds[r],
                  res->value_seconds[r]);
        CHECK(vals && vals->type == MSGPACK_OBJECT_ARRAY && vals->via.array.size == ((int)r == lost ? 0 : NPART));
        for (uint32_t k = 0; vals && vals->type == MSGPACK_OBJECT_ARRAY && k < vals->via.array.size; k++) {
            char user[65];
            mp_str(bf_mp_get(&vals->via.array.ptr[k], "user"), user, sizeof user);
            CHECK_MSG(k < NPART && !strcmp(user, names[k]), "round %u value %u is %s's: not in joining order", r + 1, k,
                      user);
            for (int i = 0; i < NPART; i++)
                if (!strcmp(user, names[i])) res->value[r][i] = mp_num(bf_mp_get(&vals->via.array.ptr[k], "shapley"));
        }
    }
    /* the cumulative values are the sums of the rounds' */
    double cum[NPART];
    fed_values(c, TASK, cum, NPART);
    for (int i = 0; i < NPART; i++) {
        double sum = 0;
        for (int r = 0; r < ROUNDS; r++) sum += r == lost ? 0 : res->value[r][i];
        CHECK_NEAR(cum[i], sum, 1e-12);
    }
    bf_msg_destroy(&st);
}

static void create_task(fed_client_t *c) {
    bf_msg_t *r = fed_req(c, "RECHARGE");
    bf_msg_set_str(r, "amount", "10.00");
    bf_msg_t *rep = fed_call(c, r);
    expect_ok(rep, "recharge");
    bf_msg_destroy(&rep);
    r = fed_req(c, "TASK_CREATE");
    bf_msg_set_str(r, "task", TASK), bf_msg_set_str(r, "name", TASK), bf_msg_set_str(r, "model", "resnet8");
    bf_msg_set_str(r, "dataset", "tiny"), bf_msg_set_uint(r, "rounds", ROUNDS), bf_msg_set_str(r, "mode", "reward");
    bf_msg_set_str(r, "pool", "10.00"), bf_msg_set_uint(r, "min_clients", NPART);
    bf_msg_set_uint(r, "local_epochs", 1), bf_msg_set_uint(r, "batch", 32), bf_msg_set_double(r, "lr", 0.05);
    bf_msg_set_uint(r, "round_timeout", 300), bf_msg_set_str(r, "partition", "iid");
    bf_msg_set_str(r, "strategy", "fedavg");
    rep = fed_call(c, r);
    expect_ok(rep, "task create");
    bf_msg_destroy(&rep);
}

/* 50 PINGs in a row: their round-trip times' median and maximum (ms). */
static void ping_latency(fed_client_t *c, double *median, double *worst) {
    double ms[50];
    for (int i = 0; i < 50; i++) {
        double t0 = bf_now();
        bf_msg_t *rep = fed_call(c, fed_req(c, "PING"));
        ms[i] = (bf_now() - t0) * 1000;
        CHECK(fed_is(rep, "PONG"));
        bf_msg_destroy(&rep);
    }
    for (int i = 1; i < 50; i++) /* insertion sort */
        for (int k = i; k > 0 && ms[k] < ms[k - 1]; k--) {
            double x = ms[k];
            ms[k] = ms[k - 1], ms[k - 1] = x;
        }
    *median = ms[25], *worst = ms[49];
}

static int count_files(const char *home, const char *prefix) {
    char dir[700];
    snprintf(dir, sizeof dir, "%s/checkpoints/%s", home, TASK);
    zdir_t *d = zdir_new(dir, NULL);
    int n = 0;
    zfile_t **files = d ? zdir_flatten(d) : NULL;
    for (int i = 0; files && files[i]; i++) {
        const char *base = strrchr(zfile_filename(files[i], NULL), '/');
        n += base && !strncmp(base + 1, prefix, strlen(prefix));
    }
    zdir_flatten_free(&files);
    zdir_destroy(&d);
    return n;
}

/* The store as version 4 wrote it (no valued flag, no times), then a start: migrated to 5, the old
 * rounds are valued with their values (from the contribution rows) and times 0. */
static void check_migration(const char *coord_bin, const char *home, const char *endpoint, const char *spec,
                            const char *const *extra, fed_client_t *c, const fed_result_t *res) {
    char path[700];
    snprintf(path, sizeof path, "%s/coordinator.db", home);
    sqlite3 *db = NULL;
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    CHECK(sqlite3_exec(db,
                       "ALTER TABLE round DROP COLUMN valued; ALTER TABLE round DROP COLUMN aggregate_seconds;"
                       "ALTER TABLE round DROP COLUMN value_seconds; PRAGMA user_version = 4;",
                       NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
    pid_t coord = fed_start(coord_bin, home, endpoint, spec, extra);
    fed_result_t again;
    memset(&again, 0, sizeof again);
    bf_msg_t *st = status(c);
    const msgpack_object *h = st ? bf_mp_get(bf_msg_any(st, "status"), "history") : NULL;
    CHECK(h && h->type == MSGPACK_OBJECT_ARRAY && h->via.array.size == (uint32_t)ROUNDS);
    for (uint32_t r = 0; h && h->type == MSGPACK_OBJECT_ARRAY && r < h->via.array.size; r++) {
        const msgpack_object *e = &h->via.array.ptr[r], *valued = bf_mp_get(e, "valued"), *vals = bf_mp_get(e, "values");
        CHECK(valued && valued->type == MSGPACK_OBJECT_BOOLEAN && valued->via.boolean);
        CHECK(mp_num(bf_mp_get(e, "aggregate_seconds")) == 0 && mp_num(bf_mp_get(e, "value_seconds")) == 0);
        CHECK(vals && vals->type == MSGPACK_OBJECT_ARRAY && vals->via.array.size == NPART);
        for (uint32_t k = 0; vals && vals->type == MSGPACK_OBJECT_ARRAY && k < vals->via.array.size; k++) {
            char user[65];
            mp_str(bf_mp_get(&vals->via.array.ptr[k], "user"), user, sizeof user);
            CHECK_MSG(k < NPART && !strcmp(user, names[k]), "round %u value %u is %s's: not in joining order", r + 1, k,
                      user);
            for (int i = 0; i < NPART; i++)
                if (!strcmp(user, names[i]))
                    CHECK(mp_num(bf_mp_get(&vals->via.array.ptr[k], "shapley")) == res->value[r][i]);
        }
    }
    bf_msg_destroy(&st);
    fed_stop(coord, SIGTERM);
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    sqlite3_stmt *q = NULL;
    CHECK(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &q, NULL) == SQLITE_OK);
    CHECK(q && sqlite3_step(q) == SQLITE_ROW && sqlite3_column_int(q, 0) == 5);
    sqlite3_finalize(q);
    sqlite3_close(db);
    printf("inline: a version-4 store migrated to 5: %d rounds valued, their values kept\n", ROUNDS);
}

typedef enum { RUN_INLINE, RUN_BACKGROUND, RUN_KILLED, RUN_THREADS2, RUN_LOST } run_t;

/* One federation: NPART trainers (carol's labels shifted: a poor contributor), ROUNDS rounds. */
static void federation(const char *coord_bin, run_t how, fed_result_t *res) {
    const char *label = how == RUN_INLINE       ? "inline"
                        : how == RUN_BACKGROUND ? "background"
                        : how == RUN_KILLED     ? "killed"
                        : how == RUN_LOST       ? "lost"
                                                : "background-2-threads";
    const char *endpoint = how == RUN_INLINE       ? "tcp://127.0.0.1:28760"
                           : how == RUN_BACKGROUND ? "tcp://127.0.0.1:28761"
                           : how == RUN_KILLED     ? "tcp://127.0.0.1:28762"
                           : how == RUN_LOST       ? "tcp://127.0.0.1:28764"
                                                   : "tcp://127.0.0.1:28763";
    char name[32], home[600], spec[700], key[41], path[800];
    snprintf(name, sizeof name, "vb-%s", label);
    CHECK(fed_prepare(coord_bin, name, 3000, 200, 5, home, sizeof home, spec, sizeof spec, key) == 0);
    /* every block in the BN re-estimation images, so a round's valuation takes seconds; U = -loss,
     * which still moves in round 2 of this easy task (accuracy is 1 after round 1: truncated) */
    /* after the kill: round 2 may not close before round 1 is valued; measure: the valuer on 2 threads */
    const char *opt = how == RUN_KILLED ? "--value-backlog" : "--value-threads", *val = how == RUN_THREADS2 ? "2" : "1";
    const char *extra[] = {"--block-size", "100", "--blocks-per-join", "3", "--liveness", "60", "--verbose",
                           "--bn-recalibrate", "2700", "--utility", "loss",
                           "--valuation", how == RUN_INLINE ? "inline" : "background", opt, val, NULL};
    pid_t coord = fed_start(coord_bin, home, endpoint, spec, extra);
    fed_client_t erin;
    fed_client_open(&erin, endpoint, key);
    reg(&erin, "erin");
    create_task(&erin);
    part_t p[NPART];
    for (int i = 0; i < NPART; i++) {
        memset(&p[i], 0, sizeof p[i]);
        fed_client_open(&p[i].c, endpoint, key);
        reg(&p[i].c, names[i]);
        join_and_fetch(&p[i], TASK);
    }
    for (int i = 0; i < p[2].data.n; i++) p[2].data.labels[i] = (uint8_t)((p[2].data.labels[i] + 1 + i % 3) % 4);

    double t0 = bf_now();
    for (int i = 0; i < NPART; i++) train_round(&p[i], TASK, 0);
    if (how == RUN_KILLED) {
        /* round 1 aggregated and its valuation under way: its file is the only copy of its updates */
        CHECK_MSG(wait_valuing(&erin, 1, 0) == 0, "round 1 was valued before the test could look");
        snprintf(path, sizeof path, "%s/checkpoints/%s/value-0000.bin", home, TASK); /* docs/COORDINATOR.md */
        CHECK_MSG(access(path, R_OK) == 0, "no valuation file %s while round 1 is valued", path);
        fed_stop(coord, SIGKILL);
        coord = fed_start(coord_bin, home, endpoint, spec, extra);
        printf("killed: SIGKILL while round 1 was valued, restarted\n");
    }
    for (int r = 1; r < ROUNDS; r++)
        for (int i = 0; i < NPART; i++) train_round(&p[i], TASK, r);
    if (how == RUN_LOST) {
        /* kill -9 while the last round is valued, and its file cut short (its header intact, its
         * size not what the header says): it can never be valued */
        CHECK_MSG(wait_valuing(&erin, ROUNDS, ROUNDS - 1) == 0, "the last round was valued before the test could look");
        fed_stop(coord, SIGKILL);
        snprintf(path, sizeof path, "%s/checkpoints/%s/value-%04d.bin", home, TASK, ROUNDS - 1);
        CHECK(truncate(path, 4096) == 0);
        coord = fed_start(coord_bin, home, endpoint, spec, extra);
    }
    if (how == RUN_BACKGROUND) {
        /* every round done, the last one's values still to come: running, nobody paid yet */
        CHECK_MSG(wait_valuing(&erin, ROUNDS, ROUNDS - 1) == 0, "the last round was valued before the test could look");
        double median, worst;
        ping_latency(&erin, &median, &worst);
        bf_msg_t *st = status(&erin);
        char state[32];
        int valued, done = status_round(st, state, ROUNDS - 1, &valued);
        bf_msg_destroy(&st);
        printf("background: PING round trip while the last round was valued: median %.2f ms, max %.2f ms "
               "(still valuing after the pings: %s)\n", median, worst, valued == 0 ? "yes" : "no");
        CHECK_MSG(worst < 200, "a PING took %.1f ms during a valuation", worst);
        CHECK_MSG(valued == 0, "the valuation ended during the pings: they did not all overlap it");
        CHECK(done == ROUNDS && !strcmp(state, "running"));
        for (int i = 0; i < NPART; i++) CHECK_MSG(fed_cash_cents(&p[i].c) == 0, "%s paid before the values", names[i]);
    }
    CHECK_MSG(wait_state(&erin, "completed") == 0, "%s: the task did not complete", label);
    res->settled = bf_now() - t0;
    read_history(&erin, res, how == RUN_LOST ? ROUNDS - 1 : -1);
    double total = 0;
    for (int i = 0; i < NPART; i++) total += res->cents[i] = fed_cash_cents(&p[i].c);
    CHECK(total == 1000);
    printf("%s: rounds' wall / aggregate / value seconds:", label);
    for (int r = 0; r < ROUNDS; r++)
        printf(" round %d %.2f / %.2f / %.2f;", r + 1, res->seconds[r], res->aggregate_seconds[r], res->value_seconds[r]);
    printf("\n%s: first round's start to settlement %.2f s\n%s: values", label, res->settled, label);
    for (int i = 0; i < NPART; i++) printf(" %s %+.6f %+.6f", names[i], res->value[0][i], res->value[1][i]);
    printf("; cents %.0f %.0f %.0f %.0f\n", res->cents[0], res->cents[1], res->cents[2], res->cents[3]);
    fed_stop(coord, SIGTERM);
    CHECK_MSG(count_files(home, "value-") == 0, "%s: %d valuation files left after settlement", label,
              count_files(home, "value-"));
    snprintf(path, sizeof path, "%s.log", home);
    const char *log = bf_slurp(path);
    if (how == RUN_LOST) {
        CHECK(log && strstr(log, "not a valuation file of this round; its values are 0") && strstr(log, "completed after"));
    } else if (how != RUN_INLINE) { /* settlement only after the last round's values */
        char last[64];
        snprintf(last, sizeof last, "round %d: valued in", ROUNDS);
        const char *v = strstr(log, last), *done = strstr(log, "completed after");
        CHECK_MSG(v && done && v < done, "%s: settlement logged before the last round's values", label);
        CHECK(strstr(log, "valued in the background"));
    } else {
        CHECK(log && strstr(log, "coalitions valued, exact)") && !strstr(log, "valued in the background"));
    }
    if (how == RUN_INLINE) check_migration(coord_bin, home, endpoint, spec, extra, &erin, res);
    if (how == RUN_KILLED) { /* --value-backlog 1: round 2 aggregated only once round 1 was valued */
        const char *v1 = log ? strstr(log, "round 1: valued in") : NULL, *r2 = log ? strstr(log, "round 2/2:") : NULL;
        CHECK_MSG(v1 && r2 && v1 < r2, "after the restart round 2 closed before round 1 was valued");
    }
    fed_finish(coord_bin, home, p, NPART, &erin);
}

int main(int argc, char **argv) {
    if (argc < 2) return fprintf(stderr, "usage: test_value_background COORDINATOR [measure]\n"), 2;
    int measure = argc > 2 && !strcmp(argv[2], "measure"); /* longer: 5 rounds, no kill */
    if (measure) ROUNDS = 5;
    zsys_init();
    zsys_set_logstream(NULL);
    fed_result_t ref, bg, killed;
    memset(&ref, 0, sizeof ref), memset(&bg, 0, sizeof bg), memset(&killed, 0, sizeof killed);
    federation(argv[1], RUN_INLINE, &ref);
    federation(argv[1], RUN_BACKGROUND, &bg);
    if (measure) {
        double wi = 0, wb = 0;
        for (int r = 0; r < ROUNDS; r++) wi += ref.seconds[r], wb += bg.seconds[r];
        printf("measure: %d rounds: mean round wall time inline %.2f s, background %.2f s (x%.2f); to settlement "
               "inline %.2f s, background %.2f s (x%.2f)\n", ROUNDS, wi / ROUNDS, wb / ROUNDS, wb / wi, ref.settled,
               bg.settled, bg.settled / ref.settled);
        fed_result_t two;
        memset(&two, 0, sizeof two);
        federation(argv[1], RUN_THREADS2, &two);
        double worst = 0, norm = 0;
        for (int r = 0; r < ROUNDS; r++)
            for (int i = 0; i < NPART; i++)
                worst = fmax(worst, fabs(two.value[r][i] - ref.value[r][i])), norm = fmax(norm, fabs(ref.value[r][i]));
        printf("measure: --value-threads 2: to settlement %.2f s (x%.2f of inline); values' max |diff| from the "
               "inline run's %.3g (largest value %.3g)\n", two.settled, two.settled / ref.settled, worst, norm);
        killed = ref;
    } else {
        federation(argv[1], RUN_KILLED, &killed);
        /* the last round's file lost in a crash: it is valued 0, the task settles on round 1 */
        fed_result_t lost;
        memset(&lost, 0, sizeof lost);
        federation(argv[1], RUN_LOST, &lost);
        double w[NPART], sum = 0, cents = 0;
        for (int i = 0; i < NPART; i++) {
            CHECK(lost.value[0][i] == ref.value[0][i] && isnan(lost.value[ROUNDS - 1][i]));
            w[i] = ref.value[0][i] > 0 ? ref.value[0][i] : 0, sum += w[i], cents += lost.cents[i];
        }
        CHECK(cents == 1000);
        for (int i = 0; i < NPART; i++) CHECK_MSG(fabs(lost.cents[i] - 1000 * w[i] / sum) <= 1, "lost: %s got %.0f cents",
                                                  names[i], lost.cents[i]);
    }
    for (int r = 0; r < ROUNDS; r++)
        for (int i = 0; i < NPART; i++) {
            CHECK_MSG(bg.value[r][i] == ref.value[r][i], "round %d %s: background %.17g, inline %.17g", r + 1, names[i],
                      bg.value[r][i], ref.value[r][i]);
            CHECK_MSG(killed.value[r][i] == ref.value[r][i], "round %d %s: after the kill %.17g, inline %.17g", r + 1,
                      names[i], killed.value[r][i], ref.value[r][i]);
        }
    for (int i = 0; i < NPART; i++) CHECK(bg.cents[i] == ref.cents[i] && killed.cents[i] == ref.cents[i]);
    /* carol's shifted labels: the least valuable */
    CHECK(ref.value[0][2] + ref.value[1][2] < ref.value[0][0] + ref.value[1][0]);
    return bf_test_done("test_value_background");
}
