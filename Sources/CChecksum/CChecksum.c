#define _GNU_SOURCE
#include "CChecksum.h"
#include <fcntl.h>
#include <string.h>

int cchecksum_o_direct_flag(void) {
#ifdef O_DIRECT
    return O_DIRECT;
#else
    return 0;
#endif
}

#if defined(__x86_64__)
#include <nmmintrin.h>

int cchecksum_has_hardware_crc32c(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.2");
}

__attribute__((target("sse4.2")))
uint32_t cchecksum_crc32c_hw(uint32_t crc, const void *data, size_t n) {
    const unsigned char *p = (const unsigned char *)data;
    uint64_t c = ~crc;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = _mm_crc32_u64(c, v);
        p += 8; n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (n > 0) { c32 = _mm_crc32_u8(c32, *p); p++; n--; }
    return ~c32;
}
#else
int cchecksum_has_hardware_crc32c(void) { return 0; }
uint32_t cchecksum_crc32c_hw(uint32_t crc, const void *data, size_t n) { (void)data; (void)n; return crc; }
#endif
