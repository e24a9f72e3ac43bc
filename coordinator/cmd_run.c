/* cmd_run.c: `blockfed-coordinator run`: serve accounts, tasks and training rounds. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "commands.h"
#include "coord.h"

static const char usage_text[] =
    "usage: blockfed-coordinator run --home DIR [--bind tcp://*:7700] [--dataset NAME=PATH]...\n"
    "                                [--insecure] [--liveness S] [--threads T] [--verbose]\n"
    "\n"
    "Serves the protocol in docs/PROTOCOL.md on one ZeroMQ ROUTER socket: accounts (backed by the\n"
    "ledger), tasks, data blocks and federated rounds. Logs one line per event and one summary per\n"
    "round (participants, samples, validation accuracy and loss, test accuracy, time).\n"
    "\n"
    "  --home DIR           created by `blockfed-coordinator init` (default $BLOCKFED_HOME)\n"
    "  --bind ENDPOINT      default tcp://*:7700\n"
    "  --dataset NAME=PATH  serve a dataset under NAME (IDX, CIFAR-10 binary or image folders);\n"
    "                       repeatable, e.g. fashion-mnist=/usr/share/datasets/fashion-mnist\n"
    "  --insecure           no CURVE (plain TCP): refused unless the endpoint is loopback\n"
    "  --liveness S         a participant silent for S seconds is not waited for (default 15)\n"
    "  --threads T          threads for aggregation/evaluation (default 1)\n"
    "  --block-size N       images per data block (default: enough blocks for min_clients x\n"
    "                       blocks-per-join joiners, at most 1000 images each)\n"
    "  --blocks-per-join N  blocks a participant gets when it joins (default 5); more with\n"
    "                       `blockfed-client blocks buy` (10 coins each)\n"
    "  --start-deadline S   a task without its minimum participants after S seconds is\n"
    "                       cancelled and its pool refunded (default 86400)\n"
    "  --max-open-tasks N   tasks one user may have waiting or running at once (default 8,\n"
    "                       1..10000)\n"
    "  --forget-after S     a connection silent for S seconds with no reply queued is forgotten\n"
    "                       (its counters of malformed and dropped messages; default 300)\n"
    "  --shapley-exact-max N  exact Shapley values up to N participants per round (default 6,\n"
    "                       at most 20: 2^N coalition evaluations), the budgeted estimator above\n"
    "                       (first-order values above 16 participants)\n"
    "  --shapley-budget B   coalition evaluations per round for the estimator (default 100)\n"
    "  --shapley-sample M   the estimator's coalitions other than the first 2n+2 are scored on M\n"
    "                       of the valuation images, their BN statistics re-estimated on 512\n"
    "                       images and corrected (about half the cost, 1-2 points more error:\n"
    "                       docs/SHAPLEY.md); default 0: every coalition on every image\n"
    "  --value-every K      value contributions every K rounds and the last (default 1)\n"
    "  --valuation MODE     background (default): a round is valued while the next one trains;\n"
    "                       inline: before it is aggregated (the next round waits)\n"
    "  --value-backlog N    rounds of a task waiting for their values at most (default 4, 1..1000)\n"
    "  --value-threads T    threads of the background valuation (default: --threads); more when\n"
    "                       the participants train elsewhere and the cores are free\n"
    "  --utility U          accuracy (default) or loss: what a coalition's model is scored by on\n"
    "                       the validation split (loss: negative mean cross-entropy)\n"
    "  --bn-recalibrate N   re-estimate every aggregated model's BatchNorm statistics (the new\n"
    "                       global model; each coalition's on 256 of them) on N training images\n"
    "                       spread over the task's blocks (default 1280, at most 64 MB of them;\n"
    "                       0: keep the averaged statistics)\n"
    "  --recharge MODE      how money comes in: operator (only `blockfed-coordinator ledger\n"
    "                       deposit`; RECHARGE is refused) or open:MAX (self-service RECHARGE,\n"
    "                       at most MAX yuan per user per UTC day; default open:10000)\n"
    "  --http ADDR:PORT     also serve the HTTPS JSON API there (docs/HTTP_API.md), e.g.\n"
    "                       127.0.0.1:8443 or 0.0.0.0:8443; off unless given\n"
    "  --tls-cert FILE, --tls-key FILE  the API's certificate and key (PEM; default\n"
    "                       HOME/https.crt and HOME/https.key, written by init)\n"
    "  --http-insecure      plain HTTP instead of HTTPS: refused unless ADDR is loopback\n"
    "  --metrics-public     serve /metrics without the operator's credential\n"
    "  --ledger URL         the ledger is the PostgreSQL database at URL (postgresql://...), as\n"
    "                       `init --ledger URL` set it up; a home with no ledger yet is pointed\n"
    "                       at it, a home with another ledger is refused (docs/LEDGER.md)\n"
    "  --verbose            log every update too\n"
    "\n"
    "exit status: 0 stopped by a signal, 2 usage error, 3 could not start (home, datasets, bind)\n";

static int loopback(const char *ep) {
    return !strncmp(ep, "tcp://127.", 10) || !strncmp(ep, "tcp://localhost:", 16) || !strncmp(ep, "ipc://", 6) ||
           !strncmp(ep, "inproc://", 9);
}

/* A whole decimal integer, or -1 (garbage, trailing text, out of int range): every numeric
 * option is >= 0, so -1 fails its range check instead of atoi's silent 0. */
