/* The web dashboard's pages and static files (web/, Chart.js), embedded into the binary at build
 * time and served on the --http port beside the API they call. */
#ifndef COORD_PAGES_H
#define COORD_PAGES_H
#include <microhttpd.h>

/* Queues the answer for the path's first two segments ("" for "/"; "tasks" + ID; "static" + FILE):
 * 0 when a response was queued, -1 when there is no such page (nothing queued). */
int coord_pages_answer(struct MHD_Connection *conn, const char *seg0, const char *seg1, int tls);

#endif
