/* fuzz_calculator.c - the calculator tool's evaluator (tools/calc.h): any bytes must give a
 * finite number or an error with a message, never a crash, a read past len or deep
 * recursion. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tools/calc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact-size copy so that ASan catches any read past the end. */
    char *buf = malloc(size ? size : 1);
    if (buf == NULL)
        return 0;
    memcpy(buf, data, size);
    double v = 0;
    struct err e = {0};
    int rc = calc_eval(buf, size, &v, &e);
    if (rc == 0) {
        if (!isfinite(v))
            abort();
        char out[64];
        calc_format(v, out, sizeof out);
    } else if (e.msg[0] == '\0') {
        abort();
    }
    free(buf);
    return 0;
}
