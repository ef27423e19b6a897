/* json_depth.c - see json_depth.h. */
#include "core/json_depth.h"

#include <stdbool.h>

int json_depth_check(const char *buf, size_t len, int max_depth, struct err *e)
{
    int depth = 0;
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        char c = buf[i];
        if (in_string) {
            if (c == '\\')
                i++; /* the escaped character cannot end the string */
            else if (c == '"')
                in_string = false;
            continue;
        }
        switch (c) {
        case '"':
            in_string = true;
            break;
        case '[':
        case '{':
            if (++depth > max_depth)
                return err_set(e, ERR_INVALID, "JSON nesting deeper than %d levels", max_depth);
            break;
        case ']':
        case '}':
            if (depth > 0)
                depth--;
            break;
        default:
            break;
        }
    }
    return 0;
}
