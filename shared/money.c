/* money.c: exact money arithmetic (bf_money.h). Decimal strings to minor units, largest-remainder splits
 * and the cumulative-entitlement apportionment of usage fees. Integers only: a float anywhere in
 * here could silently move a cent. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf_money.h"

int bf_money_parse_amount(const char *s, int scale, int64_t *out, bf_err_t *err) {
    if (!s || !*s) return bf_err_set(err, "empty amount");
    if (scale < 0 || scale > 18) return bf_err_set(err, "bad scale %d", scale);
    int64_t v = 0;
    int frac_digits = -1; /* -1: no '.' seen yet */
    const char *p = s;
    for (; *p; p++) {
        if (*p == '.') {
            /* One dot, with digits on both sides: "1." and ".5" are ambiguous typing, reject them. */
            if (frac_digits >= 0 || p == s || !p[1]) return bf_err_set(err, "malformed amount '%s'", s);
            frac_digits = 0;
            continue;
        }
        if (*p < '0' || *p > '9') return bf_err_set(err, "malformed amount '%s'", s);
        if (frac_digits >= 0 && ++frac_digits > scale)
            return bf_err_set(err, "amount '%s' has more than %d decimal places", s, scale);
        if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, *p - '0', &v))
            return bf_err_set(err, "amount '%s' overflows", s);
    }
    for (int d = frac_digits < 0 ? 0 : frac_digits; d < scale; d++)
        if (__builtin_mul_overflow(v, 10, &v)) return bf_err_set(err, "amount '%s' overflows", s);
    *out = v;
    return 0;
}

char *bf_money_format_amount(int64_t v, int scale, char buf[32]) {
    /* Work on the magnitude as unsigned so INT64_MIN formats correctly. */
    uint64_t m = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    char digits[24];
    int nd = snprintf(digits, sizeof digits, "%llu", (unsigned long long)m);
    char *o = buf;
    if (v < 0) *o++ = '-';
    if (scale <= 0) {
        memcpy(o, digits, (size_t)nd + 1);
        return buf;
    }
    int int_digits = nd - scale;
    if (int_digits <= 0) {
        *o++ = '0';
        *o++ = '.';
        for (int i = int_digits; i < 0; i++) *o++ = '0';
        memcpy(o, digits, (size_t)nd + 1);
    } else {
        memcpy(o, digits, (size_t)int_digits);
        o += int_digits;
        *o++ = '.';
        memcpy(o, digits + int_digits, (size_t)scale + 1);
    }
    return buf;
}

typedef struct {
    unsigned __int128 rem;
    int64_t key;
    size_t idx;
} lr_item_t;

/* Largest remainder first, then the smaller key: the documented tie rule. */
static int lr_cmp(const void *a, const void *b) {
    const lr_item_t *x = a, *y = b;
    if (x->rem != y->rem) return x->rem > y->rem ? -1 : 1;
    return x->key < y->key ? -1 : x->key > y->key;
}

int bf_money_split(int64_t total, size_t n, const int64_t *weights, const int64_t *keys,
                    int64_t *parts) {
    if (total < 0) return -1;
    unsigned __int128 W = 0; /* n int64 weights cannot overflow 128 bits */
    for (size_t i = 0; i < n; i++)
        if (weights[i] > 0) W += (uint64_t)weights[i];
    if (W == 0) return -1;
    lr_item_t *items = calloc(n ? n : 1, sizeof *items);
    if (!items) return -1;
    int64_t given = 0;
    for (size_t i = 0; i < n; i++) {
        items[i].key = keys[i];
        items[i].idx = i;
        parts[i] = 0;
        if (weights[i] <= 0) continue;
        unsigned __int128 prod = (unsigned __int128)(uint64_t)total * (uint64_t)weights[i];
        parts[i] = (int64_t)(prod / W); /* <= total, fits */
        items[i].rem = prod % W;
        given += parts[i];
    }
    qsort(items, n, sizeof *items, lr_cmp);
    /* Fewer than n units are left over (each floor loses < 1), and only positive weights have a
     * non-zero remainder or sort ahead of those with zero weight when remainders tie at 0; skip
     * non-positive weights explicitly so they never receive a unit. */
    int64_t left = total - given;
    for (size_t k = 0; k < n && left > 0; k++) {
        size_t i = items[k].idx;
        if (weights[i] <= 0) continue;
        parts[i]++;
        left--;
    }
    free(items);
    return left == 0 ? 0 : -1;
}

