/* bf_predictor.h: one trained model loaded for inference, and the one path from an encoded image
 * to class probabilities. `blockfed-predict --model` and the coordinator's paid predictions both
 * run this code, so a local and a remote prediction of the same model and image are identical.
 *
 * @discuss
 * An image goes through exactly what training data went through (datasets/image.c and
 * bf_batch_fill): decoded by stb_image (PNG, JPEG, BMP, GIF first frame, PNM) after its header
 * was checked against BF_MAX_IMAGE_SIDE / BF_MAX_IMAGE_PIXELS (a decompression bomb is refused
 * before any pixel buffer is allocated); channels converted (RGB -> gray by BT.601 luma, gray ->
 * RGB by replication, alpha dropped); resized to the model's input by bilinear interpolation with
 * aligned pixel centres (torchvision's bilinear without antialias), rounded to 8 bits; then
 * x = (pixel / 255 - mean[c]) / std[c] with the model file's preprocess values. Probabilities are
 * the softmax of the eval-mode logits, in double precision.
 *
 * A predictor owns its network and buffers and is used by one thread at a time. It runs the
 * network with `threads` OpenMP threads; the same thread count gives bit-identical results, a
 * different one may not (a single image is split across threads by channels), which is why both
 * blockfed-predict and the coordinator use BF_PREDICT_THREADS. */
#ifndef BF_PREDICTOR_H
#define BF_PREDICTOR_H

#include <stddef.h>
#include <stdint.h>

#include "bf_util.h"

#define BF_PREDICT_MAX_IMAGES 64              /* images in one paid request (PREDICT frames) */
#define BF_PREDICT_MAX_IMAGE_BYTES (16u << 20) /* bytes of one encoded image in a request */
#define BF_PREDICT_MAX_TOP 256
/* Threads of every prediction, local or paid (identical results). One: a coordinator serving many
 * requests keeps its other core for the socket, and a single-threaded forward pass has no
 * barriers, so its latency does not collapse when the machine is oversubscribed. */
#define BF_PREDICT_THREADS 1

typedef struct bf_predictor bf_predictor_t;

/* From model file bytes (validated completely by bf_model_decode) or a model file. NULL with err
 * set on any problem. */
bf_predictor_t *bf_predictor_new(const uint8_t *model, size_t len, int threads, bf_err_t *err);
bf_predictor_t *bf_predictor_load(const char *path, int threads, bf_err_t *err);
void bf_predictor_destroy(bf_predictor_t **p);

int bf_predictor_classes(const bf_predictor_t *p);
const char *bf_predictor_label(const bf_predictor_t *p, int k);
/* The model's digest (bf_model_digest: what its version-2 file stores under sha256). */
const char *bf_predictor_digest(const bf_predictor_t *p);
const char *bf_predictor_arch(const bf_predictor_t *p);
void bf_predictor_input(const bf_predictor_t *p, int *c, int *h, int *w);

/* Classifies one encoded image: probs[bf_predictor_classes(p)] receives the probabilities.
 * Returns 0, or -1 with err describing why the image could not be used (empty, truncated, too
 * large, unknown format, or a model output that is not finite: then no probability is valid);
 * the predictor stays usable either way. */
int bf_predictor_run(bf_predictor_t *p, const uint8_t *image, size_t len, double *probs, bf_err_t *err);

/* The indices of the k largest probabilities in descending order, ties to the smaller index;
 * returns min(k, classes). */
int bf_predictor_topk(const double *probs, int classes, int k, int *idx);

#endif
