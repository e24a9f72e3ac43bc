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
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bf_conn.h"
#include "bf_profile.h"
#include "bf_spawn.h"
#include "test.h"

#define RECHARGES 1000

static const char *client, *coordinator;
static char tmp[512], out_path[700], ep[64], server_key[64], chome[600], cerr[600], dataset[700];

static void put_be32(FILE *f, uint32_t v) {
    uint8_t b[4] = {v >> 24, v >> 16, v >> 8, v};
    fwrite(b, 1, 4, f);
}

/* n 12x12 images of 4 classes (a bright quadrant each), IDX files named PREFIX-*-idx?-ubyte. */
static void write_split(const char *dir, const char *prefix, int n) {
    char path[700];
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte", dir, prefix);
    FILE *fi = fopen(path, "wb");
    snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte", dir, prefix);
    FILE *fl = fopen(path, "wb");
    put_be32(fi, 0x803), put_be32(fi, n), put_be32(fi, 12), put_be32(fi, 12);
    put_be32(fl, 0x801), put_be32(fl, n);
    for (int i = 0; i < n; i++) {
        int c = i % 4;
        fputc(c, fl);
        for (int h = 0; h < 12; h++)
            for (int w = 0; w < 12; w++) fputc(((h < 6) == (c < 2) && (w < 6) == (c % 2 == 0) ? 170 : 40) + (i * 7 + h + w) % 50, fi);
    }
    fclose(fi), fclose(fl);
}

/* blockfed-client --home HOME args... ; returns the exit status, stdout in out_path. */
static int cli(const char *home, const char *const *args) {
    const char *all[40] = {"--home", home, "--timeout", "10"};
    int n = 4;
    for (int i = 0; args[i] && n < 39; i++) all[n++] = args[i];
    all[n] = NULL;
    return bf_spawn(client, all, out_path, 0);
}

static int register_user(const char *home, const char *name) {
    return cli(home, (const char *const[]){"register", name, "--coordinator", ep, "--server-key", server_key, NULL});
}

/* A number after `"KEY":` in the last command's output (a JSON string or number), or -1. */
static double json_num(const char *key) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(bf_slurp(out_path), pat);
    if (!p) return -1;
    p += strlen(pat);
    if (*p == '"') p++;
    return atof(p);
}

static double cash_of(const char *home) { return cli(home, (const char *const[]){"assets", "--json", NULL}) ? -1 : json_num("cash"); }
static double coins_of(const char *home) { return cli(home, (const char *const[]){"assets", "--json", NULL}) ? -1 : json_num("coins"); }

static int create_task(const char *home, const char *id, const char *name, const char *pool) {
    return cli(home, (const char *const[]){"task", "create", "--id", id, "--name", name, "--model", "cnn", "--dataset", "toy",
                                           "--rounds", "1", "--mode", "reward", "--pool", pool, NULL});
}

/* The profile's public key (the CURVE key the coordinator knows the user by). */
static void public_key(const char *home, char out[41]) {
    zcert_t *cert = NULL;
    bf_err_t err;
    out[0] = 0;
    if (bf_profile_load_cert(home, &cert, &err) == 0) snprintf(out, 41, "%s", zcert_public_txt(cert));
    zcert_destroy(&cert);
}

/* Sends req (consumed) on a new connection with home's key pair; the reply type, or "" on none. */
static const char *send_once(const char *home, bf_msg_t *req, char *type, size_t cap) {
    bf_profile_t p;
    zcert_t *cert = NULL;
    bf_err_t err;
    snprintf(type, cap, "%s", "");
    if (bf_profile_load(home, &p, &cert, &err) == 0) {
        bf_conn_t *c = bf_conn_new(p.coordinator, p.server_key, cert, p.insecure, &err);
        bf_msg_t *r = c ? bf_conn_request(c, &req, 10000, &err) : NULL;
        if (r) snprintf(type, cap, "%s", !strcmp(bf_msg_type(r), "ERROR") ? bf_msg_str(r, "code") : bf_msg_type(r));
        bf_msg_destroy(&r);
        bf_conn_destroy(&c);
    }
    zcert_destroy(&cert);
    bf_msg_destroy(&req);
    return type;
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
    bf_msg_set_str(m, "dataset", "toy"), bf_msg_set_uint(m, "rounds", 1), bf_msg_set_str(m, "mode", "reward");
    bf_msg_set_str(m, "pool", "3.00"), bf_msg_set_uint(m, "min_clients", 1), bf_msg_set_uint(m, "local_epochs", 1);
    bf_msg_set_uint(m, "batch", 32), bf_msg_set_double(m, "lr", 0.05), bf_msg_set_uint(m, "round_timeout", 60);
    bf_msg_set_str(m, "partition", "iid"), bf_msg_set_str(m, "strategy", "fedavg");
    bf_msg_set_str(m, "request", key);
    return m;
}

