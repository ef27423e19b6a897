/* store_pg.c - placeholder: the PostgreSQL backend is being written. */
#include "store/store_pg.h"

int store_pg_open(const char *url, struct store **out, struct err *e)
{
    (void)url;
    *out = NULL;
    return err_set(e, ERR_UNSUPPORTED, "store: the PostgreSQL backend is not built yet");
}
