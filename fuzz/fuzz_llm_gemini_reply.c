/* fuzz_llm_gemini_reply.c - libFuzzer target for the Gemini wire's parsers of untrusted bytes
 * (llm_gemini.c); the checks are in fuzz_wire_reply.h, shared by every wire. */
#include "fuzz_wire_reply.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_wire_reply(&llm_wire_gemini, data, size);
}
