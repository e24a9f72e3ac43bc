/* test_http_api.c: the HTTPS API against a real coordinator over real TLS (libcurl, trusting only
 * the certificate `init` wrote), with C trainers over ZeroMQ + CURVE doing the training:
 *   - TLS: the certificate verifies for 127.0.0.1; without it as the CA the handshake fails;
 *   - the seed flow: a web user registers, logs in, recharges (an Idempotency-Key retry is applied
 *     once), creates a shareholding task that two C trainers complete while its event stream is
 *     read (status, round, state, settled), reads its status, pays for a prediction of two PNGs
 *     uploaded as multipart (a retry with the same key is charged once), and the fee reaches the
 *     shareholders exactly; the history shows before/after balances;
 *   - auth: wrong password, no or bogus credential, a cookie change without its CSRF header, a
 *     logged-out session and a revoked API token are refused; 5 failed logins lock the user out;
 *   - bad input changes nothing: unknown fields, wrong kinds, malformed and oversized JSON, hostile
 *     multipart (another field, 65 images), a corrupt image;
 *   - a CLI user sets a password over CURVE (a hash it derived) and logs in over HTTPS; an API
 *     token made over CURVE opens the API; the same with the programs: `blockfed-client password`
 *     (the password on stdin) and `blockfed-client token create`;
 *   - /metrics needs the operator's token; every route the server lists is in openapi.json.
 * usage: test_http_api COORDINATOR CLIENT */
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <pthread.h>

#include "bf_money.h"
#include "fed_participant.h"
#include "test_images.h"

#define ENDPOINT "tcp://127.0.0.1:27790"
#define HTTP_ADDR "127.0.0.1:27791"
#define BASE "https://" HTTP_ADDR

static char cafile[700];

/* prog args... with stdin from in and stdout+stderr into out; its exit status. */
static int run_with_stdin(const char *prog, const char *const *args, const char *in, const char *out) {
    return bf_spawn_in(prog, args, in, out, 2);
}

typedef struct {
    long status;
    char *body;
    size_t len;
    char cookie[512]; /* the Set-Cookie header, if any */
    CURLcode rc;
} resp_t;

static size_t on_body(char *p, size_t s, size_t n, void *u) {
    resp_t *r = u;
    char *b = realloc(r->body, r->len + s * n + 1);
    if (!b) return 0;
    memcpy(b + r->len, p, s * n);
    r->body = b;
    r->len += s * n;
    r->body[r->len] = 0;
    return s * n;
}

static size_t on_header(char *p, size_t s, size_t n, void *u) {
    resp_t *r = u;
    if (s * n > 12 && !strncasecmp(p, "Set-Cookie: ", 12))
        snprintf(r->cookie, sizeof r->cookie, "%.*s", (int)(s * n - 12), p + 12);
    return s * n;
}

static curl_mime *images_form(CURL *owner, int n, const char *field, uint32_t seed) {
    curl_mime *m = curl_mime_init(owner);
    for (int i = 0; i < n; i++) {
        size_t len;
        uint8_t *png = ti_encode('p', i % 4, 16, 16, 1, seed + (uint32_t)i, &len);
        curl_mimepart *p = curl_mime_addpart(m);
        curl_mime_name(p, field);
        curl_mime_filename(p, "x.png");
        curl_mime_type(p, "image/png");
        curl_mime_data(p, (const char *)png, len);
        free(png);
    }
    return m;
}

typedef struct {
    const char *bearer, *cookie, *csrf, *idem, *content_type;
    const char *ca; /* NULL: cafile; "" : the system's CAs */
    int images;             /* > 0: that many PNGs as multipart fields named field */
    const char *field;
    uint32_t seed;
    const void *raw;
    size_t raw_len;
} opt_t;

static resp_t http(const char *method, const char *path, const char *json, const opt_t *o) {
    static const opt_t none;
    if (!o) o = &none;
    resp_t r = {0};
    CURL *c = curl_easy_init();
    char url[512], h[800];
    snprintf(url, sizeof url, BASE "%s", path);
    struct curl_slist *hs = NULL;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (!o->ca) curl_easy_setopt(c, CURLOPT_CAINFO, cafile);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    if (o->bearer) snprintf(h, sizeof h, "Authorization: Bearer %s", o->bearer), hs = curl_slist_append(hs, h);
    if (o->cookie) snprintf(h, sizeof h, "Cookie: %s", o->cookie), hs = curl_slist_append(hs, h);
    if (o->csrf) snprintf(h, sizeof h, "X-CSRF-Token: %s", o->csrf), hs = curl_slist_append(hs, h);
    if (o->idem) snprintf(h, sizeof h, "Idempotency-Key: %s", o->idem), hs = curl_slist_append(hs, h);
    if (json) {
        hs = curl_slist_append(hs, "Content-Type: application/json");
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, json);
    } else if (o->raw) {
        snprintf(h, sizeof h, "Content-Type: %s", o->content_type ? o->content_type : "image/png");
        hs = curl_slist_append(hs, h);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, o->raw);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)o->raw_len);
    }
    curl_mime *mime = o->images ? images_form(c, o->images, o->field, o->seed) : NULL;
    if (mime) curl_easy_setopt(c, CURLOPT_MIMEPOST, mime);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hs);
    r.rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
    curl_slist_free_all(hs);
    curl_mime_free(mime);
    curl_easy_cleanup(c);
    if (!r.body) r.body = calloc(1, 1);
    return r;
}