/* Holder i may receive its next unit once the cumulative total t makes it owed: paid_i < t*w_i/W,
 * i.e. paid_i*W < t*w_i. Its deadline is the first t at which it would fall a full unit behind:
 * ceil((paid_i+1)*W / w_i). Earliest deadline first keeps every holder within quota because the
 * unit jobs in any window of totals never outnumber the window (the weights sum to W). */
int bf_money_apportion(size_t n, const int64_t *weights, const int64_t *keys, const int64_t *paid,
                        int64_t total_before, int64_t amount, int64_t *add) {
    if (amount < 0 || total_before < 0) return -1;
    int64_t total_after;
    if (__builtin_add_overflow(total_before, amount, &total_after)) return -1;
    unsigned __int128 W = 0;
    int64_t sum_paid = 0;
    for (size_t i = 0; i < n; i++) {
        if (weights[i] < 0 || paid[i] < 0) return -1;
        W += (uint64_t)weights[i];
        if (__builtin_add_overflow(sum_paid, paid[i], &sum_paid)) return -1;
        add[i] = 0;
    }
    if (W == 0 || sum_paid != total_before) return -1;
    /* Holder i is owed its next unit from t = floor(paid_i*W/w_i) + 1 on, and its deadline is
     * ceil((paid_i+1)*W/w_i). Both change only when it is paid. Keeping paid_i*W as a quotient and
     * remainder by w_i (and W = a_i*w_i + b_i) makes each payment two additions instead of two
     * 128-bit divisions: the only divisions are n at the start. */
    typedef struct {
        unsigned __int128 a, b, q, r; /* W = a*w + b; paid*W = q*w + r */
        unsigned __int128 owed_from, deadline;
    } edf_t;
    edf_t stack[32], *e = stack;
    if (n > 32 && !(e = malloc(n * sizeof *e))) return -1;
    for (size_t i = 0; i < n; i++) {
        if (weights[i] == 0) continue;
        unsigned __int128 w = (uint64_t)weights[i], pw = (unsigned __int128)(uint64_t)paid[i] * W;
        e[i].a = W / w;
        e[i].b = W % w;
        e[i].q = pw / w;
        e[i].r = pw % w;
    }
    for (size_t i = 0; i < n; i++) {
        if (weights[i] == 0) continue;
        unsigned __int128 w = (uint64_t)weights[i], r1 = e[i].r + e[i].b, q1 = e[i].q + e[i].a;
        if (r1 >= w) r1 -= w, q1++;
        e[i].owed_from = e[i].q + 1;
        e[i].deadline = q1 + (r1 != 0);
    }
    /* The scan runs on 64-bit copies while every value fits (always, in practice); the 128-bit
     * values decide if one does not. A zero weight is never owed: its owed_from is the maximum. */
    uint64_t o64[32], d64[32];
    int narrow = n <= 32;
    for (size_t i = 0; i < n && narrow; i++) {
        if (weights[i] == 0) {
            o64[i] = d64[i] = UINT64_MAX;
            continue;
        }
        narrow = e[i].deadline < UINT64_MAX && e[i].owed_from < UINT64_MAX;
        o64[i] = (uint64_t)e[i].owed_from;
        d64[i] = (uint64_t)e[i].deadline;
    }
    int rc = 0;
    for (int64_t t = total_before + 1; t <= total_after; t++) {
        size_t best = n;
        if (narrow) {
            uint64_t ut = (uint64_t)t;
            for (size_t i = 0; i < n; i++) {
                if (o64[i] > ut) continue; /* not owed yet */
                if (best == n || d64[i] < d64[best] || (d64[i] == d64[best] && keys[i] < keys[best])) best = i;
            }
        } else {
            unsigned __int128 ut = (uint64_t)t;
            for (size_t i = 0; i < n; i++) {
                if (weights[i] == 0 || e[i].owed_from > ut) continue; /* not owed yet */
                if (best == n || e[i].deadline < e[best].deadline ||
                    (e[i].deadline == e[best].deadline && keys[i] < keys[best]))
                    best = i;
            }
        }
        if (best == n) { /* impossible when paid was within quota */
            rc = -1;
            break;
        }
        add[best]++;
        edf_t *x = &e[best];
        unsigned __int128 w = (uint64_t)weights[best];
        x->r += x->b; /* paid*W += W */
        x->q += x->a;
        if (x->r >= w) x->r -= w, x->q++;
        unsigned __int128 r1 = x->r + x->b, q1 = x->q + x->a;
        if (r1 >= w) r1 -= w, q1++;
        x->owed_from = x->q + 1;
        x->deadline = q1 + (r1 != 0);
        if (narrow) {
            narrow = x->deadline < UINT64_MAX && x->owed_from < UINT64_MAX;
            o64[best] = (uint64_t)x->owed_from;
            d64[best] = (uint64_t)x->deadline;
        }
    }
    if (e != stack) free(e);
    return rc;
}