static void test_recharges(const char *alice) {
    double before = cash_of(alice);
    int failed = 0;
    for (int i = 0; i < RECHARGES; i++) failed += cli(alice, (const char *const[]){"recharge", "1", NULL}) != 0;
    CHECK_MSG(failed == 0, "%d of %d recharges failed", failed, RECHARGES);
    double after = cash_of(alice);
    CHECK_MSG(after - before == RECHARGES, "%d recharges of 1.00 moved the balance from %.2f to %.2f", RECHARGES, before, after);
    printf("%d CLI recharges: balance %.2f -> %.2f\n", RECHARGES, before, after);

    /* one key sent twice on two connections (both with request id 1): applied once */
    char key[65], type[64];
    bf_err_t err;
    CHECK(bf_conn_request_key(key, &err) == 0);
    before = cash_of(alice);
    CHECK_MSG(!strcmp(send_once(alice, recharge_msg("5.00", key), type, sizeof type), "OK"), "first: %s", type);
    CHECK_MSG(!strcmp(send_once(alice, recharge_msg("5.00", key), type, sizeof type), "OK"), "retry: %s", type);
    CHECK_MSG(cash_of(alice) - before == 5, "a retried recharge moved %.2f, not 5.00", cash_of(alice) - before);
    /* the same key with other arguments is another request's key: refused, nothing moves */
    CHECK_MSG(!strcmp(send_once(alice, recharge_msg("7.00", key), type, sizeof type), "CONFLICT"), "reused key: %s", type);
    CHECK(cash_of(alice) - before == 5);
}

static void test_create_retry(const char *alice) {
    char key[65], type[64];
    bf_err_t err;
    CHECK(bf_conn_request_key(key, &err) == 0);
    double before = cash_of(alice);
    CHECK_MSG(!strcmp(send_once(alice, create_msg("rt", "retried", key), type, sizeof type), "OK"), "create: %s", type);
    CHECK_MSG(!strcmp(send_once(alice, create_msg("rt", "retried", key), type, sizeof type), "OK"), "retried create: %s",
              type);
    CHECK_MSG(before - cash_of(alice) == 3, "a retried create escrowed %.2f, not 3.00", before - cash_of(alice));
    /* the key names that one create: another task id with it is refused, not a second task */
    CHECK_MSG(!strcmp(send_once(alice, create_msg("rt2", "retried", key), type, sizeof type), "CONFLICT"), "key reused: %s",
              type);
    CHECK(cli(alice, (const char *const[]){"task", "status", "rt2", NULL}) == 1);
    CHECK(bf_conn_request_key(key, &err) == 0); /* a new create of the same id is refused */
    CHECK_MSG(!strcmp(send_once(alice, create_msg("rt", "retried", key), type, sizeof type), "CONFLICT"), "second create: %s",
              type);
    CHECK(before - cash_of(alice) == 3);
}

static void test_blocks_buy(const char *alice) {
    CHECK(create_task(alice, "b1", "blocks", "1.00") == 0);
    CHECK(cli(alice, (const char *const[]){"task", "status", "b1", "--json", NULL}) == 0);
    int free0 = (int)json_num("blocks_free");
    double coins0 = coins_of(alice);
    int fails = 0;
    for (int i = 0; i < 3; i++) fails += cli(alice, (const char *const[]){"blocks", "buy", "b1", "2", NULL}) != 0;
    CHECK_MSG(fails == 0, "%d of 3 purchases failed", fails);
    double coins = coins_of(alice);
    CHECK(cli(alice, (const char *const[]){"task", "status", "b1", "--json", NULL}) == 0);
    int taken = free0 - (int)json_num("blocks_free");
    /* the first purchase also joins the task, which assigns blocks of its own (free) */
    CHECK_MSG(coins0 - coins == 60, "three purchases of 2 blocks cost %.0f coins, not 60", coins0 - coins);
    CHECK_MSG(taken >= 6, "three purchases of 2 blocks took %d blocks", taken);
    printf("blocks buy b1 2, three times: %.0f coins, %d blocks taken (%d free before)\n", coins0 - coins, taken, free0);
}

