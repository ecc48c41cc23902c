/*
 * ProcessPrng for Wine 8 (Debian 12), which lacks bcryptprimitives.dll:
 * Rust's standard library on Windows draws its random numbers from it.
 * Test-only: placed next to shoulder.exe when the Windows build runs under
 * Wine (run.sh); real Windows has the DLL. It fills the buffer from
 * RtlGenRandom (advapi32's SystemFunction036), in chunks a ULONG can count.
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG n = length > 0x10000000 ? 0x10000000 : (ULONG)length;
        if (!SystemFunction036(data, n))
            return FALSE;
        data += n;
        length -= n;
    }
    return TRUE;
}
