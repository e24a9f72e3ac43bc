/* blockfed-bench: `blockfed-bench SUBCOMMAND [--json] ...` prints measured figures. */
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    (void)argc; (void)argv;
    fprintf(stderr, "usage: blockfed-bench train|ledger [--json]\n");
    return 2;
}
