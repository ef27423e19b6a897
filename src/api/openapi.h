/*
 * openapi.h - the OpenAPI 3.1 document of crewd's HTTP API, as bytes compiled into the
 * library. The source is docs/openapi.json, written by hand next to docs/API.md; the build
 * turns it into a generated C file (scripts/openapi_embed.cmake, which fills in info.version
 * with CREWD_VERSION). GET /api/v1/openapi.json (api/openapi.c) serves it as it is.
 * Read-only; any thread.
 */
#ifndef CREWD_API_OPENAPI_H
#define CREWD_API_OPENAPI_H

#include <stddef.h>

/* The JSON text, api_openapi_doc_len bytes (followed by a NUL not counted). */
extern const unsigned char api_openapi_doc[];
extern const size_t api_openapi_doc_len;

#endif
