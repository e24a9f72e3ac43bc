/* test_money_cli.c: money operations through blockfed-client against the real
 * blockfed-coordinator on loopback with CURVE. Every command is a new process and connection,
 * so every request goes out with id 1: the coordinator must tell operations apart by their
 * `request` key. 1,000 recharges in a row are all applied; one RECHARGE and one TASK_CREATE sent
 * twice with the same key (on two connections) are applied once; `blocks buy` three times costs
 * three times; a refused TASK_CREATE (no funds, empty name, a stranger's attempt) leaves the task
 * id free; a refused register binds nothing, and `register --force` makes a new key pair. Then
 * the coordinator is restarted on the same home with each `--recharge` mode: `operator` refuses
 * RECHARGE and takes money in by `ledger deposit` (once per --ref); `open:MAX` caps a user's
 * self-service recharges per day with LIMIT, and an overflow of the platform's external account
 * is LIMIT too, after which others still recharge. */
#include "fed_profile.h"

#define RECHARGES 1000

/* A number after `"KEY":` in the last command's output (a JSON string or number), or -1. */
static double json_num(const fed_cli_t *f, const char *key) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(bf_slurp(f->out), pat);
    if (!p) return -1;
    p += strlen(pat);
    if (*p == '"') p++;
    return atof(p);
}

static double assets_field(const fed_cli_t *f, const char *home, const char *key) {
    return fed_cli_run(f, home, (const char *const[]){"assets", "--json", NULL}) ? -1 : json_num(f, key);
}
static double cash_of(const fed_cli_t *f, const char *home) { return assets_field(f, home, "cash"); }
static double coins_of(const fed_cli_t *f, const char *home) { return assets_field(f, home, "coins"); }

static int create_task(const fed_cli_t *f, const char *home, const char *id, const char *name, const char *pool) {
    return fed_cli_run(f, home, (const char *const[]){"task", "create", "--id", id, "--name", name, "--model", "cnn",
                                                      "--dataset", "tiny", "--rounds", "1", "--mode", "reward", "--pool",
                                                      pool, NULL});
}

/* The profile's public key (the CURVE key the coordinator knows the user by). */
static void public_key(const char *home, char out[41]) {
    zcert_t *cert = NULL;
    bf_err_t err;
    out[0] = 0;
    if (bf_profile_load_cert(home, &cert, &err) == 0) snprintf(out, 41, "%s", zcert_public_txt(cert));
    zcert_destroy(&cert);
}

static bf_msg_t *recharge_msg(const char *amount, const char *key) {
    bf_msg_t *m = bf_msg_new("RECHARGE", 1);
    bf_msg_set_str(m, "amount", amount);
    bf_msg_set_str(m, "request", key);
    return m;
}

static bf_msg_t *create_msg(const char *id, const char *name, const char *key) {
    bf_msg_t *m = bf_msg_new("TASK_CREATE", 1);
    bf_msg_set_str(m, "task", id), bf_msg_set_str(m, "name", name), bf_msg_set_str(m, "model", "cnn");
    bf_msg_set_str(m, "dataset", "tiny"), bf_msg_set_uint(m, "rounds", 1), bf_msg_set_str(m, "mode", "reward");
    bf_msg_set_str(m, "pool", "3.00"), bf_msg_set_uint(m, "min_clients", 1), bf_msg_set_uint(m, "local_epochs", 1);
    bf_msg_set_uint(m, "batch", 32), bf_msg_set_double(m, "lr", 0.05), bf_msg_set_uint(m, "round_timeout", 60);
    bf_msg_set_str(m, "partition", "iid"), bf_msg_set_str(m, "strategy", "fedavg");
    bf_msg_set_str(m, "request", key);
    return m;
}

