/* fuzz_llm_openai_reply.c - libFuzzer target for the OpenAI wire's parsers of untrusted bytes
 * (llm_openai.c); the checks are in fuzz_wire_reply.h, shared by every wire. */
#include "fuzz_wire_reply.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_wire_reply(&llm_wire_openai, data, size);
}
