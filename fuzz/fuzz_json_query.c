/* fuzz_json_query.c - json_query's path walk (tools/jsonq.h). Input: the path, a newline,
 * then the JSON text. Any result must be a string or an error with a message. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tools/jsonq.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    const char *nl = memchr(s, '\n', size);
    size_t plen = nl ? (size_t)(nl - s) : size;
    const char *json = nl ? nl + 1 : "";
    size_t jlen = nl ? size - plen - 1 : 0;
    char *path = malloc(plen + 1);
    if (path == NULL)
        return 0;
    memcpy(path, s, plen);
    path[plen] = '\0';
    char *out = NULL;
    struct err e = {0};
    int rc = jsonq_run(json, jlen, path, plen, &out, &e);
    if ((rc == 0) != (out != NULL) || (rc != 0 && e.msg[0] == '\0'))
        abort();
    free(out);
    free(path);
    return 0;
}