static void test_recharges(const fed_cli_t *f, const char *alice) {
    double before = cash_of(f, alice);
    int failed = 0;
    for (int i = 0; i < RECHARGES; i++) failed += fed_cli_run(f, alice, (const char *const[]){"recharge", "1", NULL}) != 0;
    CHECK_MSG(failed == 0, "%d of %d recharges failed", failed, RECHARGES);
    double after = cash_of(f, alice);
    CHECK_MSG(after - before == RECHARGES, "%d recharges of 1.00 moved the balance from %.2f to %.2f", RECHARGES, before,
              after);
    printf("%d CLI recharges: balance %.2f -> %.2f\n", RECHARGES, before, after);

    /* one key sent twice on two connections (both with request id 1): applied once */
    char key[65], type[64];
    bf_err_t err;
    CHECK(bf_conn_request_key(key, &err) == 0);
    before = cash_of(f, alice);
    CHECK_MSG(!strcmp(fed_profile_send(alice, recharge_msg("5.00", key), type, sizeof type), "OK"), "first: %s", type);
    CHECK_MSG(!strcmp(fed_profile_send(alice, recharge_msg("5.00", key), type, sizeof type), "OK"), "retry: %s", type);
    CHECK_MSG(cash_of(f, alice) - before == 5, "a retried recharge moved %.2f, not 5.00", cash_of(f, alice) - before);
    /* the same key with other arguments is another request's key: refused, nothing moves */
    CHECK_MSG(!strcmp(fed_profile_send(alice, recharge_msg("7.00", key), type, sizeof type), "CONFLICT"), "reused key: %s",
              type);
    CHECK(cash_of(f, alice) - before == 5);
}

static void test_create_retry(const fed_cli_t *f, const char *alice) {
    char key[65], type[64];
    bf_err_t err;
    CHECK(bf_conn_request_key(key, &err) == 0);
    double before = cash_of(f, alice);
    CHECK_MSG(!strcmp(fed_profile_send(alice, create_msg("rt", "retried", key), type, sizeof type), "OK"), "create: %s",
              type);
    CHECK_MSG(!strcmp(fed_profile_send(alice, create_msg("rt", "retried", key), type, sizeof type), "OK"),
              "retried create: %s", type);
    CHECK_MSG(before - cash_of(f, alice) == 3, "a retried create escrowed %.2f, not 3.00", before - cash_of(f, alice));
    /* the key names that one create: another task id with it is refused, not a second task */
    CHECK_MSG(!strcmp(fed_profile_send(alice, create_msg("rt2", "retried", key), type, sizeof type), "CONFLICT"),
              "key reused: %s", type);
    CHECK(fed_cli_run(f, alice, (const char *const[]){"task", "status", "rt2", NULL}) == 1);
    CHECK(bf_conn_request_key(key, &err) == 0); /* a new create of the same id is refused */
    CHECK_MSG(!strcmp(fed_profile_send(alice, create_msg("rt", "retried", key), type, sizeof type), "CONFLICT"),
              "second create: %s", type);
    CHECK(before - cash_of(f, alice) == 3);
}

static void test_blocks_buy(const fed_cli_t *f, const char *alice) {
    CHECK(create_task(f, alice, "b1", "blocks", "1.00") == 0);
    CHECK(fed_cli_run(f, alice, (const char *const[]){"task", "status", "b1", "--json", NULL}) == 0);
    int free0 = (int)json_num(f, "blocks_free");
    double coins0 = coins_of(f, alice);
    int fails = 0;
    for (int i = 0; i < 3; i++) fails += fed_cli_run(f, alice, (const char *const[]){"blocks", "buy", "b1", "2", NULL}) != 0;
    CHECK_MSG(fails == 0, "%d of 3 purchases failed", fails);
    double coins = coins_of(f, alice);
    CHECK(fed_cli_run(f, alice, (const char *const[]){"task", "status", "b1", "--json", NULL}) == 0);
    int taken = free0 - (int)json_num(f, "blocks_free");
    /* the first purchase also joins the task, which assigns blocks of its own (free) */
    CHECK_MSG(coins0 - coins == 60, "three purchases of 2 blocks cost %.0f coins, not 60", coins0 - coins);
    CHECK_MSG(taken >= 6, "three purchases of 2 blocks took %d blocks", taken);
    printf("blocks buy b1 2, three times: %.0f coins, %d blocks taken (%d free before)\n", coins0 - coins, taken, free0);
}

