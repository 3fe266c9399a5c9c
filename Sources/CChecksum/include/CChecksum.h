// CChecksum: CRC32C with the SSE4.2 crc32 instruction where the CPU has it (about 10x the
// table-driven Swift version), chosen at run time; and the O_DIRECT open flag for the
// checkpoint writer (glibc defines it only under _GNU_SOURCE, which Swift's Glibc does not set).
#ifndef CCHECKSUM_H
#define CCHECKSUM_H
#include <stddef.h>
#include <stdint.h>

/// 1 when the hardware CRC32C path is available on this CPU.
int cchecksum_has_hardware_crc32c(void);
/// CRC32C of n bytes continuing from crc (0 for a fresh checksum), with the hardware instruction.
/// Call only when cchecksum_has_hardware_crc32c() is 1.
uint32_t cchecksum_crc32c_hw(uint32_t crc, const void *data, size_t n);
/// The O_DIRECT flag of open(2) and fcntl(F_SETFL) on this platform; 0 where there is none.
int cchecksum_o_direct_flag(void);
#endif