int bf_money_price(int64_t base, int64_t per_unit, int64_t units, int64_t rate_num, int64_t rate_den,
                    int64_t *out, bf_err_t *err) {
    if (base < 0 || per_unit < 0 || units < 0 || rate_num < 0)
        return bf_err_set(err, "price: negative input");
    if (rate_den <= 0) return bf_err_set(err, "price: rate denominator must be positive");
    if (units == 0) return *out = 0, 0;
    /* Each factor < 2^63, so base + per_unit*units < 2^127 fits unsigned 128-bit; the product
     * with rate_num may not, so check it by division before multiplying. */
    unsigned __int128 sub = (unsigned __int128)per_unit * (uint64_t)units + (uint64_t)base;
    if (rate_num && sub > ~(unsigned __int128)0 / (uint64_t)rate_num)
        return bf_err_set(err, "price overflows");
    unsigned __int128 num = sub * (uint64_t)rate_num;
    unsigned __int128 q = num / (uint64_t)rate_den + (num % (uint64_t)rate_den != 0);
    if (q > (unsigned __int128)INT64_MAX) return bf_err_set(err, "price overflows");
    *out = (int64_t)q;
    return 0;
}

static int64_t gcd64(int64_t a, int64_t b) {
    while (b) {
        int64_t t = a % b;
        a = b, b = t;
    }
    return a;
}

int bf_money_parse_rate(const char *s, int64_t *num, int64_t *den, bf_err_t *err) {
    const char *slash = s ? strchr(s, '/') : NULL;
    int64_t n, d;
    if (!s) return bf_err_set(err, "missing rate");
    if (slash) {
        char a[32];
        size_t la = (size_t)(slash - s);
        if (la == 0 || la >= sizeof a) return bf_err_set(err, "rate '%s': expected N/D or a decimal", s);
        memcpy(a, s, la);
        a[la] = 0;
        if (bf_money_parse_amount(a, 0, &n, err) || bf_money_parse_amount(slash + 1, 0, &d, err))
            return bf_err_prefix(err, "rate '%s': ", s);
    } else {
        if (bf_money_parse_amount(s, 6, &n, err)) return bf_err_prefix(err, "rate '%s': ", s);
        d = 1000000;
    }
    if (d <= 0) return bf_err_set(err, "rate '%s': the denominator must be positive", s);
    if (n / d > BF_MONEY_RATE_MAX || (n / d == BF_MONEY_RATE_MAX && n % d)) return bf_err_set(err, "rate '%s' exceeds %d", s, BF_MONEY_RATE_MAX);
    int64_t g = n ? gcd64(n, d) : d;
    *num = n / g;
    *den = d / g;
    return 0;
}
