/* test_client_profile.c: the participant's profile (create, save, load, every validation and
 * permission refusal), the insecure-endpoint rule, endpoint/key/name/amount checks. */
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bf_profile.h"
#include "test.h"

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static void test_amounts(void) {
    bf_err_t err;
    const char *good[] = {"0", "1", "25.50", "25.5", "100", "0.01", "999999999999999"};
    const char *bad[] = {"", "-1", "+1", "1e5", "1.", ".5", "1.234", "1,5", " 1", "1 ", "0x10", "nan", "inf",
                         "1000000000000000", "1.2.3", "12a"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) CHECK_MSG(!bf_check_amount(good[i], &err), "%s", good[i]);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) CHECK_MSG(bf_check_amount(bad[i], &err), "%s", bad[i]);
}

static void test_endpoints(void) {
    bf_err_t err;
    CHECK(!bf_check_endpoint("tcp://127.0.0.1:7700", &err));
    CHECK(!bf_check_endpoint("tcp://coordinator.example.org:7700", &err));
    CHECK(!bf_check_endpoint("ipc:///tmp/x", &err));
    CHECK(bf_check_endpoint("tcp://host", &err));
    CHECK(bf_check_endpoint("tcp://host:0", &err));
    CHECK(bf_check_endpoint("tcp://host:99999", &err));
    CHECK(bf_check_endpoint("tcp://*:7700", &err));
    CHECK(bf_check_endpoint("udp://host:1", &err));
    CHECK(bf_check_endpoint("tcp://ho st:1", &err));
    CHECK(bf_check_endpoint("", &err));
    /* plain TCP only where it cannot leave the machine */
    CHECK(bf_endpoint_is_loopback("tcp://127.0.0.1:7700"));
    CHECK(bf_endpoint_is_loopback("tcp://127.1.2.3:7700"));
    CHECK(bf_endpoint_is_loopback("tcp://localhost:7700"));
    CHECK(bf_endpoint_is_loopback("tcp://[::1]:7700"));
    CHECK(bf_endpoint_is_loopback("ipc:///tmp/sock"));
    CHECK(bf_endpoint_is_loopback("inproc://x"));
    CHECK(!bf_endpoint_is_loopback("tcp://10.0.0.1:7700"));
    CHECK(!bf_endpoint_is_loopback("tcp://127.0.0.1.evil.com:7700"));
    CHECK(!bf_endpoint_is_loopback("tcp://localhost.evil.com:7700"));
    CHECK(!bf_endpoint_is_loopback("tcp://127.0.0.1:7700@evil"));
    CHECK(!bf_endpoint_is_loopback("tcp://1270.0.0.1:7700"));
    CHECK(!bf_endpoint_is_loopback("tcp://example.org:7700"));
    CHECK(!bf_endpoint_is_loopback("tcp://eth0;127.0.0.1:7700"));
}

static void test_names_and_keys(void) {
    bf_err_t err;
    CHECK(!bf_check_name("alice", 32, "user", &err));
    CHECK(!bf_check_name("a.b-c_9", 32, "user", &err));
    CHECK(bf_check_name("", 32, "user", &err));
    CHECK(bf_check_name("-x", 32, "user", &err));
    CHECK(bf_check_name(".x", 32, "user", &err));
    CHECK(bf_check_name("a/b", 32, "user", &err));
    CHECK(bf_check_name("é", 32, "user", &err));
    CHECK(bf_check_name("abcdefghijklmnopqrstuvwxyz0123456", 32, "user", &err)); /* 33 */
    zcert_t *c = zcert_new();
    CHECK(!bf_check_server_key(zcert_public_txt(c), &err));
    CHECK(bf_check_server_key("short", &err));
    CHECK(strstr(err.msg, "40 characters") != NULL);
    char bad[41];
    memcpy(bad, zcert_public_txt(c), 41);
    bad[3] = '"'; /* not in the Z85 alphabet */
    CHECK(bf_check_server_key(bad, &err));
    zcert_destroy(&c);
}

