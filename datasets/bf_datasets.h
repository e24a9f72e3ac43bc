/* bf_datasets.h: image datasets for the BlockFed engine.
 *
 * A dataset is held as 8-bit pixels (NCHW, 0..255) plus one label byte per image; conversion to
 * normalized float32 happens per batch in bf_batch_fill, so a 60,000-image set costs 47 MB, not
 * 188 MB. Readers validate every header, size and count against the bytes actually present and
 * fail with a message in bf_err_t; they never crash on a corrupt or truncated file.
 *
 * Formats: IDX (MNIST / Fashion-MNIST, optionally gzip-compressed), CIFAR-10 binary batches, and
 * image folders (one sub-folder per class; PNG/JPEG/BMP/GIF/PNM through stb_image). */
#ifndef BF_DATASETS_H
#define BF_DATASETS_H

#include <stddef.h>
#include <stdint.h>

#include "bf_util.h"

#define BF_MAX_CLASSES 256
#define BF_MAX_CLASS_NAME 64
/* Caps applied before anything is allocated or decoded (decompression bombs, hostile headers). */
#define BF_MAX_IMAGE_SIDE 8192
#define BF_MAX_IMAGE_PIXELS (16u * 1024u * 1024u)

typedef struct {
    int32_t n, c, h, w;      /* images, channels, height, width */
    uint8_t *pixels;         /* n*c*h*w bytes, NCHW */
    uint8_t *labels;         /* n bytes, each < classes */
    int32_t classes;
    char class_names[BF_MAX_CLASSES][BF_MAX_CLASS_NAME];
} bf_dataset_t;

/* Loads split "train" or "test" from a directory, detecting the format (load.c):
 *  - IDX: {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] (class names: Fashion-MNIST's when the
 *    directory name contains "fashion", else the digits "0".."9");
 *  - CIFAR-10 binary: data_batch_{1..5}.bin / test_batch.bin (also inside cifar-10-batches-bin/),
 *    class names from batches.meta.txt when present;
 *  - image folder: DIR/SPLIT/CLASS/FILE.{png,jpg,...} or, when DIR has no SPLIT sub-folder,
 *    DIR/CLASS/FILE for either split. Images are converted to c×h×w (0 = take the first image's channels/size).
 * On success *out owns its buffers (free with bf_dataset_free); on failure *out is left empty. */
int bf_dataset_load(const char *dir, const char *split, int c, int h, int w, bf_dataset_t *out,
                    bf_err_t *err);

/* The individual readers (idx.c, cifar.c, imgfolder.c), for callers that know the format. */
int bf_idx_load(const char *images_path, const char *labels_path, bf_dataset_t *out, bf_err_t *err);
int bf_cifar10_load(const char *const *batch_paths, int nfiles, bf_dataset_t *out, bf_err_t *err);
int bf_imgfolder_load(const char *dir, int c, int h, int w, bf_dataset_t *out, bf_err_t *err);

void bf_dataset_free(bf_dataset_t *d);

/* A new dataset holding images idx[0..n) of src (copies pixels and labels, keeps class names). */
int bf_dataset_subset(const bf_dataset_t *src, const int32_t *idx, int32_t n, bf_dataset_t *out,
                      bf_err_t *err);

/* Per-channel mean and standard deviation of the pixels scaled to [0,1] (population std),
 * computed in double precision. mean and std have d->c entries. */
void bf_dataset_channel_stats(const bf_dataset_t *d, float *mean, float *std);

/* Fills a batch: x[i] = (pixels[idx[i]] / 255 - mean[c]) / std[c] as float32 NCHW, y[i] = label.
 * When aug is non-NULL (training on 32×32-style colour data), each image gets a random crop with
 * 4-pixel zero padding and a random horizontal flip, drawn from aug in a fixed order, so a seeded
 * run is reproducible. x has n*c*h*w floats, y has n entries (or is NULL: images only). */
void bf_batch_fill(const bf_dataset_t *d, const int32_t *idx, int32_t n, const float *mean,
                   const float *std, bf_rng_t *aug, float *x, int32_t *y);

/* Decodes one image held in memory (PNG, JPEG, BMP, GIF first frame, PNM) and converts it to
 * c channels (grayscale <-> RGB by ITU-R BT.601 luma / replication) and h×w (bilinear resampling
 * with pixel-centre alignment, as in PIL/torchvision's bilinear without antialias), writing c*h*w
 * bytes NCHW into out. Dimensions are read and checked against BF_MAX_IMAGE_SIDE /
 * BF_MAX_IMAGE_PIXELS before any pixel is decoded. */
int bf_image_decode(const uint8_t *bytes, size_t n, int c, int h, int w, uint8_t *out, bf_err_t *err);
/* The same from a file (size checked before reading, at most 64 MiB). */
int bf_image_load(const char *path, int c, int h, int w, uint8_t *out, bf_err_t *err);
/* Reads only the header: width, height and channels in the file. */
int bf_image_info(const uint8_t *bytes, size_t n, int *w, int *h, int *c, bf_err_t *err);

