/* test_withdraw_cli.c: money out and statements end to end, against the real blockfed-coordinator
 * on loopback with CURVE. `blockfed-client withdraw` holds the amount at once (a second one past
 * the available balance is INSUFFICIENT_FUNDS; one request key sent twice holds once); the
 * operator lists pending withdrawals and settles them with `ledger payout ID --ref` (the money
 * leaves once, the same ref again changes nothing, the ref of another or a second settlement is
 * refused) and `ledger reject ID --reason` (the money is available again). Then `blockfed-client
 * statement --csv` (paged: more lines than one reply carries) and `ledger statement USER --csv`
 * reconcile: opening + movements == closing, line by line, and closing == the account's balance;
 * and `ledger verify` passes. */
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bf_conn.h"
#include "bf_money.h"
#include "bf_profile.h"
#include "bf_spawn.h"
#include "test.h"

static const char *client, *coordinator;
static char tmp[512], out_path[700], ep[64], server_key[64], chome[600], cerr[600], dataset[700];

static void put_be32(FILE *f, uint32_t v) {
    uint8_t b[4] = {v >> 24, v >> 16, v >> 8, v};
    fwrite(b, 1, 4, f);
}

/* A tiny IDX dataset: the coordinator needs one to run. */
static void write_split(const char *dir, const char *prefix, int n) {
    char path[700];
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte", dir, prefix);
    FILE *fi = fopen(path, "wb");
    snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte", dir, prefix);
    FILE *fl = fopen(path, "wb");
    put_be32(fi, 0x803), put_be32(fi, n), put_be32(fi, 12), put_be32(fi, 12);
    put_be32(fl, 0x801), put_be32(fl, n);
    for (int i = 0; i < n; i++) {
        fputc(i % 4, fl);
        for (int p = 0; p < 144; p++) fputc((i * 7 + p) % 250, fi);
    }
    fclose(fi), fclose(fl);
}

static int cli(const char *home, const char *const *args) {
    const char *all[40] = {"--home", home, "--timeout", "10"};
    int n = 4;
    for (int i = 0; args[i] && n < 39; i++) all[n++] = args[i];
    all[n] = NULL;
    return bf_spawn(client, all, out_path, 0);
}

static int ledger_cmd(const char *const *args) {
    const char *all[40];
    int n = 0;
    all[n++] = "ledger";
    for (int i = 0; args[i] && n < 37; i++) all[n++] = args[i];
    all[n++] = "--home";
    all[n++] = chome;
    all[n] = NULL;
    return bf_spawn(coordinator, all, out_path, 0);
}

/* A money string after `"KEY":` in the last output, in cents; INT64_MIN if absent. */
static int64_t json_cents(const char *key) {
    char pat[64], num[32];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(bf_slurp(out_path), pat);
    if (!p) return INT64_MIN;
    p += strlen(pat);
    if (*p == '"') p++;
    size_t k = strspn(p, "0123456789.");
    if (k == 0 || k >= sizeof num) return INT64_MIN;
    memcpy(num, p, k), num[k] = 0;
    int64_t v;
    return bf_money_parse_amount(num, 2, &v, NULL) ? INT64_MIN : v;
}

static int64_t cash(const char *home, const char *which) {
    return cli(home, (const char *const[]){"assets", "--json", NULL}) ? INT64_MIN : json_cents(which);
}

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

static bf_msg_t *money_msg(const char *type, const char *amount, const char *key) {
    bf_msg_t *m = bf_msg_new(type, 1);
    bf_msg_set_str(m, "amount", amount);
    if (key) bf_msg_set_str(m, "request", key);
    return m;
}

/* Signed decimal with 2 places ("-30.00") to cents; CHECKs the format. */
static int64_t cents_of(const char *s) {
    int neg = *s == '-';
    int64_t v = 0;
    CHECK_MSG(bf_money_parse_amount(s + neg, 2, &v, NULL) == 0, "not an amount: '%s'", s);
    return neg ? -v : v;
}

/* Reconciles a statement CSV (the last output): for each currency, opening + every movement ==
 * closing, each movement starts where the one before ended, and the held column likewise. The
 * columns of amount, held, balance_before, balance_after, held_before, held_after are given.
 * Returns the CNY closing balance and held amount; *movements gets the CNY movement count. */