static void test_profile_files(void) {
    bf_err_t err;
    char home[512], path[600];
    snprintf(home, sizeof home, "%s/client_profile_%d/nested/home", bf_test_tmpdir(), (int)getpid());
    CHECK_MSG(!bf_profile_mkdir(home, &err), "%s", err.msg);
    struct stat st;
    CHECK(!stat(home, &st) && (st.st_mode & 0777) == 0700);

    /* nothing there yet */
    bf_profile_t p;
    CHECK(bf_profile_load(home, &p, NULL, &err));
    CHECK(strstr(err.msg, "register") != NULL);

    zcert_t *cert = NULL;
    CHECK_MSG(!bf_profile_new_cert(home, "alice", &cert, &err), "%s", err.msg);
    snprintf(path, sizeof path, "%s/client.cert_secret", home);
    CHECK(!stat(path, &st) && (st.st_mode & 077) == 0);
    zcert_t *server = zcert_new();
    bf_profile_t w = {.registered = 1};
    snprintf(w.home, sizeof w.home, "%s", home);
    snprintf(w.coordinator, sizeof w.coordinator, "tcp://coord.example.org:7700");
    snprintf(w.server_key, sizeof w.server_key, "%s", zcert_public_txt(server));
    snprintf(w.user, sizeof w.user, "alice");
    CHECK_MSG(!bf_profile_save(&w, &err), "%s", err.msg);
    snprintf(path, sizeof path, "%s/profile", home);
    CHECK(!stat(path, &st) && (st.st_mode & 077) == 0);

    zcert_t *loaded = NULL;
    CHECK_MSG(!bf_profile_load(home, &p, &loaded, &err), "%s", err.msg);
    CHECK(!strcmp(p.user, "alice") && p.registered && !p.insecure);
    CHECK(!strcmp(p.server_key, zcert_public_txt(server)));
    CHECK(!strcmp(p.coordinator, "tcp://coord.example.org:7700"));
    CHECK(loaded && !strcmp(zcert_public_txt(loaded), zcert_public_txt(cert)));
    CHECK(loaded && !strcmp(zcert_secret_txt(loaded), zcert_secret_txt(cert)));
    zcert_destroy(&loaded);

    /* bad server key length */
    char text[1024];
    snprintf(text, sizeof text, "coordinator = tcp://coord.example.org:7700\nserver_key = abc\nuser = alice\n");
    write_file(path, text);
    CHECK(bf_profile_load(home, &p, NULL, &err) && strstr(err.msg, "40"));
    /* insecure with a remote endpoint */
    snprintf(text, sizeof text, "coordinator = tcp://coord.example.org:7700\nuser = alice\ninsecure = 1\n");
    write_file(path, text);
    CHECK(bf_profile_load(home, &p, NULL, &err) && strstr(err.msg, "loopback"));
    /* insecure on loopback needs no server key; comments, blank lines and unknown keys are fine */
    snprintf(text, sizeof text, "# c\n\ncoordinator = tcp://127.0.0.1:7700\nuser = alice\ninsecure = 1\nfuture = x\n");
    write_file(path, text);
    CHECK_MSG(!bf_profile_load(home, &p, NULL, &err), "%s", err.msg);
    CHECK(p.insecure && !p.registered);
    /* malformed lines and values */
    write_file(path, "coordinator tcp://127.0.0.1:7700\n");
    CHECK(bf_profile_load(home, &p, NULL, &err));
    write_file(path, "coordinator = tcp://127.0.0.1:7700\nuser = alice\ninsecure = yes\n");
    CHECK(bf_profile_load(home, &p, NULL, &err));
    write_file(path, "coordinator = tcp://127.0.0.1:7700\nuser = ../x\ninsecure = 1\n");
    CHECK(bf_profile_load(home, &p, NULL, &err));
    CHECK_MSG(!bf_profile_save(&w, &err), "%s", err.msg);

    /* permissions: a secret others can read is refused */
    snprintf(path, sizeof path, "%s/client.cert_secret", home);
    chmod(path, 0644);
    CHECK(bf_profile_load(home, &p, NULL, &err) && strstr(err.msg, "chmod 600"));
    chmod(path, 0600);
    CHECK(!bf_profile_load(home, &p, NULL, &err));
    /* missing certificate files */
    char aside[620];
    snprintf(aside, sizeof aside, "%s.aside", path);
    rename(path, aside);
    CHECK(bf_profile_load(home, &p, NULL, &err));
    rename(aside, path);
    snprintf(path, sizeof path, "%s/client.cert", home);
    snprintf(aside, sizeof aside, "%s.aside", path);
    rename(path, aside);
    CHECK(bf_profile_load(home, &p, NULL, &err));
    rename(aside, path);
    CHECK(!bf_profile_load(home, &p, NULL, &err));
    /* a corrupt certificate (the secret file holds both keys) */
    snprintf(path, sizeof path, "%s/client.cert_secret", home);
    write_file(path, "garbage\n");
    CHECK(bf_profile_load(home, &p, NULL, &err));
    /* a group-writable profile directory is refused */
    chmod(home, 0770);
    CHECK(bf_profile_mkdir(home, &err) && strstr(err.msg, "writable"));
    chmod(home, 0700);
    zcert_destroy(&cert);
    zcert_destroy(&server);
}

static void test_home(void) {
    char out[256];
    bf_err_t err;
    CHECK(!bf_profile_home("/x/y", out, sizeof out, &err) && !strcmp(out, "/x/y"));
    setenv("BLOCKFED_HOME", "/from/env", 1);
    CHECK(!bf_profile_home(NULL, out, sizeof out, &err) && !strcmp(out, "/from/env"));
    unsetenv("BLOCKFED_HOME");
    setenv("HOME", "/home/u", 1);
    CHECK(!bf_profile_home(NULL, out, sizeof out, &err) && !strcmp(out, "/home/u/.blockfed"));
}

int main(void) {
    test_amounts();
    test_endpoints();
    test_names_and_keys();
    test_profile_files();
    test_home();
    return bf_test_done("test_client_profile");
}
