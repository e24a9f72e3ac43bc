/* The web dashboard: HTML pages and their scripts, styles and Chart.js, served from byte arrays
 * compiled in (cmake/embed.cmake), so no URL reaches the file system. Every page is static; the
 * data comes from the JSON API (/api/v1) the scripts call with the session cookie. */
#include <stdio.h>
#include <string.h>

#include "pages.h"
#include "web_assets.h"

/* No inline script or style anywhere: scripts and styles come from /static only, the API and the
 * event stream from this origin, images only as previews of the user's own files (blob:). */
#define PAGE_CSP                                                                                     \
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; " \
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

typedef struct {
    const char *name, *type;
    const unsigned char *data;
    unsigned long len;
} asset_t;

static const asset_t assets[] = {WEB_ASSETS};
#define NASSETS (sizeof assets / sizeof assets[0])

static const asset_t *asset_named(const char *name) {
    for (size_t i = 0; i < NASSETS; i++)
        if (!strcmp(assets[i].name, name)) return &assets[i];
    return NULL;
}

/* The page (an .html asset) a path shows; NULL if none. */
static const char *page_of(const char *seg0, const char *seg1) {
    static const struct {
        const char *seg0, *page;
        int takes_id;
    } pages[] = {{"", "index.html", 0},        {"login", "login.html", 0},     {"tasks", "task.html", 1},
                 {"predict", "predict.html", 0}, {"profile", "profile.html", 0},
                 {"operator", "operator.html", 0}};
    for (size_t i = 0; i < sizeof pages / sizeof pages[0]; i++)
        if (!strcmp(seg0, pages[i].seg0) && (pages[i].takes_id ? seg1[0] != 0 : seg1[0] == 0)) return pages[i].page;
    return NULL;
}

static int send_asset(struct MHD_Connection *conn, const asset_t *a, int tls) {
    struct MHD_Response *resp = MHD_create_response_from_buffer(a->len, (void *)a->data, MHD_RESPMEM_PERSISTENT);
    if (!resp) return -1;
    MHD_add_response_header(resp, "Content-Type", a->type);
    MHD_add_response_header(resp, "Content-Security-Policy", PAGE_CSP);
    MHD_add_response_header(resp, "X-Frame-Options", "DENY");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(resp, "Cross-Origin-Opener-Policy", "same-origin");
    MHD_add_response_header(resp, "Cache-Control", "no-cache"); /* revalidated: a new build shows at once */
    if (tls) MHD_add_response_header(resp, "Strict-Transport-Security", "max-age=31536000");
    enum MHD_Result rc = MHD_queue_response(conn, 200, resp);
    MHD_destroy_response(resp);
    return rc == MHD_YES ? 0 : -1;
}

int coord_pages_answer(struct MHD_Connection *conn, const char *seg0, const char *seg1, int tls) {
    const asset_t *a = NULL;
    if (!strcmp(seg0, "static")) {
        a = asset_named(seg1);
        if (a && strstr(a->name, ".html")) a = NULL; /* pages only under their own paths */
    } else {
        const char *page = page_of(seg0, seg1);
        a = page ? asset_named(page) : NULL;
    }
    return a ? send_asset(conn, a, tls) : -1;
}