static int arg_int(const char *s) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    return end == s || *end || errno || v < 0 || v > INT_MAX ? -1 : (int)v;
}

int cmd_run_main(int argc, char **argv) {
    static const struct option opts[] = {
        {"home", required_argument, 0, 'H'},    {"bind", required_argument, 0, 'b'},
        {"dataset", required_argument, 0, 'd'}, {"insecure", no_argument, 0, 'i'},
        {"liveness", required_argument, 0, 'l'}, {"threads", required_argument, 0, 't'},
        {"verbose", no_argument, 0, 'v'},       {"help", no_argument, 0, 'h'},
        {"block-size", required_argument, 0, 'B'}, {"blocks-per-join", required_argument, 0, 'J'},
        {"start-deadline", required_argument, 0, 'D'},
        {"shapley-exact-max", required_argument, 0, 'X'}, {"shapley-budget", required_argument, 0, 'S'},
        {"shapley-sample", required_argument, 0, 'm'},
        {"value-every", required_argument, 0, 'K'}, {"utility", required_argument, 0, 'U'},
        {"bn-recalibrate", required_argument, 0, 'R'}, {"max-open-tasks", required_argument, 0, 'M'},
        {"forget-after", required_argument, 0, 'F'},
        {"recharge", required_argument, 0, 'r'},
        {"http", required_argument, 0, 'W'}, {"http-insecure", no_argument, 0, 'I'},
        {"tls-cert", required_argument, 0, 'C'}, {"tls-key", required_argument, 0, 'k'},
        {"metrics-public", no_argument, 0, 'P'},
        {"valuation", required_argument, 0, 'V'}, {"value-backlog", required_argument, 0, 'L'},
        {"value-threads", required_argument, 0, 'T'}, {"ledger", required_argument, 0, 'G'},
        {0, 0, 0, 0}};
    coord_opts_t o;
    memset(&o, 0, sizeof o);
    o.home = getenv("BLOCKFED_HOME");
    o.shapley_exact_max = 6; /* 2^6 <= the default budget: the surrogate beyond (docs/SHAPLEY.md) */
    o.shapley_budget = 100;
    o.value_every = 1;
    o.value_backlog = COORD_VALUE_BACKLOG;
    o.bn_recalibrate = COORD_BN_RECALIBRATE_IMAGES;
    o.bind = "tcp://*:7700";
    o.recharge_max_cents = COORD_RECHARGE_OPEN_MAX_CENTS;
    /* a crash at the one point the tests cannot hit with a signal (docs/COORDINATOR.md) */
    const char *fault = getenv("BLOCKFED_COORD_FAULT");
    o.fault_before_settle = fault && !strcmp(fault, "before-settle");
    char specs[COORD_MAX_DATASETS][4096]; /* the --dataset NAME=PATH texts o points into */
    const char *ledger_url = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'H': o.home = optarg; break;
        case 'b': o.bind = optarg; break;
        case 'd': {
            char *eq = strchr(optarg, '=');
            if (o.ndatasets == COORD_MAX_DATASETS || !eq || eq == optarg || !eq[1] || strlen(optarg) >= sizeof specs[0])
                return fprintf(stderr, "blockfed-coordinator: --dataset takes NAME=PATH (at most %d)\n", COORD_MAX_DATASETS),
                       EXIT_USAGE;
            strcpy(specs[o.ndatasets], optarg);
            specs[o.ndatasets][eq - optarg] = 0;
            o.dataset_names[o.ndatasets] = specs[o.ndatasets];
            o.dataset_paths[o.ndatasets] = specs[o.ndatasets] + (eq - optarg) + 1;
            o.ndatasets++;
            break;
        }
        case 'i': o.insecure = 1; break;
        case 'l': o.liveness_ms = arg_int(optarg) > 86400 ? -1 : arg_int(optarg) * 1000; break;
        case 't': o.threads = arg_int(optarg); break;
        case 'v': o.verbose = 1; break;
        case 'B': o.block_size = arg_int(optarg); break;
        case 'J': o.blocks_per_join = arg_int(optarg); break;
        case 'D': o.start_deadline = arg_int(optarg); break;
        case 'X': o.shapley_exact_max = arg_int(optarg); break;
        case 'S': o.shapley_budget = arg_int(optarg); break;
        case 'm': o.shapley_sample = arg_int(optarg); break;
        case 'K': o.value_every = arg_int(optarg); break;
        case 'R': o.bn_recalibrate = arg_int(optarg); break;
        case 'M': o.max_open_tasks = arg_int(optarg) == 0 ? -1 : arg_int(optarg); break;
        case 'F': o.forget_ms = arg_int(optarg) == 0 || arg_int(optarg) > 86400 ? -1 : arg_int(optarg) * 1000; break;
        case 'U':
            if (strcmp(optarg, "accuracy") && strcmp(optarg, "loss"))
                return fprintf(stderr, "blockfed-coordinator: --utility is accuracy or loss\n"), EXIT_USAGE;
            o.utility_loss = !strcmp(optarg, "loss");
            break;
        case 'r': {
            bf_err_t err;
            o.recharge_operator = !strcmp(optarg, "operator");
            if (!o.recharge_operator && (strncmp(optarg, "open:", 5) ||
                                         bf_money_parse_amount(optarg + 5, 2, &o.recharge_max_cents, &err) ||
                                         o.recharge_max_cents <= 0))
                return fprintf(stderr, "blockfed-coordinator: --recharge is operator or open:MAX (MAX yuan > 0)\n"),
                       EXIT_USAGE;
            break;
        }
        case 'W': o.http = optarg; break;
        case 'I': o.http_insecure = 1; break;
        case 'C': o.tls_cert = optarg; break;
        case 'k': o.tls_key = optarg; break;
        case 'P': o.metrics_public = 1; break;
        case 'V':
            if (strcmp(optarg, "background") && strcmp(optarg, "inline"))
                return fprintf(stderr, "blockfed-coordinator: --valuation is background or inline\n"), EXIT_USAGE;
            o.value_inline = !strcmp(optarg, "inline");
            break;
        case 'L': o.value_backlog = arg_int(optarg); break;
        case 'T': o.value_threads = arg_int(optarg); break;
        case 'G': ledger_url = optarg; break;
        case 'h': return fputs(usage_text, stdout), EXIT_OK;
        default: return fputs(usage_text, stderr), EXIT_USAGE;
        }
    }
    if (!o.home || optind < argc || o.liveness_ms < 0 || o.threads < 0 || o.threads > 64 || o.block_size < 0 ||
        o.block_size > 1000000 || o.blocks_per_join < 0 || o.blocks_per_join > 1000 || o.start_deadline < 0 ||
        o.shapley_exact_max < 0 || o.shapley_exact_max > 20 || o.shapley_budget < 2 || o.shapley_budget > 1000000 ||
        o.shapley_sample < 0 || o.shapley_sample > 1000000 ||
        o.value_every < 1 || o.value_every > 10000 || o.bn_recalibrate < 0 || o.bn_recalibrate > 100000 ||
        o.max_open_tasks < 0 || o.max_open_tasks > 10000 || o.forget_ms < 0 || o.value_backlog < 1 ||
        o.value_backlog > 1000 || o.value_threads < 0 || o.value_threads > 64 ||
        ((o.http_insecure || o.tls_cert || o.tls_key || o.metrics_public) && !o.http))
        return fputs(usage_text, stderr), EXIT_USAGE;
    /* the home's ledger.db names the database from here on, for every part of the coordinator */
    int lrc = ledger_url ? cmd_ledger_select(o.home, ledger_url) : EXIT_OK;
    if (lrc) return lrc;
    o.block_size_auto = o.block_size == 0; /* task.c: the default adapts to each task */
    if (o.insecure && !loopback(o.bind))
        return fprintf(stderr, "blockfed-coordinator: --insecure is refused for %s: plain TCP only on loopback\n", o.bind),
               EXIT_USAGE;
    if (o.insecure)
        fprintf(stderr, "blockfed-coordinator: WARNING: --insecure: no encryption, no authentication, on %s\n", o.bind);
    /* one connection per participant: allow as many as the hard limit lets us */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    zsys_set_max_sockets(0); /* no czmq cap: the OS limit above applies */
    return coord_serve(&o) ? EXIT_RUNTIME : EXIT_OK;
}