/* The body as JSON (NULL if it is not). */
static cJSON *js(const resp_t *r) { return cJSON_Parse(r->body); }

static const char *jstr(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}

/* The error code of an error body ("" if none). */
static const char *ecode(const cJSON *o) { return jstr(cJSON_GetObjectItemCaseSensitive(o, "error"), "code"); }

#define EXPECT(r, st, what)                                                                                            \
    CHECK_MSG((r).status == (st), "%s: HTTP %ld (curl %d), want %d: %s", what, (r).status, (int)(r).rc, st, (r).body)

static void done(resp_t *r) { free(r->body), r->body = NULL; }

/* GET /account's cash as a string (copied into out). */
static void cash_of(const char *bearer, char out[32]) {
    opt_t o = {.bearer = bearer};
    resp_t r = http("GET", "/api/v1/account", NULL, &o);
    cJSON *j = js(&r);
    snprintf(out, 32, "%s", jstr(j, "cash"));
    cJSON_Delete(j);
    done(&r);
}

/* ---- the event stream, read on its own thread ---- */
typedef struct {
    const char *bearer;
    resp_t r;
} stream_t;

static void *read_events(void *arg) {
    stream_t *s = arg;
    CURL *c = curl_easy_init();
    char h[600];
    snprintf(h, sizeof h, "Authorization: Bearer %s", s->bearer);
    struct curl_slist *hs = curl_slist_append(NULL, h);
    curl_easy_setopt(c, CURLOPT_URL, BASE "/api/v1/tasks/h1/events");
    curl_easy_setopt(c, CURLOPT_CAINFO, cafile);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hs);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &s->r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 240L);
    s->r.rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &s->r.status);
    curl_slist_free_all(hs);
    curl_easy_cleanup(c);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3) return fprintf(stderr, "usage: test_http_api COORDINATOR CLIENT\n"), 2;
    const char *coord = argv[1], *client = argv[2];
    zsys_init();
    zsys_set_logstream(NULL);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    char home[600], spec[700], key[41], path[128];
    CHECK(fed_prepare(coord, "http", 1100, 200, 7, home, sizeof home, spec, sizeof spec, key) == 0);
    snprintf(cafile, sizeof cafile, "%s/https.crt", home);
    const char *extra[] = {"--block-size", "100", "--blocks-per-join", "3", "--liveness", "30", "--http", HTTP_ADDR, NULL};
    pid_t pid = fed_start(coord, home, ENDPOINT, spec, extra);
    resp_t r = {0};
    for (int i = 0; i < 50 && r.status != 200; i++, zclock_sleep(100)) done(&r), r = http("GET", "/healthz", NULL, NULL);
    EXPECT(r, 200, "healthz over TLS, verified against init's certificate");
    done(&r);
    { /* init printed the certificate's fingerprint, and run names the dashboard with it */
        FILE *cf = fopen(cafile, "r");
        X509 *x = cf ? PEM_read_X509(cf, NULL, NULL, NULL) : NULL;
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int mdn = 0;
        char fp[100] = "", want[300], ipath[700], lpath[700];
        if (x && X509_digest(x, EVP_sha256(), md, &mdn) == 1)
            for (unsigned int i = 0; i < mdn; i++) snprintf(fp + 3 * i, 4, "%02X%s", md[i], i + 1 < mdn ? ":" : "");
        X509_free(x);
        if (cf) fclose(cf);
        snprintf(ipath, sizeof ipath, "%s.init.out", home);
        snprintf(lpath, sizeof lpath, "%s.log", home);
        snprintf(want, sizeof want, "(SHA-256 fingerprint %s)", fp);
        CHECK_MSG(mdn == 32 && strstr(bf_slurp(ipath), want), "init's output lacks %s: %s", want, bf_slurp(ipath));
        snprintf(want, sizeof want, "dashboard: https://%s/ (certificate SHA-256 fingerprint %s)", HTTP_ADDR, fp);
        CHECK_MSG(strstr(bf_slurp(lpath), want), "the coordinator's log lacks '%s'", want);
    }
    opt_t sys = {.ca = ""};
    r = http("GET", "/healthz", NULL, &sys);
    CHECK_MSG(r.rc == CURLE_PEER_FAILED_VERIFICATION, "without init's certificate as CA: curl %d", (int)r.rc);
    done(&r);

    /* register, login */
    r = http("POST", "/api/v1/auth/register", "{\"username\":\"wendy\",\"password\":\"correct horse\"}", NULL);
    EXPECT(r, 201, "register");
    done(&r);
    r = http("POST", "/api/v1/auth/register", "{\"username\":\"wendy\",\"password\":\"another one\"}", NULL);
    EXPECT(r, 409, "register a taken name");
    done(&r);
    r = http("POST", "/api/v1/auth/register", "{\"username\":\"walt\",\"password\":\"short\"}", NULL);
    EXPECT(r, 400, "register with a short password");
    done(&r);
    const char *badnames[] = {"{\"username\":\"\",\"password\":\"long enough\"}", "{\"username\":\"a b\",\"password\":\"long enough\"}",
                              "{\"username\":\"-x\",\"password\":\"long enough\"}",
                              "{\"username\":\"abcdefghijabcdefghijabcdefghijabc\",\"password\":\"long enough\"}",
                              "{\"username\":\"\u00e9\\u001b[2J\",\"password\":\"long enough\"}"};
    for (size_t i = 0; i < sizeof badnames / sizeof badnames[0]; i++) {
        r = http("POST", "/api/v1/auth/register", badnames[i], NULL);
        EXPECT(r, 400, badnames[i]);
        done(&r);
    }
    r = http("POST", "/api/v1/auth/login", "{\"username\":\"wendy\",\"password\":\"wrong horse\"}", NULL);
    EXPECT(r, 401, "login with a wrong password");
    done(&r);
    r = http("POST", "/api/v1/auth/login", "{\"username\":\"wendy\",\"password\":\"correct horse\"}", NULL);
    EXPECT(r, 200, "login");
    cJSON *j = js(&r);
    char token[128], csrf[128], cookie[200];
    snprintf(token, sizeof token, "%s", jstr(j, "token"));
    snprintf(csrf, sizeof csrf, "%s", jstr(j, "csrf"));
    CHECK_MSG(token[0] && csrf[0] && strstr(r.cookie, "HttpOnly") && strstr(r.cookie, "Secure") &&
                  strstr(r.cookie, "SameSite=Strict"),
              "login answer %s, cookie %s", r.body, r.cookie);
    snprintf(cookie, sizeof cookie, "bf_session=%s", token);
    cJSON_Delete(j);
    done(&r);

    /* unauthenticated, bogus, wrong path and method */
    r = http("GET", "/api/v1/account", NULL, NULL);
    j = js(&r);
    EXPECT(r, 401, "account without a credential");
    CHECK(!strcmp(ecode(j), "UNAUTHORIZED"));
    cJSON_Delete(j), done(&r);
    opt_t bogus = {.bearer = "bfs_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"};
    r = http("GET", "/api/v1/account", NULL, &bogus);
    EXPECT(r, 401, "account with a bogus token");
    done(&r);
    opt_t me = {.bearer = token};
    r = http("GET", "/api/v1/nothing", NULL, &me);
    EXPECT(r, 404, "unknown path");
    done(&r);
    r = http("DELETE", "/api/v1/account", NULL, &me);
    EXPECT(r, 405, "wrong method");
    done(&r);

    /* recharge, idempotent */
    char cash[32];
    cash_of(token, cash);
    CHECK_MSG(!strcmp(cash, "0.00"), "new account's cash %s", cash);
    opt_t idem = {.bearer = token, .idem = "recharge-1"};
    for (int i = 0; i < 2; i++) {
        r = http("POST", "/api/v1/account/recharge", "{\"amount\":\"10.00\"}", &idem);
        EXPECT(r, 200, "recharge (and its retry)");
        done(&r);
    }
    cash_of(token, cash);
    CHECK_MSG(!strcmp(cash, "10.00"), "after a recharge and its retry: %s", cash);
    /* with the cookie: a change needs the CSRF header */
    opt_t ck = {.cookie = cookie};
    r = http("POST", "/api/v1/account/recharge", "{\"amount\":\"1.00\"}", &ck);
    EXPECT(r, 403, "cookie recharge without X-CSRF-Token");
    done(&r);
    opt_t ckc = {.cookie = cookie, .csrf = csrf};
    r = http("POST", "/api/v1/account/recharge", "{\"amount\":\"1.00\"}", &ckc);
    EXPECT(r, 200, "cookie recharge with X-CSRF-Token");
    done(&r);
    cash_of(token, cash);
    CHECK_MSG(!strcmp(cash, "11.00"), "after the cookie recharge: %s", cash);

    /* bad bodies change nothing */
    const char *bad[][2] = {{"{\"amount\":\"1.00\",\"extra\":1}", "unknown field"},
                            {"{\"amount\":100}", "amount as a number"},
                            {"{\"amount\":\"lots\"}", "amount not money"},
                            {"{\"amount\":", "malformed JSON"},
                            {"[1,2]", "not an object"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r = http("POST", "/api/v1/account/recharge", bad[i][0], &me);
        EXPECT(r, 400, bad[i][1]);
        done(&r);
    }
    char *big = malloc(70000);
    memset(big, ' ', 69999), big[0] = '{', big[69998] = '}', big[69999] = 0;
    r = http("POST", "/api/v1/account/recharge", big, &me);
    EXPECT(r, 413, "a 70 kB JSON body");
    done(&r), free(big);
    cash_of(token, cash);
    CHECK_MSG(!strcmp(cash, "11.00"), "after refused bodies: %s", cash);

    /* a shareholding task, created over HTTP, trained by two C trainers over CURVE */
    r = http("POST", "/api/v1/tasks", "{\"task\":\"h1\",\"name\":\"web task\",\"model\":\"cnn\",\"dataset\":\"tiny\",\"rounds\":1,"
             "\"mode\":\"shareholding\",\"fee\":\"0.10\",\"min_clients\":2,\"batch\":32,\"round_timeout\":60,\"colour\":1}", &me);
    EXPECT(r, 400, "task create with an unknown field");
    done(&r);
    r = http("POST", "/api/v1/tasks", "{\"task\":\"h1\",\"name\":\"web task\",\"model\":\"cnn\",\"dataset\":\"tiny\",\"rounds\":0,"
             "\"mode\":\"shareholding\"}", &me);
    EXPECT(r, 400, "task create with rounds 0");
    done(&r);
    r = http("POST", "/api/v1/tasks", "{\"task\":\"h1\",\"name\":\"web task\",\"model\":\"cnn\",\"dataset\":\"tiny\",\"rounds\":1,"
             "\"mode\":\"shareholding\",\"fee\":\"0.10\",\"min_clients\":2,\"batch\":32,\"round_timeout\":60}", &me);
    EXPECT(r, 201, "task create");
    done(&r);
    r = http("GET", "/api/v1/tasks/h1", NULL, &me);
    j = js(&r);
    EXPECT(r, 200, "task status");
    CHECK_MSG(!strcmp(jstr(j, "state"), "waiting") && !strcmp(jstr(j, "fee"), "0.10"), "status %s", r.body);
    cJSON_Delete(j), done(&r);

    stream_t ev = {.bearer = token};
    pthread_t th;
    pthread_create(&th, NULL, read_events, &ev);
    part_t p[2];
    const char *names[2] = {"alice", "bob"};
    for (int i = 0; i < 2; i++) {
        memset(&p[i], 0, sizeof p[i]);
        fed_client_open(&p[i].c, ENDPOINT, key);
        reg(&p[i].c, names[i]);
    }
    for (int i = 0; i < 2; i++) join_and_fetch(&p[i], "h1");
    for (int i = 0; i < 2; i++) train_round(&p[i], "h1", 0);
    pthread_join(th, NULL);
    CHECK_MSG(ev.r.status == 200 && strstr(ev.r.body, "event: status\n") && strstr(ev.r.body, "event: round\n") &&
                  strstr(ev.r.body, "event: state\n") && strstr(ev.r.body, "event: settled\n") &&
                  strstr(ev.r.body, "event: valued\ndata: {\"round\":1,\"values\":[{\"user\":") &&
                  strstr(ev.r.body, "event: valued\n") < strstr(ev.r.body, "event: settled\n"),
              "event stream (HTTP %ld, curl %d): %s", ev.r.status, (int)ev.r.rc, ev.r.body ? ev.r.body : "");
    done(&ev.r);
    r = http("GET", "/api/v1/tasks/h1", NULL, &me);
    j = js(&r);
    cJSON *parts = cJSON_GetObjectItemCaseSensitive(j, "participants");
    CHECK_MSG(!strcmp(jstr(j, "state"), "completed") && cJSON_GetArraySize(parts) == 2 &&
                  cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "history")) == 1,
              "completed status %s", r.body);
    cJSON_Delete(j), done(&r);
    r = http("GET", "/api/v1/tasks", NULL, &me);
    j = js(&r);
    CHECK_MSG(cJSON_GetArraySize(j) == 1, "task list %s", r.body);
    cJSON_Delete(j), done(&r);

    /* alice, a CLI user: a password hash she derived, sent over CURVE; then an API token */
    uint8_t salt[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, hash[32];
    CHECK(PKCS5_PBKDF2_HMAC("alice's secret", 14, salt, 16, 600000, EVP_sha256(), 32, hash) == 1);
    char sh[33], hh[65];
    for (int i = 0; i < 16; i++) snprintf(sh + 2 * i, 3, "%02x", salt[i]);
    for (int i = 0; i < 32; i++) snprintf(hh + 2 * i, 3, "%02x", hash[i]);
    bf_msg_t *m = fed_req(&p[0].c, "PASSWORD_SET"), *rep;
    bf_msg_set_str(m, "salt", sh), bf_msg_set_uint(m, "iterations", 600000), bf_msg_set_str(m, "hash", hh);
    rep = call(&p[0].c, m);
    expect_ok(rep, "PASSWORD_SET");
    bf_msg_destroy(&rep);
    r = http("POST", "/api/v1/auth/login", "{\"username\":\"alice\",\"password\":\"alice's secret\"}", NULL);
    EXPECT(r, 200, "alice's login with the password set over CURVE");
    done(&r);
    m = fed_req(&p[0].c, "TOKEN_CREATE");
    bf_msg_set_str(m, "name", "alice's script");
    rep = call(&p[0].c, m);
    const msgpack_object *tk = fed_is(rep, "OK") ? bf_mp_get(bf_msg_any(rep, "result"), "token") : NULL;
    char atok[128] = "";
    if (tk && tk->type == MSGPACK_OBJECT_STR) snprintf(atok, sizeof atok, "%.*s", (int)tk->via.str.size, tk->via.str.ptr);
    bf_msg_destroy(&rep);
    opt_t at = {.bearer = atok};
    r = http("GET", "/api/v1/account/participations", NULL, &at);
    j = js(&r);
    EXPECT(r, 200, "alice's participations with a token made over CURVE");
    CHECK_MSG(cJSON_GetArraySize(j) == 1 && !strcmp(jstr(cJSON_GetArrayItem(j, 0), "task"), "h1"), "participations %s", r.body);
    cJSON_Delete(j), done(&r);

    /* carl, with the programs: register, password from stdin, a token */
    char chome[700], cin[720], cout[720];
    snprintf(chome, sizeof chome, "%s-carl", home);
    snprintf(cin, sizeof cin, "%s.in", chome);
    snprintf(cout, sizeof cout, "%s.out", chome);
    FILE *pf = fopen(cin, "w");
    fputs("carl's long password\n", pf);
    fclose(pf);
    CHECK(run_with_stdin(client, (const char *const[]){"--home", chome, "register", "carl", "--coordinator", ENDPOINT,
                                                       "--server-key", key, NULL}, cin, cout) == 0);
    int prc = run_with_stdin(client, (const char *const[]){"--home", chome, "password", NULL}, cin, cout);
    CHECK_MSG(prc == 0, "blockfed-client password: exit %d: %s", prc, bf_slurp(cout));
    r = http("POST", "/api/v1/auth/login", "{\"username\":\"carl\",\"password\":\"carl's long password\"}", NULL);
    EXPECT(r, 200, "carl's login with the password set by blockfed-client password");
    done(&r);
    prc = run_with_stdin(client, (const char *const[]){"--home", chome, "token", "create", "ci", "--json", NULL}, cin, cout);
    char ctok[128] = "";
    const char *tp = strstr(bf_slurp(cout), "\"token\":\"");
    if (tp) snprintf(ctok, sizeof ctok, "%.*s", (int)strcspn(tp + 9, "\""), tp + 9);
    CHECK_MSG(prc == 0 && !strncmp(ctok, "bft_", 4), "blockfed-client token create: exit %d: %s", prc, bf_slurp(cout));
    opt_t ct = {.bearer = ctok};
    r = http("GET", "/api/v1/account", NULL, &ct);
    j = js(&r);
    CHECK_MSG(r.status == 200 && !strcmp(jstr(j, "user"), "carl"), "carl's account with his CLI token: %s", r.body);
    cJSON_Delete(j), done(&r);

    rep = call(&p[0].c, fed_req(&p[0].c, "STATS_GET")); /* the gauges are the operator's, not on the ROUTER */
    CHECK_MSG(!strcmp(fed_code(rep), "FORBIDDEN"), "STATS_GET over CURVE: %s", rep ? bf_msg_type(rep) : "timeout");
    bf_msg_destroy(&rep);

    /* paid prediction: two PNGs as multipart; a retry with the same key is charged once */
    double holders0 = 0;
    for (int i = 0; i < 2; i++) holders0 += fed_cash_cents(&p[i].c);
    opt_t pr = {.bearer = token, .idem = "predict-1", .images = 2, .field = "image", .seed = 11};
    for (int i = 0; i < 2; i++) {
        r = http("POST", "/api/v1/tasks/h1/predict?top=3", NULL, &pr);
        j = js(&r);
        EXPECT(r, 200, "predict (and its retry)");
        cJSON *res = cJSON_GetObjectItemCaseSensitive(j, "results");
        CHECK_MSG(cJSON_GetArraySize(res) == 2 && !strcmp(jstr(j, "fee"), "0.20") && !strcmp(jstr(j, "balance"), "10.80"),
                  "prediction %s", r.body);
        cJSON_Delete(j), done(&r);
    }
    cash_of(token, cash);
    CHECK_MSG(!strcmp(cash, "10.80"), "after a prediction and its retry: %s", cash);
    double holders1 = 0;
    for (int i = 0; i < 2; i++) holders1 += fed_cash_cents(&p[i].c);
    CHECK_MSG(holders1 - holders0 == 20, "the shareholders received %.0f cents of a 20-cent fee", holders1 - holders0);
    /* one raw PNG body */
    size_t plen;
    uint8_t *png = ti_encode('p', 1, 16, 16, 1, 5, &plen);
    opt_t raw = {.bearer = token, .raw = png, .raw_len = plen};
    r = http("POST", "/api/v1/tasks/h1/predict", NULL, &raw);
    EXPECT(r, 200, "predict a raw PNG body");
    done(&r), free(png);
    cash_of(token, cash);
    CHECK_MSG(!strcmp(cash, "10.70"), "after the raw prediction: %s", cash);
    /* hostile uploads change nothing */
    opt_t other = {.bearer = token, .images = 1, .field = "file", .seed = 1};
    r = http("POST", "/api/v1/tasks/h1/predict", NULL, &other);
    EXPECT(r, 400, "multipart with a field other than image");
    done(&r);
    opt_t many = {.bearer = token, .images = 65, .field = "image", .seed = 1};
    r = http("POST", "/api/v1/tasks/h1/predict", NULL, &many);
    CHECK_MSG(r.status == 413 || r.rc != CURLE_OK, "65 images: HTTP %ld curl %d %s", r.status, (int)r.rc, r.body);
    done(&r);
    uint8_t junk[300];
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = (uint8_t)(i * 37 + 11);
    opt_t corrupt = {.bearer = token, .raw = junk, .raw_len = sizeof junk};
    r = http("POST", "/api/v1/tasks/h1/predict", NULL, &corrupt);
    CHECK_MSG(r.status == 400 || (r.status == 200 && strstr(r.body, "\"fee\":\"0.00\"")), "a corrupt image: HTTP %ld %s",
              r.status, r.body);
    done(&r);
    cash_of(token, cash);
    CHECK_MSG(!strcmp(cash, "10.70"), "after hostile uploads: %s", cash);

    /* history, newest first: the corrupt image's hold voided (nothing charged), then the raw
     * prediction's hold and its post with the before/after balances; the next page follows */
    r = http("GET", "/api/v1/account/history?limit=4", NULL, &me);
    j = js(&r);
    cJSON *e0 = cJSON_GetArrayItem(j, 0), *e2 = cJSON_GetArrayItem(j, 2), *e3 = cJSON_GetArrayItem(j, 3);
    CHECK_MSG(cJSON_GetArraySize(j) == 4 && !strcmp(jstr(e0, "type"), "void") && !strcmp(jstr(e2, "type"), "post") &&
                  !strcmp(jstr(e2, "before"), "10.80") && !strcmp(jstr(e2, "after"), "10.70"),
              "history %s", r.body);
    int seq3 = (int)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(e3, "seq"));
    cJSON_Delete(j), done(&r);
    snprintf(path, sizeof path, "/api/v1/account/history?limit=1&before=%d", seq3);
    r = http("GET", path, NULL, &me);
    j = js(&r);
    CHECK_MSG(cJSON_GetArraySize(j) == 1 &&
                  (int)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(j, 0), "seq")) == seq3 - 1,
              "the next page after seq %d: %s", seq3, r.body);
    cJSON_Delete(j), done(&r);
    r = http("GET", "/api/v1/account/history?limit=abc", NULL, &me);
    EXPECT(r, 400, "history with a bad limit");
    done(&r);

    /* API tokens: made, used, revoked */
    r = http("POST", "/api/v1/tokens", "{\"name\":\"script\"}", &me);
    j = js(&r);
    EXPECT(r, 201, "token create");
    char api[128];
    snprintf(api, sizeof api, "%s", jstr(j, "token"));
    int tid = (int)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(j, "id"));
    cJSON_Delete(j), done(&r);
    opt_t ap = {.bearer = api};
    r = http("GET", "/api/v1/account", NULL, &ap);
    EXPECT(r, 200, "account with the API token");
    done(&r);
    snprintf(path, sizeof path, "/api/v1/tokens/%d", tid);
    r = http("DELETE", path, NULL, &me);
    EXPECT(r, 200, "token revoke");
    done(&r);
    r = http("GET", "/api/v1/account", NULL, &ap);
    EXPECT(r, 401, "account with the revoked API token");
    done(&r);

    /* operator-only metrics; the route list against openapi.json */
    r = http("GET", "/metrics", NULL, &me);
    EXPECT(r, 403, "metrics with a user's token");
    done(&r);
    char opath[700], otoken[128] = "";
    snprintf(opath, sizeof opath, "%s/operator.token", home);
    snprintf(otoken, sizeof otoken, "%s", bf_slurp(opath));
    otoken[strcspn(otoken, "\n")] = 0;
    opt_t op = {.bearer = otoken};
    r = http("GET", "/metrics", NULL, &op);
    EXPECT(r, 200, "metrics with the operator token");
    CHECK_MSG(strstr(r.body, "blockfed_http_requests_total{") && strstr(r.body, "blockfed_predict_seconds_count ") &&
                  strstr(r.body, "blockfed_tasks{state=\"completed\"} 1\n") && strstr(r.body, "blockfed_rounds_total 1\n") &&
                  strstr(r.body, "blockfed_participants 2\n") && strstr(r.body, "blockfed_ledger_group_size_bucket{le=\"1\"}") &&
                  strstr(r.body, "blockfed_ledger_fee_operations_total "),
              "metrics %s", r.body);
    done(&r);
    r = http("GET", "/api/v1/operator/ledger/verify", NULL, &op);
    j = js(&r);
    EXPECT(r, 200, "ledger verify with the operator token");
    CHECK_MSG(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "ok")) && strlen(jstr(j, "head_hash")) == 64 &&
                  cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "checks")) >= 5,
              "verify %s", r.body);
    cJSON_Delete(j), done(&r);
    r = http("GET", "/api/v1/operator/ledger/verify", NULL, &me);
    EXPECT(r, 403, "ledger verify with a user's token");
    done(&r);
    opt_t opc = {.bearer = otoken, .idem = NULL};
    for (int i = 0; i < 2; i++) { /* the same ref twice: credited once */
        r = http("POST", "/api/v1/operator/deposit", "{\"user\":\"wendy\",\"amount\":\"2.00\",\"ref\":\"bank-77\"}", &opc);
        EXPECT(r, 200, "operator deposit (and its repeat)");
        done(&r);
    }
    r = http("POST", "/api/v1/operator/deposit", "{\"user\":\"wendy\",\"amount\":\"3.00\",\"ref\":\"bank-77\"}", &opc);
    EXPECT(r, 409, "the same ref for another amount");
    done(&r);
    cash_of(token, cash);
    CHECK_MSG(!strcmp(cash, "12.70"), "after a deposit and its repeat: %s", cash);
    r = http("GET", "/api/v1/operator/balances", NULL, &op);
    EXPECT(r, 200, "operator balances");
    CHECK_MSG(strstr(r.body, "\"platform_external\""), "balances %s", r.body);
    done(&r);

    /* alice's revenues: per task, and payout by payout, summing to what she received */
    r = http("GET", "/api/v1/account/revenues?limit=1000", NULL, &at);
    j = js(&r);
    EXPECT(r, 200, "alice's revenues");
    {
        cJSON *rt = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "tasks"), 0);
        cJSON *po = cJSON_GetObjectItemCaseSensitive(j, "payouts"), *x;
        int64_t sum = 0, received = -1;
        bf_err_t e;
        cJSON_ArrayForEach(x, po) {
            int64_t cents = -1;
            CHECK_MSG(!strcmp(jstr(x, "task"), "h1") && !bf_money_parse_amount(jstr(x, "amount"), 2, &cents, &e) && cents > 0,
                      "payout %s", r.body);
            sum += cents;
        }
        CHECK_MSG(rt && !strcmp(jstr(rt, "task"), "h1") && !bf_money_parse_amount(jstr(rt, "received"), 2, &received, &e) &&
                      received > 0 && received == sum && cJSON_GetArraySize(po) > 0 &&
                      cJSON_GetObjectItemCaseSensitive(rt, "payouts")->valuedouble == cJSON_GetArraySize(po),
                  "revenues: received %lld, payouts sum to %lld: %s", (long long)received, (long long)sum, r.body);
    }
    cJSON_Delete(j), done(&r);
    r = http("GET", "/api/v1/account/revenues?limit=0", NULL, &at);
    EXPECT(r, 400, "revenues with limit=0");
    done(&r);

    /* money out over HTTPS: held at once, once per idempotency key; the operator pays it out */
    opt_t wd = {.bearer = token};
    const char *wbody = "{\"amount\":\"2.70\",\"request\":\"wendy-out-1\"}";
    double wid[2] = {0, 0};
    for (int i = 0; i < 2; i++) {
        r = http("POST", "/api/v1/account/withdrawals", wbody, &wd);
        j = js(&r);
        EXPECT(r, 201, "withdrawal (and its retry)");
        cJSON *w = cJSON_GetObjectItemCaseSensitive(j, "withdrawal");
        wid[i] = cJSON_IsNumber(w) ? w->valuedouble : -1;
        CHECK_MSG(!strcmp(jstr(j, "status"), "pending") && !strcmp(jstr(j, "cash_available"), "10.00") &&
                      !strcmp(jstr(j, "cash"), "12.70"),
                  "withdrawal %s", r.body);
        cJSON_Delete(j), done(&r);
    }
    CHECK_MSG(wid[0] > 0 && wid[0] == wid[1], "the retry answers the same withdrawal: %.0f, %.0f", wid[0], wid[1]);
    r = http("POST", "/api/v1/account/withdrawals", "{\"amount\":\"10.01\"}", &wd);
    EXPECT(r, 402, "withdrawing more than the available cash");
    done(&r);
    r = http("POST", "/api/v1/account/withdrawals", "{\"amount\":\"-1\"}", &wd);
    EXPECT(r, 400, "a negative withdrawal");
    done(&r);
    r = http("POST", "/api/v1/account/withdrawals", "{\"amount\":\"1.00\",\"iban\":\"x\"}", &wd);
    EXPECT(r, 400, "a withdrawal with an unknown field");
    done(&r);
    r = http("GET", "/api/v1/operator/summary", NULL, &op);
    j = js(&r);
    EXPECT(r, 200, "operator summary");
    CHECK_MSG(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "ok")) && strlen(jstr(j, "chain_head")) == 64 &&
                  cJSON_GetObjectItemCaseSensitive(j, "pending_withdrawals")->valuedouble == 1 &&
                  cJSON_GetObjectItemCaseSensitive(j, "entries")->valuedouble > 10 && strstr(r.body, "\"user_cash\""),
              "summary %s", r.body);
    cJSON_Delete(j), done(&r);
    r = http("GET", "/api/v1/operator/summary", NULL, &me);
    EXPECT(r, 403, "operator summary with a user's token");
    done(&r);
    char wout[720], widarg[32];
    snprintf(wout, sizeof wout, "%s.payout", home);
    snprintf(widarg, sizeof widarg, "%.0f", wid[0]);
    int wrc = bf_spawn(coord, (const char *const[]){"ledger", "payout", widarg, "--ref", "wire-991", "--home", home, NULL}, wout, 1);
    CHECK_MSG(wrc == 0, "ledger payout: exit %d: %s", wrc, bf_slurp(wout));
    r = http("GET", "/api/v1/account/withdrawals", NULL, &wd);
    j = js(&r);
    EXPECT(r, 200, "wendy's withdrawals");
    CHECK_MSG(cJSON_GetArraySize(j) == 1 && !strcmp(jstr(cJSON_GetArrayItem(j, 0), "status"), "paid") &&
                  !strcmp(jstr(cJSON_GetArrayItem(j, 0), "ref"), "wire-991") &&
                  !strcmp(jstr(cJSON_GetArrayItem(j, 0), "amount"), "2.70"),
              "withdrawals %s", r.body);
    cJSON_Delete(j), done(&r);
    cash_of(token, cash);
    CHECK_MSG(!strcmp(cash, "10.00"), "after the payout: %s", cash);
    r = http("GET", "/api/v1/openapi.json", NULL, NULL);
    cJSON *doc = js(&r), *paths = cJSON_GetObjectItemCaseSensitive(doc, "paths");
    EXPECT(r, 200, "openapi.json");
    done(&r);
    char rout[700];
    snprintf(rout, sizeof rout, "%s.routes", home);
    CHECK(bf_spawn(coord, (const char *const[]){"routes", NULL}, rout, 1) == 0);
    int nroutes = 0;
    for (char *line = strtok(bf_slurp(rout), "\n"); line; line = strtok(NULL, "\n"), nroutes++) {
        char method[16], rpath[200];
        CHECK(sscanf(line, "%15s %199s", method, rpath) == 2);
        for (char *m = method; *m; m++) *m = (char)(*m - 'A' + 'a');
        cJSON *item = cJSON_GetObjectItemCaseSensitive(paths, rpath);
        CHECK_MSG(item && cJSON_GetObjectItemCaseSensitive(item, method), "route %s %s is not in openapi.json", method, rpath);
    }
    CHECK(nroutes >= 15);
    cJSON_Delete(doc);

    /* logout ends the session; failed logins lock the user out */
    opt_t out = {.bearer = token};
    r = http("POST", "/api/v1/auth/logout", NULL, &out);
    EXPECT(r, 200, "logout");
    done(&r);
    r = http("GET", "/api/v1/account", NULL, &me);
    EXPECT(r, 401, "account after logout");
    done(&r);
    for (int i = 0; i < 5; i++) {
        r = http("POST", "/api/v1/auth/login", "{\"username\":\"wendy\",\"password\":\"not it at all\"}", NULL);
        /* the address had one failure before: the fifth may already be refused */
        CHECK_MSG(r.status == 401 || (i == 4 && r.status == 429), "failed login %d: HTTP %ld %s", i + 1, r.status, r.body);
        done(&r);
    }
    r = http("POST", "/api/v1/auth/login", "{\"username\":\"wendy\",\"password\":\"correct horse\"}", NULL);
    EXPECT(r, 429, "login after 5 failures, with the right password");
    done(&r);

    fed_stop(pid, SIGTERM);
    /* plain HTTP off loopback is refused at start */
    char iout[720];
    snprintf(iout, sizeof iout, "%s.insecure", home);
    int irc = run_with_stdin(coord, (const char *const[]){"run", "--home", home, "--bind", ENDPOINT, "--http", "0.0.0.0:27795",
                                                          "--http-insecure", NULL}, "/dev/null", iout);
    CHECK_MSG(irc != 0 && strstr(bf_slurp(iout), "loopback"), "--http-insecure on 0.0.0.0: exit %d: %s", irc, bf_slurp(iout));
    fed_client_t nobody = {0}; /* the creator is a web user */
    fed_finish(coord, home, p, 2, &nobody);
    curl_global_cleanup();
    return bf_test_done("test_http_api");
}
