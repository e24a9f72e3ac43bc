/* bf_money.h: exact money arithmetic in integer minor units: decimal strings to minor units and
 * back, price multipliers as exact fractions, prices, largest-remainder splits and the
 * cumulative-entitlement apportionment of usage fees. No floating point anywhere: a float here
 * could silently move a cent. Pure functions (no I/O, no state), shared by the ledger, the
 * coordinator and the participant's programs. */
#ifndef BF_MONEY_H
#define BF_MONEY_H

#include <stddef.h>
#include <stdint.h>

#include "bf_util.h"

/* Parses a non-negative decimal string with at most `scale` fraction digits into minor units:
 * ("0.50", 2) -> 50, ("12", 2) -> 1200, ("7", 0) -> 7. Rejects "", "-5", "+5", "1e3", " 1", "1.",
 * ".5", "0.001" (scale 2) and anything above INT64_MAX. Returns 0 or -1. */
int bf_money_parse_amount(const char *s, int scale, int64_t *out, bf_err_t *err);
/* Formats minor units as a decimal string ("-12.05"); buf needs 32 bytes. Returns buf. */
char *bf_money_format_amount(int64_t v, int scale, char buf[32]);

/* Largest-remainder split of `total` by integer weights: parts[i] is floor(total*w_i/W) plus one unit
 * for the (total - sum of floors) largest remainders, ties to the smaller keys[i]. Weights <= 0 get 0.
 * keys must be distinct. Exact (128-bit). Returns 0, or -1 if no weight is positive or total < 0. */
int bf_money_split(int64_t total, size_t n, const int64_t *weights, const int64_t *keys,
                    int64_t *parts);

/* Cumulative-entitlement apportionment: given cumulative amounts already paid (paid[i], summing to
 * total_before) distributes `amount` more units so that after every single unit each holder's
 * cumulative pay stays strictly within one unit of its exact entitlement total*w_i/W (an
 * earliest-deadline-first schedule of unit payments; ties to the smaller key). The result depends
 * only on the cumulative total, never on how it was chunked. add[i] receives each holder's increment.
 * Cost O(amount * n). Returns 0, or -1 on bad input (no positive weight, negative amount, paid
 * inconsistent with total_before or outside the quota). */
int bf_money_apportion(size_t n, const int64_t *weights, const int64_t *keys, const int64_t *paid,
                        int64_t total_before, int64_t amount, int64_t *add);

/* Price of a paid request: ceil((base + per_unit * units) * rate_num / rate_den) minor units,
 * computed in 128-bit integers and rounded once, up, on the total (never per component), so
 * the price is monotone in units and a hold for the most units covers any smaller capture.
 * units == 0 costs 0 (nothing was delivered, the base fee included). Returns 0, or -1 with err
 * set for a negative input, rate_den <= 0, or a result above INT64_MAX. */
int bf_money_price(int64_t base, int64_t per_unit, int64_t units, int64_t rate_num, int64_t rate_den,
                    int64_t *out, bf_err_t *err);

/* A price multiplier as an exact fraction: "3/2", "1.5" (up to 6 decimals) or "2"; 0 <= rate <=
 * BF_MONEY_RATE_MAX. Stored reduced (num/den in lowest terms, 0 as 0/1). Returns 0 or -1. */
#define BF_MONEY_RATE_MAX 1000
int bf_money_parse_rate(const char *s, int64_t *num, int64_t *den, bf_err_t *err);

#endif