static void test_refused_create(const char *bob, const char *carol, const char *alice) {
    /* no funds: refused, then the same id after a recharge */
    CHECK(cash_of(bob) == 0);
    CHECK(create_task(bob, "t2", "bob's", "20.00") == 1);
    CHECK(cli(bob, (const char *const[]){"recharge", "20", NULL}) == 0);
    CHECK_MSG(create_task(bob, "t2", "bob's", "20.00") == 0, "t2 after a recharge: refused");
    CHECK(cash_of(bob) == 0);
    /* a stranger's refused attempt does not squat the id */
    CHECK(create_task(carol, "t3", "carol's", "20.00") == 1);
    CHECK_MSG(create_task(alice, "t3", "alice's", "1.00") == 0, "t3 squatted by a refused create");
    /* an empty name (the CLI refuses one itself, so sent raw) is refused and consumes nothing */
    char key[65], type[64];
    bf_err_t err;
    CHECK(bf_conn_request_key(key, &err) == 0);
    CHECK_MSG(!strcmp(send_once(alice, create_msg("t4", "", key), type, sizeof type), "BAD_REQUEST"), "empty name: %s", type);
    CHECK_MSG(create_task(alice, "t4", "named", "1.00") == 0, "t4 after an empty name: refused");
}

static void test_register(const char *tmpdir) {
    char dave[600], frank[600], k1[41], k2[41], k3[41];
    snprintf(dave, sizeof dave, "%s/dave", tmpdir);
    snprintf(frank, sizeof frank, "%s/frank", tmpdir);
    /* a refused register (name taken) binds nothing: the same key registers a free name */
    CHECK(register_user(dave, "alice") == 1);
    public_key(dave, k1);
    CHECK_MSG(register_user(dave, "dave") == 0, "the same key after a refused register: %s", bf_slurp(out_path));
    public_key(dave, k2);
    CHECK(k1[0] && !strcmp(k1, k2));
    CHECK(register_user(dave, "dave") == 0); /* again: harmless */
    /* --force after a refusal: a new key pair, which registers */
    CHECK(register_user(frank, "alice") == 1);
    public_key(frank, k1);
    CHECK(cli(frank, (const char *const[]){"register", "frank", "--coordinator", ep, "--server-key", server_key, "--force",
                                           NULL}) == 0);
    public_key(frank, k3);
    CHECK_MSG(k1[0] && k3[0] && strcmp(k1, k3), "--force kept the key pair");
    CHECK(strstr(bf_slurp(out_path), "registered user frank") != NULL);
}

/* blockfed-coordinator run on chome and ep, with --recharge MODE unless NULL. */
static pid_t start_coordinator(const char *recharge) {
    char *cargv[] = {(char *)coordinator, "run", "--home", chome, "--bind", ep, "--dataset", dataset, "--block-size", "100",
                     "--blocks-per-join", "1", recharge ? "--recharge" : NULL, (char *)recharge, NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, cerr, O_WRONLY | O_CREAT | O_APPEND, 0644);
    pid_t pid = -1;
    if (posix_spawn(&pid, coordinator, &fa, NULL, cargv, environ)) pid = -1;
    posix_spawn_file_actions_destroy(&fa);
    return pid;
}

static void stop_coordinator(pid_t pid) {
    int st;
    kill(pid, SIGTERM);
    waitpid(pid, &st, 0);
}

static int deposit(const char *user, const char *amount, const char *ref) {
    return bf_spawn(coordinator, (const char *const[]){"ledger", "deposit", user, amount, "--ref", ref, "--home", chome, NULL},
                    out_path, 0);
}

