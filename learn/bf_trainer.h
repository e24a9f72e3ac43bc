/* bf_trainer.h: the local training loop a BlockFed trainer runs, centrally (`blockfed-client
 * train`) or inside a federation round: epochs of shuffled, normalized (optionally augmented)
 * batches through bf_net_train_step and SGD, and evaluation in batches. */
#ifndef BF_TRAINER_H
#define BF_TRAINER_H

#include "bf_datasets.h"
#include "bf_models.h"

typedef struct {
    int batch;           /* images per step */
    double lr;           /* peak learning rate (one-cycle) or initial */
    const char *schedule;/* constant | step:STEPS:GAMMA | cosine | onecycle */
    double momentum, weight_decay;
    int nesterov;
    int augment;         /* random crop (pad 4) + horizontal flip */
    uint64_t seed;       /* shuffling and augmentation */
    double mu;                 /* FedProx: adds mu/2 |w - prox_center|^2 to the loss when > 0 */
    const float *prox_center;  /* the round's global parameters (borrowed) */
    const volatile int *cancel;/* when set and *cancel becomes non-zero (e.g. &zsys_interrupted), the
                                  epoch stops after the current step and bf_trainer_epoch returns -2 */
} bf_train_opts_t;

/* Called after every step with the running figures of the current epoch. */
typedef struct {
    int epoch, epochs;
    int64_t step, steps;      /* within the epoch */
    double loss;              /* mean over the epoch so far */
    double accuracy;          /* fraction correct over the epoch so far */
    double img_per_s;
    double elapsed, eta;      /* seconds, this epoch */
} bf_progress_t;
typedef void (*bf_progress_fn)(const bf_progress_t *p, void *user);

typedef struct bf_trainer bf_trainer_t;

/* net is borrowed. total_epochs sizes schedules that span the whole run (cosine, one-cycle). */
bf_trainer_t *bf_trainer_new(bf_net_t *net, const bf_train_opts_t *opts, const bf_dataset_t *train,
                             const float *mean, const float *std, int total_epochs, bf_err_t *err);
void bf_trainer_destroy(bf_trainer_t **p);
/* One pass over the training set; fills the final progress figures into *summary. Returns 0,
 * -1 if the loss is not finite (diverged), -2 if cancelled through opts.cancel. */
int bf_trainer_epoch(bf_trainer_t *t, bf_progress_fn fn, void *user, bf_progress_t *summary);

/* Eval-mode loss and accuracy of net on d (limit > 0: only the first `limit` images). */
void bf_evaluate(bf_net_t *net, const bf_dataset_t *d, const float *mean, const float *std, int limit,
                 double *loss, double *accuracy);

#endif