static void reconcile(const int col[6], int64_t *closing, int64_t *closing_held, int *movements) {
    char *text = strdup(bf_slurp(out_path));
    int64_t bal = 0, held = 0;
    int lines = 0, seen_open = 0, seen_close = 0;
    *movements = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save), lines++) {
        if (lines == 0) {
            CHECK_MSG(!strncmp(line, "record,currency,time,transfer,type,code,", 40), "header: %s", line);
            continue;
        }
        CHECK_MSG(!strchr(line, '"'), "unexpected quoting: %s", line);
        char *f[16] = {0};
        int nf = 0;
        for (char *p = line; nf < 16;) {
            f[nf++] = p;
            char *c = strchr(p, ',');
            if (!c) break;
            *c = 0;
            p = c + 1;
        }
        if (nf < 12) {
            CHECK_MSG(0, "short CSV line (%d fields)", nf);
            continue;
        }
        int cny = !strcmp(f[1], "CNY");
        if (!strcmp(f[0], "opening")) {
            bal = cents_of(f[col[3]]), held = cents_of(f[col[5]]);
            seen_open += cny;
        } else if (!strcmp(f[0], "movement")) {
            int64_t a = cents_of(f[col[0]]), h = cents_of(f[col[1]]);
            CHECK_MSG(cents_of(f[col[2]]) == bal && cents_of(f[col[4]]) == held, "movement %s does not follow on", f[3]);
            bal += a, held += h;
            CHECK(cents_of(f[col[3]]) == bal && cents_of(f[col[5]]) == held);
            *movements += cny;
        } else if (!strcmp(f[0], "closing")) {
            CHECK_MSG(cents_of(f[col[3]]) == bal && cents_of(f[col[5]]) == held, "%s closing %s/%s, movements sum to %lld/%lld",
                      f[1], f[col[3]], f[col[5]], (long long)bal, (long long)held);
            if (cny) *closing = bal, *closing_held = held, seen_close++;
        } else {
            CHECK_MSG(0, "unknown record '%s'", f[0]);
        }
    }
    CHECK(seen_open == 1 && seen_close == 1);
    free(text);
}

static pid_t start_coordinator(void) {
    char *cargv[] = {(char *)coordinator, "run", "--home", chome, "--bind", ep, "--dataset", dataset, "--block-size", "100",
                     "--blocks-per-join", "1", NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, cerr, O_WRONLY | O_CREAT | O_APPEND, 0644);
    pid_t pid = -1;
    if (posix_spawn(&pid, coordinator, &fa, NULL, cargv, environ)) pid = -1;
    posix_spawn_file_actions_destroy(&fa);
    return pid;
}

