/* profile.c: the participant's profile directory (bf_profile.h): where it is, creating it with
 * safe modes, the key pair files, reading and atomically writing DIR/profile; and the local
 * checks of what the user types (server key, endpoint, names, amounts) before anything is sent. */
#include "bf_profile.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int bf_profile_home(const char *home, char *out, size_t n, bf_err_t *err) {
    const char *env = getenv("BLOCKFED_HOME"), *h = getenv("HOME");
    int len;
    if (home && *home) len = snprintf(out, n, "%s", home);
    else if (env && *env) len = snprintf(out, n, "%s", env);
    else if (h && *h) len = snprintf(out, n, "%s/.blockfed", h);
    else return bf_err_set(err, "no profile directory: pass --home DIR or set BLOCKFED_HOME or HOME");
    if (len < 0 || (size_t)len >= n) return bf_err_set(err, "profile directory path is too long");
    return 0;
}

/* ---- checks ------------------------------------------------------------------------------ */

int bf_check_server_key(const char *key, bf_err_t *err) {
    if (!key) return bf_err_set(err, "server key missing");
    if (strlen(key) != BF_PROFILE_KEY_LEN)
        return bf_err_set(err, "server key must be %d characters of Z85 (as printed by blockfed-coordinator init), got %zu",
                          BF_PROFILE_KEY_LEN, strlen(key));
    uint8_t bin[32];
    if (!zmq_z85_decode(bin, key)) return bf_err_set(err, "server key is not valid Z85");
    return 0;
}

static int valid_endpoint_char(unsigned char c) { return c > 0x20 && c < 0x7f; }

int bf_check_endpoint(const char *e, bf_err_t *err) {
    if (!e || !*e) return bf_err_set(err, "coordinator endpoint missing");
    if (strlen(e) >= BF_PROFILE_MAX_ENDPOINT) return bf_err_set(err, "coordinator endpoint is too long");
    for (const char *s = e; *s; s++)
        if (!valid_endpoint_char((unsigned char)*s))
            return bf_err_set(err, "coordinator endpoint contains a space or control character");
    if (!strncmp(e, "ipc://", 6) && e[6]) return 0;
    if (!strncmp(e, "inproc://", 9) && e[9]) return 0;
    if (strncmp(e, "tcp://", 6))
        return bf_err_set(err, "coordinator endpoint must be tcp://HOST:PORT (or ipc://, inproc://), got '%s'", e);
    const char *colon = strrchr(e + 6, ':');
    if (!colon || colon == e + 6 || !colon[1])
        return bf_err_set(err, "coordinator endpoint needs a host and a port: tcp://HOST:PORT, got '%s'", e);
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 1 || port > 65535) return bf_err_set(err, "bad port in coordinator endpoint '%s'", e);
    if (strchr(e + 6, '*')) return bf_err_set(err, "coordinator endpoint '%s' is a bind address, not one to connect to", e);
    return 0;
}

int bf_endpoint_is_loopback(const char *e) {
    bf_err_t err;
    if (!e || bf_check_endpoint(e, &err)) return 0;
    if (!strncmp(e, "ipc://", 6) || !strncmp(e, "inproc://", 9)) return 1;
    if (strncmp(e, "tcp://", 6)) return 0;
    const char *host = e + 6, *colon = strrchr(host, ':');
    if (!colon) return 0;
    size_t n = (size_t)(colon - host);
    if (n == 9 && !strncmp(host, "localhost", 9)) return 1;
    if (n == 5 && !strncmp(host, "[::1]", 5)) return 1;
    /* 127.0.0.0/8: four dotted decimal octets, the first 127 */
    if (n < 9 || strncmp(host, "127.", 4)) return 0;
    int dots = 0, digits = 0;
    for (size_t i = 4; i < n; i++) {
        if (host[i] == '.') {
            if (!digits) return 0;
            dots++, digits = 0;
        } else if (isdigit((unsigned char)host[i]) && ++digits <= 3) {
        } else
            return 0;
    }
    return dots == 2 && digits;
}