static void test_refused_create(const fed_cli_t *f, const char *bob, const char *carol, const char *alice) {
    /* no funds: refused, then the same id after a recharge */
    CHECK(cash_of(f, bob) == 0);
    CHECK(create_task(f, bob, "t2", "bob's", "20.00") == 1);
    CHECK(fed_cli_run(f, bob, (const char *const[]){"recharge", "20", NULL}) == 0);
    CHECK_MSG(create_task(f, bob, "t2", "bob's", "20.00") == 0, "t2 after a recharge: refused");
    CHECK(cash_of(f, bob) == 0);
    /* a stranger's refused attempt does not squat the id */
    CHECK(create_task(f, carol, "t3", "carol's", "20.00") == 1);
    CHECK_MSG(create_task(f, alice, "t3", "alice's", "1.00") == 0, "t3 squatted by a refused create");
    /* an empty name (the CLI refuses one itself, so sent raw) is refused and consumes nothing */
    char key[65], type[64];
    bf_err_t err;
    CHECK(bf_conn_request_key(key, &err) == 0);
    CHECK_MSG(!strcmp(fed_profile_send(alice, create_msg("t4", "", key), type, sizeof type), "BAD_REQUEST"),
              "empty name: %s", type);
    CHECK_MSG(create_task(f, alice, "t4", "named", "1.00") == 0, "t4 after an empty name: refused");
}

static void test_register(const fed_cli_t *f) {
    char dave[600], frank[600], k1[41], k2[41], k3[41];
    snprintf(dave, sizeof dave, "%s/dave", f->dir);
    snprintf(frank, sizeof frank, "%s/frank", f->dir);
    /* a refused register (name taken) binds nothing: the same key registers a free name */
    CHECK(fed_cli_register(f, dave, "alice") == 1);
    public_key(dave, k1);
    CHECK_MSG(fed_cli_register(f, dave, "dave") == 0, "the same key after a refused register: %s", bf_slurp(f->out));
    public_key(dave, k2);
    CHECK(k1[0] && !strcmp(k1, k2));
    CHECK(fed_cli_register(f, dave, "dave") == 0); /* again: harmless */
    /* --force after a refusal: a new key pair, which registers */
    CHECK(fed_cli_register(f, frank, "alice") == 1);
    public_key(frank, k1);
    CHECK(fed_cli_run(f, frank, (const char *const[]){"register", "frank", "--coordinator", f->ep, "--server-key", f->key,
                                                      "--force", NULL}) == 0);
    public_key(frank, k3);
    CHECK_MSG(k1[0] && k3[0] && strcmp(k1, k3), "--force kept the key pair");
    CHECK(strstr(bf_slurp(f->out), "registered user frank") != NULL);
}

/* blockfed-coordinator run, with --recharge MODE unless NULL. */
static pid_t start_coordinator(const fed_cli_t *f, const char *recharge) {
    const char *extra[] = {"--block-size", "100", "--blocks-per-join", "1", recharge ? "--recharge" : NULL, recharge, NULL};
    return fed_cli_start(f, extra);
}

static int deposit(const fed_cli_t *f, const char *user, const char *amount, const char *ref) {
    return fed_cli_ledger(f, (const char *const[]){"deposit", user, amount, "--ref", ref, NULL});
}