static void test_withdraw(const char *alice, const char *bob) {
    char key[65], type[64];
    bf_err_t err;
    CHECK(cli(alice, (const char *const[]){"recharge", "100", NULL}) == 0);
    CHECK(cli(alice, (const char *const[]){"withdraw", "30", "--json", NULL}) == 0);
    CHECK_MSG(strstr(bf_slurp(out_path), "\"withdrawal\":1") && strstr(bf_slurp(out_path), "\"status\":\"pending\""),
              "withdraw: %s", bf_slurp(out_path));
    CHECK(cash(alice, "cash") == 10000 && cash(alice, "cash_available") == 7000);
    /* the held 30 cannot be withdrawn again */
    CHECK(cli(alice, (const char *const[]){"withdraw", "70.01", NULL}) == 1);
    CHECK_MSG(!strcmp(send_once(alice, money_msg("WITHDRAW", "70.01", NULL), type, sizeof type), "INSUFFICIENT_FUNDS"),
              "over available: %s", type);
    CHECK(cli(alice, (const char *const[]){"withdraw", "-1", NULL}) == 2);
    CHECK_MSG(!strcmp(send_once(alice, money_msg("WITHDRAW", "abc", NULL), type, sizeof type), "BAD_REQUEST"), "abc: %s", type);
    CHECK(cli(bob, (const char *const[]){"withdraw", "1", NULL}) == 1); /* bob has nothing */
    /* one key on two connections: one withdrawal */
    CHECK(bf_conn_request_key(key, &err) == 0);
    CHECK(!strcmp(send_once(alice, money_msg("WITHDRAW", "20.00", key), type, sizeof type), "OK"));
    CHECK(!strcmp(send_once(alice, money_msg("WITHDRAW", "20.00", key), type, sizeof type), "OK"));
    CHECK_MSG(cash(alice, "cash_available") == 5000, "a retried withdrawal held twice");
    CHECK_MSG(!strcmp(send_once(alice, money_msg("WITHDRAW", "25.00", key), type, sizeof type), "CONFLICT"), "reused key: %s",
              type);

    /* the operator's view and settlement */
    CHECK(ledger_cmd((const char *const[]){"withdrawals", "--json", NULL}) == 0);
    const char *o = bf_slurp(out_path);
    CHECK_MSG(strstr(o, "\"id\":1,") && strstr(o, "\"id\":2,") && !strstr(o, "\"id\":3,") &&
                  strstr(o, "\"amount_cents\":3000") && strstr(o, "\"user\":\"alice\""),
              "withdrawals: %s", o);
    CHECK(ledger_cmd((const char *const[]){"payout", "1", "--ref", "BANK-0001", NULL}) == 0);
    CHECK(cash(alice, "cash") == 7000 && cash(alice, "cash_available") == 5000);
    CHECK(ledger_cmd((const char *const[]){"payout", "1", "--ref", "BANK-0001", NULL}) == 0); /* reported twice */
    CHECK(cash(alice, "cash") == 7000);
    CHECK(ledger_cmd((const char *const[]){"payout", "1", "--ref", "BANK-0002", NULL}) == 1); /* paid already */
    CHECK(ledger_cmd((const char *const[]){"payout", "2", "--ref", "BANK-0001", NULL}) == 1); /* another's ref */
    CHECK(ledger_cmd((const char *const[]){"reject", "1", "--reason", "changed my mind", NULL}) == 1);
    CHECK(ledger_cmd((const char *const[]){"payout", "99", "--ref", "BANK-0099", NULL}) == 4);
    CHECK(ledger_cmd((const char *const[]){"payout", "2", "--ref", "has space", NULL}) == 2);
    CHECK(ledger_cmd((const char *const[]){"payout", "2", NULL}) == 2);
    CHECK(ledger_cmd((const char *const[]){"reject", "2", "--reason", "name does not match the account", "--json", NULL}) == 0);
    CHECK_MSG(strstr(bf_slurp(out_path), "\"status\":\"rejected\""), "reject: %s", bf_slurp(out_path));
    CHECK(cash(alice, "cash") == 7000 && cash(alice, "cash_available") == 7000);
    CHECK(ledger_cmd((const char *const[]){"reject", "2", "--reason", "name does not match the account", NULL}) == 0);
    CHECK(ledger_cmd((const char *const[]){"payout", "2", "--ref", "BANK-0003", NULL}) == 1);
    CHECK(cash(alice, "cash_available") == 7000);
    CHECK(ledger_cmd((const char *const[]){"withdrawals", NULL}) == 0 && strstr(bf_slurp(out_path), "0 pending"));
    CHECK(ledger_cmd((const char *const[]){"withdrawals", "--all", NULL}) == 0 && strstr(bf_slurp(out_path), "BANK-0001"));
    /* one left pending for the statement's held column */
    CHECK(cli(alice, (const char *const[]){"withdraw", "5.55", NULL}) == 0);
}