int bf_check_name(const char *s, size_t max, const char *what, bf_err_t *err) {
    size_t n = s ? strlen(s) : 0;
    if (n < 1 || n > max) return bf_err_set(err, "%s must be 1..%zu characters", what, max);
    if (s[0] == '.' || s[0] == '-') return bf_err_set(err, "%s must not start with '.' or '-'", what);
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '.' && s[i] != '-')
            return bf_err_set(err, "%s may contain only A-Z a-z 0-9 _ . -, got '%s'", what, s);
    return 0;
}

int bf_check_amount(const char *s, bf_err_t *err) {
    size_t i = 0, intd = 0, frac = 0;
    if (!s) return bf_err_set(err, "amount missing");
    while (isdigit((unsigned char)s[i])) i++, intd++;
    if (s[i] == '.') {
        i++;
        while (isdigit((unsigned char)s[i])) i++, frac++;
        if (!frac) return bf_err_set(err, "amount '%s' needs digits after the decimal point", s);
    }
    if (s[i] || !intd || frac > 2 || intd > 15)
        return bf_err_set(err, "amount must be a plain decimal with at most 2 decimals (e.g. 25.50), got '%s'", s);
    return 0;
}

/* ---- files ------------------------------------------------------------------------------- */

int bf_profile_mkdir(const char *home, bf_err_t *err) {
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s", home) >= (int)sizeof path) return bf_err_set(err, "path too long");
    /* parents first (0700 too: they are usually just ~/.blockfed's parent, which exists) */
    for (char *s = path + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        if (mkdir(path, 0700) && errno != EEXIST) return bf_err_set(err, "mkdir %s: %s", path, strerror(errno));
        *s = '/';
    }
    if (mkdir(home, 0700) && errno != EEXIST) return bf_err_set(err, "mkdir %s: %s", home, strerror(errno));
    struct stat st;
    if (stat(home, &st) || !S_ISDIR(st.st_mode)) return bf_err_set(err, "%s is not a directory", home);
    if (st.st_mode & 022)
        return bf_err_set(err, "profile directory %s is writable by group or others (chmod 700 it)", home);
    return 0;
}

int bf_profile_new_cert(const char *home, const char *user, zcert_t **out, bf_err_t *err) {
    char path[PATH_MAX + 32], secret[PATH_MAX + 40];
    snprintf(path, sizeof path, "%s/client.cert", home);
    snprintf(secret, sizeof secret, "%s/client.cert_secret", home);
    zcert_t *cert = zcert_new();
    if (!cert) return bf_err_set(err, "cannot create a CURVE key pair (libzmq without CURVE?)");
    zcert_set_meta(cert, "name", "%s", user);
    zcert_set_meta(cert, "created-by", "blockfed-client register");
    /* zcert_save writes with the process umask: the secret is restricted right after, and the
     * directory (0700) keeps anybody else out in between. */
    if (zcert_save(cert, path) || chmod(secret, 0600)) {
        zcert_destroy(&cert);
        return bf_err_set(err, "cannot write %s: %s", path, strerror(errno));
    }
    *out = cert;
    return 0;
}

static int parse_line(bf_profile_t *p, char *line, int lineno, bf_err_t *err) {
    char *eq = strchr(line, '=');
    if (!eq) return bf_err_set(err, "line %d: expected key = value", lineno);
    char *k = line, *v = eq + 1, *e = eq;
    while (e > k && isspace((unsigned char)e[-1])) e--;
    *e = 0;
    while (isspace((unsigned char)*v)) v++;
    e = v + strlen(v);
    while (e > v && isspace((unsigned char)e[-1])) e--;
    *e = 0;
    char *dst = NULL;
    size_t cap = 0;
    if (!strcmp(k, "coordinator")) dst = p->coordinator, cap = sizeof p->coordinator;
    else if (!strcmp(k, "server_key")) dst = p->server_key, cap = sizeof p->server_key;
    else if (!strcmp(k, "user")) dst = p->user, cap = sizeof p->user;
    else if (!strcmp(k, "insecure") || !strcmp(k, "registered")) {
        if (strcmp(v, "0") && strcmp(v, "1")) return bf_err_set(err, "line %d: %s must be 0 or 1", lineno, k);
        *(!strcmp(k, "insecure") ? &p->insecure : &p->registered) = v[0] == '1';
        return 0;
    } else
        return 0; /* unknown keys: written by a newer client; ignore */
    if (strlen(v) >= cap) return bf_err_set(err, "line %d: %s is too long", lineno, k);
    strcpy(dst, v);
    return 0;
}