static void test_recharge_modes(const fed_cli_t *f, const char *alice, const char *bob, const char *carol) {
    char type[64], key[65];
    bf_err_t err;
    /* operator: no self-service; a deposit is credited once per external reference */
    pid_t pid = start_coordinator(f, "operator");
    double a0 = cash_of(f, alice), b0 = cash_of(f, bob);
    CHECK_MSG(fed_cli_run(f, alice, (const char *const[]){"recharge", "1", NULL}) == 1,
              "operator mode took a self-service recharge");
    CHECK(bf_conn_request_key(key, &err) == 0);
    CHECK_MSG(!strcmp(fed_profile_send(alice, recharge_msg("1.00", key), type, sizeof type), "FORBIDDEN"), "operator: %s",
              type);
    CHECK(cash_of(f, alice) == a0);
    CHECK(deposit(f, "bob", "12.34", "PAY-0001") == 0);
    CHECK(deposit(f, "bob", "12.34", "PAY-0001") == 0); /* the same payment reported twice */
    CHECK_MSG(cash_of(f, bob) - b0 > 12.339 && cash_of(f, bob) - b0 < 12.341, "bob got %.2f for one deposit of 12.34",
              cash_of(f, bob) - b0);
    CHECK(deposit(f, "bob", "50", "PAY-0001") == 1);   /* the reference names another deposit */
    CHECK(deposit(f, "alice", "12.34", "PAY-0001") == 1);
    CHECK(deposit(f, "nobody", "1", "PAY-0002") == 4);
    CHECK(deposit(f, "bob", "-1", "PAY-0003") == 2);
    CHECK(deposit(f, "bob", "1", "has space") == 2);
    CHECK(cash_of(f, alice) == a0 && cash_of(f, bob) - b0 < 12.341);
    fed_stop(pid, SIGTERM);

    /* open:5: at most 5.00 of self-service a day per user (deposits do not count), then LIMIT */
    pid = start_coordinator(f, "open:5");
    double c0 = cash_of(f, carol);
    CHECK(fed_cli_run(f, carol, (const char *const[]){"recharge", "3", NULL}) == 0);
    CHECK(fed_cli_run(f, carol, (const char *const[]){"recharge", "3", NULL}) == 1);
    CHECK(bf_conn_request_key(key, &err) == 0);
    CHECK_MSG(!strcmp(fed_profile_send(carol, recharge_msg("2.01", key), type, sizeof type), "LIMIT"),
              "over the day's cap: %s", type);
    CHECK(fed_cli_run(f, carol, (const char *const[]){"recharge", "2", NULL}) == 0);
    CHECK_MSG(cash_of(f, carol) - c0 == 5, "carol recharged %.2f under a cap of 5.00", cash_of(f, carol) - c0);
    CHECK(fed_cli_run(f, bob, (const char *const[]){"recharge", "1", NULL}) == 1); /* bob recharged 20 today */
    fed_stop(pid, SIGTERM);

    /* an overflow of the platform's external account is a refusal (LIMIT), and others go on */
    pid = start_coordinator(f, "open:90000000000000000");
    CHECK(bf_conn_request_key(key, &err) == 0);
    CHECK_MSG(!strcmp(fed_profile_send(alice, recharge_msg("60000000000000000", key), type, sizeof type), "OK"), "huge: %s",
              type);
    CHECK(bf_conn_request_key(key, &err) == 0);
    CHECK_MSG(!strcmp(fed_profile_send(bob, recharge_msg("60000000000000000", key), type, sizeof type), "LIMIT"),
              "overflow: %s", type);
    c0 = cash_of(f, carol);
    CHECK(fed_cli_run(f, carol, (const char *const[]){"recharge", "1", NULL}) == 0);
    CHECK(cash_of(f, carol) - c0 == 1);
    fed_stop(pid, SIGTERM);
    CHECK(fed_cli_ledger(f, (const char *const[]){"verify", NULL}) == 0);
}

int main(int argc, char **argv) {
    if (argc < 3) return fprintf(stderr, "usage: test_money_cli CLIENT COORDINATOR\n"), 2;
    fed_cli_t f[1]; /* an array of one: f is the pointer every helper takes */
    char name[64], ep[64], alice[600], bob[600], carol[600];
    snprintf(name, sizeof name, "money_cli_%d", (int)getpid());
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", 20000 + (int)((getpid() + 7919) % 30000));
    CHECK_MSG(fed_cli_prepare(f, argv[2], argv[1], name, ep, 12, 1600, 100, 1) == 0, "no coordinator home in %s", f->dir);
    snprintf(alice, sizeof alice, "%s/alice", f->dir);
    snprintf(bob, sizeof bob, "%s/bob", f->dir);
    snprintf(carol, sizeof carol, "%s/carol", f->dir);
    pid_t cpid = start_coordinator(f, NULL); /* the default: open:10000 */
    CHECK(cpid > 0);

    CHECK(fed_cli_register(f, alice, "alice") == 0);
    CHECK(fed_cli_register(f, bob, "bob") == 0);
    CHECK(fed_cli_register(f, carol, "carol") == 0);
    test_register(f);
    test_recharges(f, alice);
    test_create_retry(f, alice);
    test_blocks_buy(f, alice);
    test_refused_create(f, bob, carol, alice);
    fed_stop(cpid, SIGTERM);
    test_recharge_modes(f, alice, bob, carol);
    return bf_test_done("test_money_cli");
}