static void test_statements(const char *alice) {
    char key[65], type[64];
    bf_err_t err;
    /* more movements than one STATEMENT reply carries (128): the client pages */
    for (int i = 0; i < 150; i++) {
        CHECK(bf_conn_request_key(key, &err) == 0);
        CHECK(!strcmp(send_once(alice, money_msg("RECHARGE", "0.01", key), type, sizeof type), "OK"));
    }
    int64_t posted = cash(alice, "cash"), available = cash(alice, "cash_available"), closing = 0, held = 0;
    CHECK(posted == 7150 && available == 7150 - 555);
    int n = 0;
    /* client: record,currency,time,transfer,type,code,amount,held,before,after,held_before,held_after */
    CHECK(cli(alice, (const char *const[]){"statement", "--csv", NULL}) == 0);
    reconcile((const int[6]){6, 7, 8, 9, 10, 11}, &closing, &held, &n);
    CHECK_MSG(closing == posted && held == posted - available, "client statement closes at %lld held %lld", (long long)closing,
              (long long)held);
    /* recharge 100, hold 30, post 30, hold 20, void 20, hold 5.55, 150 recharges */
    CHECK_MSG(n == 156, "client statement: %d CNY movements", n);
    /* operator: the same, with the op column after code */
    CHECK(ledger_cmd((const char *const[]){"statement", "alice", "--csv", NULL}) == 0);
    int n2 = 0;
    reconcile((const int[6]){7, 8, 9, 10, 11, 12}, &closing, &held, &n2);
    CHECK(n2 == n && closing == posted && held == posted - available);
    /* a window before the account existed: nothing, opening == closing == 0 */
    CHECK(ledger_cmd((const char *const[]){"statement", "alice", "--from", "2020-01-01", "--to", "2020-01-02", "--csv", NULL}) == 0);
    reconcile((const int[6]){7, 8, 9, 10, 11, 12}, &closing, &held, &n2);
    CHECK(n2 == 0 && closing == 0 && held == 0);
    CHECK(cli(alice, (const char *const[]){"statement", "--from", "2020-01-01", "--to", "2020-01-02", "--csv", NULL}) == 0);
    reconcile((const int[6]){6, 7, 8, 9, 10, 11}, &closing, &held, &n2);
    CHECK(n2 == 0 && closing == 0);
    CHECK(cli(alice, (const char *const[]){"statement", "--from", "2020-02-30", NULL}) == 2);
    CHECK(ledger_cmd((const char *const[]){"statement", "alice", "--from", "2021-01-02", "--to", "2021-01-01", NULL}) == 2);
    CHECK(ledger_cmd((const char *const[]){"statement", "nobody", NULL}) == 4);
    CHECK(cli(alice, (const char *const[]){"statement", NULL}) == 0 && strstr(bf_slurp(out_path), "CNY closing balance 71.50"));
}

int main(int argc, char **argv) {
    if (argc < 3) return fprintf(stderr, "usage: test_withdraw_cli CLIENT COORDINATOR\n"), 2;
    client = argv[1], coordinator = argv[2];
    snprintf(tmp, sizeof tmp, "%s/withdraw_cli_%d", bf_test_tmpdir(), (int)getpid());
    mkdir(tmp, 0700);
    snprintf(out_path, sizeof out_path, "%s/out.txt", tmp);
    char data[600], alice[600], bob[600];
    snprintf(data, sizeof data, "%s/toy", tmp);
    mkdir(data, 0755);
    write_split(data, "train", 400);
    write_split(data, "t10k", 100);
    snprintf(chome, sizeof chome, "%s/coord", tmp);
    snprintf(alice, sizeof alice, "%s/alice", tmp);
    snprintf(bob, sizeof bob, "%s/bob", tmp);
    snprintf(cerr, sizeof cerr, "%s/coord.err", tmp);
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", 20000 + (int)((getpid() + 3571) % 30000));
    CHECK(bf_spawn(coordinator, (const char *const[]){"init", "--home", chome, NULL}, out_path, 0) == 0);
    const char *k = strstr(bf_slurp(out_path), "server public key: ");
    if (k) snprintf(server_key, sizeof server_key, "%.40s", k + 19);
    CHECK_MSG(strlen(server_key) == 40, "no key in init output");
    snprintf(dataset, sizeof dataset, "toy=%s", data);
    pid_t pid = start_coordinator();
    CHECK(pid > 0);
    CHECK(cli(alice, (const char *const[]){"register", "alice", "--coordinator", ep, "--server-key", server_key, NULL}) == 0);
    CHECK(cli(bob, (const char *const[]){"register", "bob", "--coordinator", ep, "--server-key", server_key, NULL}) == 0);
    test_withdraw(alice, bob);
    test_statements(alice);
    int st;
    kill(pid, SIGTERM);
    waitpid(pid, &st, 0);
    CHECK(ledger_cmd((const char *const[]){"verify", NULL}) == 0);
    CHECK_MSG(strstr(bf_slurp(out_path), "withdrawals   ok") && strstr(bf_slurp(out_path), "1 pending withdrawals"), "verify: %s",
              bf_slurp(out_path));
    return bf_test_done("test_withdraw_cli");
}
