/* tls.c: the HTTPS API's self-signed certificate, written by `init` with OpenSSL: an ECDSA P-256
 * key (HOME/https.key, mode 0600) and an X.509 v3 certificate (HOME/https.crt) for localhost,
 * 127.0.0.1 and every --http-name, valid COORD_TLS_DAYS days. An operator with a certificate of
 * their own gives `run --tls-cert/--tls-key` instead. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "coord.h"

static int add_ext(X509 *x, int nid, const char *value) {
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    int ok = e && X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    return ok ? 0 : -1;
}

/* "DNS:localhost,IP:127.0.0.1,..." with each name as an IP entry if it parses as one. */
static int san_of(const char *const *names, int n, char *out, size_t cap) {
    size_t len = (size_t)snprintf(out, cap, "DNS:localhost,IP:127.0.0.1");
    for (int i = 0; i < n; i++) {
        unsigned char ip[16];
        const char *nm = names[i];
        int is_ip = inet_pton(AF_INET, nm, ip) == 1 || inet_pton(AF_INET6, nm, ip) == 1;
        if (!nm[0] || strlen(nm) > 253 || (!is_ip && strpbrk(nm, ",:= \t\r\n"))) return -1;
        len += (size_t)snprintf(out + len, len < cap ? cap - len : 0, ",%s:%s", is_ip ? "IP" : "DNS", nm);
    }
    return len < cap ? 0 : -1;
}

static int write_pem_key(const char *path, EVP_PKEY *k) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) return fd >= 0 ? close(fd), -1 : -1;
    fchmod(fd, 0600);
    int ok = PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL) == 1;
    return fclose(f) == 0 && ok ? 0 : -1;
}

int coord_tls_selfsigned(const char *home, const char *const *names, int n, bf_err_t *err) {
    char san[2048], crt[4200], key[4200], tmp[4300];
    if (san_of(names, n, san, sizeof san)) return bf_err_set(err, "--http-name: a host name or an IP address each");
    snprintf(crt, sizeof crt, "%s/https.crt", home);
    snprintf(key, sizeof key, "%s/https.key", home);
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    uint8_t serial[16];
    BIGNUM *bn = NULL;
    int rc = -1;
    if (!k || !x || RAND_bytes(serial, sizeof serial) != 1) goto out;
    serial[0] &= 0x7f; /* positive */
    bn = BN_bin2bn(serial, sizeof serial, NULL);
    X509_NAME *name = X509_get_subject_name(x);
    if (!bn || !X509_set_version(x, 2) || !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) ||
        !X509_gmtime_adj(X509_getm_notBefore(x), -300) ||
        !X509_gmtime_adj(X509_getm_notAfter(x), (long)COORD_TLS_DAYS * 86400) || !X509_set_pubkey(x, k) ||
        !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"blockfed-coordinator", -1, -1, 0) ||
        !X509_set_issuer_name(x, name) || add_ext(x, NID_subject_alt_name, san) ||
        add_ext(x, NID_basic_constraints, "critical,CA:FALSE") || add_ext(x, NID_key_usage, "critical,digitalSignature") ||
        add_ext(x, NID_ext_key_usage, "serverAuth") || add_ext(x, NID_subject_key_identifier, "hash") ||
        !X509_sign(x, k, EVP_sha256()))
        goto out;
    snprintf(tmp, sizeof tmp, "%s.tmp", crt);
    FILE *f = fopen(tmp, "w");
    int ok = f && PEM_write_X509(f, x) == 1;
    if (f) ok = fclose(f) == 0 && ok;
    if (!ok || write_pem_key(key, k) || rename(tmp, crt)) goto out;
    rc = 0;
out:
    if (rc) bf_err_set(err, "cannot write the HTTPS certificate and key in %s", home);
    BN_free(bn);
    X509_free(x);
    EVP_PKEY_free(k);
    return rc;
}

int coord_tls_fingerprint(const char *crt_path, char out[COORD_TLS_FP_MAX], bf_err_t *err) {
    FILE *f = fopen(crt_path, "r");
    X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    if (f) fclose(f);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    int ok = x && X509_digest(x, EVP_sha256(), md, &n) == 1 && n == 32;
    X509_free(x);
    if (!ok) return bf_err_set(err, "cannot read the certificate %s", crt_path);
    for (unsigned int i = 0; i < n; i++) snprintf(out + 3 * i, 4, "%02X%s", md[i], i + 1 < n ? ":" : "");
    return 0;
}