/* ---- Details of the functions above, and the helpers the readers share --------------------- */

/* Precise behaviour of the functions above, for callers:
 *  - bf_dataset_load: when c/h/w are non-zero and differ from an IDX or CIFAR file's shape, the
 *    images are converted like an image folder's (bf_dataset_convert); 0 keeps the file's shape.
 *    "fashion" is matched case-insensitively in the name of the folder holding the IDX files.
 *    Train CIFAR-10 needs all five data_batch files. An image folder with train/ but no test/
 *    (or the reverse) is an error rather than a folder whose classes include "train"/"test".
 *  - bf_batch_fill augmentation: per image, in this order, top = bf_rng_below(aug, 9),
 *    left = bf_rng_below(aug, 9), flip = bf_rng_below(aug, 2); out(y,x) = P(y+top, x'+left) with
 *    x' = flip ? w-1-x : x, where P is the image padded by 4 pixels of value 0 in pixel space
 *    (torchvision RandomCrop(padding=4) on the raw image), so padding normalizes to -mean/std.
 *    Normalization is exactly ((float)p / 255.0f - mean[c]) / std[c]. No allocation.
 *  - bf_dataset_channel_stats: an empty dataset gives mean 0 and std 0.
 *  - bf_image_decode / bf_image_load: c must be 1 or 3 and h, w >= 1 (use bf_image_info for the
 *    file's own size). Alpha is dropped; RGB -> gray is (19595 R + 38470 G + 7471 B + 32768) >> 16;
 *    the bilinear formula is documented in image.c. */

/* Upper bound on a dataset's pixel bytes, checked before anything is allocated (a hostile header
 * can declare up to 2^32-1 images); 4 GiB is far above every dataset this engine trains on. */
#define BF_MAX_DATASET_BYTES ((size_t)4 << 30)

/* Allocates an n×c×h×w dataset with zeroed pixels and labels and class names "0".."classes-1"
 * (for generated data and for the readers). n >= 0, c,h,w >= 1, 1 <= classes <= BF_MAX_CLASSES,
 * total bytes <= BF_MAX_DATASET_BYTES. On failure *out is left empty. */
int bf_dataset_alloc(bf_dataset_t *out, int32_t n, int32_t c, int32_t h, int32_t w, int32_t classes,
                     bf_err_t *err);

/* Converts every image of d in place to c×h×w with the same channel conversion and bilinear
 * resampling as bf_image_decode (0 keeps the current value). bf_dataset_load applies it to IDX
 * and CIFAR data when the caller asks for a shape other than the file's, e.g. Fashion-MNIST as
 * 3×32×32. c must be 1 or 3 (or 0). On failure d is unchanged. */
int bf_dataset_convert(bf_dataset_t *d, int c, int h, int w, bf_err_t *err);

/* Reads a whole image file (a regular file of 1 byte .. BF_IMAGE_FILE_MAX bytes) into a malloc'ed
 * buffer; errors name the file. */
#define BF_IMAGE_FILE_MAX ((size_t)64 << 20)
int bf_image_file_read(const char *path, uint8_t **buf, size_t *n, bf_err_t *err);
/* bf_image_info for a file (same size checks as bf_image_load); errors name the file. */
int bf_image_file_info(const char *path, int *w, int *h, int *c, bf_err_t *err);

/* ---- Data blocks (blocks.c) --------------------------------------------------------------- */
/* The coordinator cuts a task's training split into fixed-size data blocks, deterministically from
 * the task's seed, and keeps a validation split for itself. */

typedef struct {
    int32_t nblocks, block_size; /* every block holds exactly block_size images */
    int32_t *index;              /* nblocks * block_size image indices, block b at b*block_size */
    int32_t nval;
    int32_t *val;                /* validation image indices (disjoint from every block) */
} bf_blocks_t;

/* partition: "iid" (seeded shuffle, then consecutive blocks) or "dirichlet:ALPHA" (each block's
 * label mix drawn from Dirichlet(ALPHA) over the classes, images drawn without replacement from
 * per-class pools; smaller ALPHA = more skewed blocks). The first nval images of a seeded shuffle
 * form the validation split; leftover images that do not fill a block are unused. */
int bf_blocks_partition(const bf_dataset_t *d, int32_t block_size, int32_t nval, const char *partition,
                        uint64_t seed, bf_blocks_t *out, bf_err_t *err);
void bf_blocks_free(bf_blocks_t *b);
/* Up to n image indices spread evenly over the first nblocks blocks (every block, so every label
 * mix, represented): a server-side sample of the training data. Returns how many (<= n). */
int32_t bf_blocks_spread(const bf_blocks_t *b, int32_t nblocks, int32_t n, int32_t *idx);

/* SHA-256 (hex) of a block as it travels (docs/PROTOCOL.md, BLOCK): the n*c*h*w pixel bytes, then
 * the n label bytes. The shape travels in the message header and is checked against the frames. */
void bf_block_digest(int32_t n, int32_t c, int32_t h, int32_t w, const uint8_t *pixels, const uint8_t *labels,
                     char hex[65]);

#endif
