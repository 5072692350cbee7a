#pragma once
#include <stdint.h>
#include <stdio.h>

// glibc declares struct ucred only under _GNU_SOURCE, so Swift does not see
// it. Same layout (Linux: pid_t, uid_t, gid_t), read with SO_PEERCRED.
typedef struct paymentsd_ucred {
    int32_t pid;
    uint32_t uid;
    uint32_t gid;
} paymentsd_ucred;

// Swift 6 refuses to touch the mutable global `stderr`; these do it in C.
static inline void paymentsd_stderr_write(const char *bytes, size_t count) {
    fwrite(bytes, 1, count, stderr);
    fflush(stderr);
}
static inline void paymentsd_stdout_line_buffered(void) { setvbuf(stdout, NULL, _IOLBF, 0); }
