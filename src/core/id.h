/*
 * id.h - identifiers: UUIDv4 strings from the OS's CSPRNG (through OpenSSL), and the
 * syntactic check used to tell an id from a name.
 */
#ifndef CREWD_CORE_ID_H
#define CREWD_CORE_ID_H

#include <stdbool.h>

#define ID_UUID_LEN 37 /* 36 characters + NUL */

/* Fills `out` with a lowercase UUIDv4. Returns 0, or ERR_INTERNAL if no randomness. */
int id_uuid4(char out[ID_UUID_LEN]);

/* True when `s` has the 8-4-4-4-12 hexadecimal form (any version, either case). */
bool id_is_uuid(const char *s);

/* When `s` is a UUID, writes its canonical (lowercase) form to `out` and returns true; crewd
 * stores ids in that form, so every lookup by id goes through this first. */
bool id_canonical(const char *s, char out[ID_UUID_LEN]);

#endif