static void test_recharge_modes(const char *alice, const char *bob, const char *carol) {
    char type[64], key[65];
    bf_err_t err;
    /* operator: no self-service; a deposit is credited once per external reference */
    pid_t pid = start_coordinator("operator");
    double a0 = cash_of(alice), b0 = cash_of(bob);
    CHECK_MSG(cli(alice, (const char *const[]){"recharge", "1", NULL}) == 1, "operator mode took a self-service recharge");
    CHECK(bf_conn_request_key(key, &err) == 0);
    CHECK_MSG(!strcmp(send_once(alice, recharge_msg("1.00", key), type, sizeof type), "FORBIDDEN"), "operator: %s", type);
    CHECK(cash_of(alice) == a0);
    CHECK(deposit("bob", "12.34", "PAY-0001") == 0);
    CHECK(deposit("bob", "12.34", "PAY-0001") == 0); /* the same payment reported twice */
    CHECK_MSG(cash_of(bob) - b0 > 12.339 && cash_of(bob) - b0 < 12.341, "bob got %.2f for one deposit of 12.34",
              cash_of(bob) - b0);
    CHECK(deposit("bob", "50", "PAY-0001") == 1);   /* the reference names another deposit */
    CHECK(deposit("alice", "12.34", "PAY-0001") == 1);
    CHECK(deposit("nobody", "1", "PAY-0002") == 4);
    CHECK(deposit("bob", "-1", "PAY-0003") == 2);
    CHECK(deposit("bob", "1", "has space") == 2);
    CHECK(cash_of(alice) == a0 && cash_of(bob) - b0 < 12.341);
    stop_coordinator(pid);

    /* open:5: at most 5.00 of self-service a day per user (deposits do not count), then LIMIT */
    pid = start_coordinator("open:5");
    double c0 = cash_of(carol);
    CHECK(cli(carol, (const char *const[]){"recharge", "3", NULL}) == 0);
    CHECK(cli(carol, (const char *const[]){"recharge", "3", NULL}) == 1);
    CHECK(bf_conn_request_key(key, &err) == 0);
    CHECK_MSG(!strcmp(send_once(carol, recharge_msg("2.01", key), type, sizeof type), "LIMIT"), "over the day's cap: %s", type);
    CHECK(cli(carol, (const char *const[]){"recharge", "2", NULL}) == 0);
    CHECK_MSG(cash_of(carol) - c0 == 5, "carol recharged %.2f under a cap of 5.00", cash_of(carol) - c0);
    CHECK(cli(bob, (const char *const[]){"recharge", "1", NULL}) == 1); /* bob recharged 20 today */
    stop_coordinator(pid);

    /* an overflow of the platform's external account is a refusal (LIMIT), and others go on */
    pid = start_coordinator("open:90000000000000000");
    CHECK(bf_conn_request_key(key, &err) == 0);
    CHECK_MSG(!strcmp(send_once(alice, recharge_msg("60000000000000000", key), type, sizeof type), "OK"), "huge: %s", type);
    CHECK(bf_conn_request_key(key, &err) == 0);
    CHECK_MSG(!strcmp(send_once(bob, recharge_msg("60000000000000000", key), type, sizeof type), "LIMIT"), "overflow: %s",
              type);
    c0 = cash_of(carol);
    CHECK(cli(carol, (const char *const[]){"recharge", "1", NULL}) == 0);
    CHECK(cash_of(carol) - c0 == 1);
    stop_coordinator(pid);
    CHECK(bf_spawn(coordinator, (const char *const[]){"ledger", "verify", "--home", chome, NULL}, out_path, 0) == 0);
}

int main(int argc, char **argv) {
    if (argc < 3) return fprintf(stderr, "usage: test_money_cli CLIENT COORDINATOR\n"), 2;
    client = argv[1], coordinator = argv[2];
    snprintf(tmp, sizeof tmp, "%s/money_cli_%d", bf_test_tmpdir(), (int)getpid());
    mkdir(tmp, 0700);
    snprintf(out_path, sizeof out_path, "%s/out.txt", tmp);
    char data[600], alice[600], bob[600], carol[600];
    snprintf(data, sizeof data, "%s/toy", tmp);
    mkdir(data, 0755);
    write_split(data, "train", 1600);
    write_split(data, "t10k", 100);
    snprintf(chome, sizeof chome, "%s/coord", tmp);
    snprintf(alice, sizeof alice, "%s/alice", tmp);
    snprintf(bob, sizeof bob, "%s/bob", tmp);
    snprintf(carol, sizeof carol, "%s/carol", tmp);
    snprintf(cerr, sizeof cerr, "%s/coord.err", tmp);
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", 20000 + (int)((getpid() + 7919) % 30000));

    CHECK(bf_spawn(coordinator, (const char *const[]){"init", "--home", chome, NULL}, out_path, 0) == 0);
    const char *k = strstr(bf_slurp(out_path), "server public key: ");
    if (k) snprintf(server_key, sizeof server_key, "%.40s", k + 19);
    CHECK_MSG(strlen(server_key) == 40, "no key in init output");
    snprintf(dataset, sizeof dataset, "toy=%s", data);
    pid_t cpid = start_coordinator(NULL); /* the default: open:10000 */
    CHECK(cpid > 0);

    CHECK(register_user(alice, "alice") == 0);
    CHECK(register_user(bob, "bob") == 0);
    CHECK(register_user(carol, "carol") == 0);
    test_register(tmp);
    test_recharges(alice);
    test_create_retry(alice);
    test_blocks_buy(alice);
    test_refused_create(bob, carol, alice);
    stop_coordinator(cpid);
    test_recharge_modes(alice, bob, carol);
    return bf_test_done("test_money_cli");
}