int bf_profile_load_cert(const char *home, zcert_t **cert, bf_err_t *err) {
    char path[PATH_MAX + 32], secret[PATH_MAX + 40];
    snprintf(path, sizeof path, "%s/client.cert", home);
    snprintf(secret, sizeof secret, "%s/client.cert_secret", home);
    struct stat st;
    if (stat(secret, &st)) return bf_err_set(err, "%s: %s", secret, strerror(errno));
    if (st.st_mode & 077)
        return bf_err_set(err, "%s is readable by group or others (chmod 600 it; a leaked key lets others act for you)", secret);
    if (access(path, R_OK)) return bf_err_set(err, "%s: %s", path, strerror(errno));
    /* zcert_load reads the _secret file next to the public one */
    zcert_t *c = zcert_load(path);
    if (!c) return bf_err_set(err, "%s: not a valid certificate", path);
    static const uint8_t zero[32];
    if (!memcmp(zcert_secret_key(c), zero, 32) || strlen(zcert_public_txt(c)) != BF_PROFILE_KEY_LEN) {
        zcert_destroy(&c);
        return bf_err_set(err, "%s: certificate has no valid key pair", path);
    }
    if (cert) *cert = c;
    else zcert_destroy(&c);
    return 0;
}

int bf_profile_load(const char *home, bf_profile_t *p, zcert_t **cert, bf_err_t *err) {
    memset(p, 0, sizeof *p);
    if (cert) *cert = NULL;
    if (snprintf(p->home, sizeof p->home, "%s", home) >= (int)sizeof p->home) return bf_err_set(err, "path too long");
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/profile", home);
    FILE *f = fopen(path, "r");
    if (!f)
        return bf_err_set(err, "no profile in %s (%s); run 'blockfed-client register USER --coordinator ENDPOINT --server-key KEY' first",
                          home, strerror(errno));
    char line[1024];
    int lineno = 0, rc = 0;
    while (!rc && fgets(line, sizeof line, f)) {
        lineno++;
        size_t n = strlen(line);
        if (n == sizeof line - 1 && line[n - 1] != '\n') rc = bf_err_set(err, "line %d is too long", lineno);
        else if (line[0] == '#' || strspn(line, " \t\r\n") == n) continue;
        else rc = parse_line(p, line, lineno, err);
    }
    fclose(f);
    if (rc) return bf_err_prefix(err, "%s: ", path);
    if (bf_check_endpoint(p->coordinator, err) || bf_check_name(p->user, 32, "user", err) ||
        (!p->insecure && bf_check_server_key(p->server_key, err)))
        return bf_err_prefix(err, "%s: ", path);
    if (p->insecure && !bf_endpoint_is_loopback(p->coordinator))
        return bf_err_set(err, "%s: insecure mode is allowed only for loopback endpoints, not %s", path, p->coordinator);
    return bf_profile_load_cert(home, cert, err);
}

int bf_profile_save(const bf_profile_t *p, bf_err_t *err) {
    char path[PATH_MAX + 16], tmp[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/profile", p->home);
    snprintf(tmp, sizeof tmp, "%s/profile.tmp.%d", p->home, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        if (fd >= 0) close(fd);
        return bf_err_set(err, "cannot write %s: %s", tmp, strerror(errno));
    }
    fprintf(f, "# blockfed-client profile (written by 'register')\n");
    fprintf(f, "coordinator = %s\nserver_key = %s\nuser = %s\ninsecure = %d\nregistered = %d\n", p->coordinator,
            p->server_key, p->user, p->insecure ? 1 : 0, p->registered ? 1 : 0);
    int bad = fflush(f) || fsync(fileno(f));
    bad |= fclose(f);
    if (bad || rename(tmp, path)) {
        int e = errno;
        unlink(tmp);
        return bf_err_set(err, "cannot write %s: %s", path, strerror(e));
    }
    return 0;
}
