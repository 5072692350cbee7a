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

#include <malloc.h>

// Large buffers (a 1 MiB frame and its copies) are mapped and unmapped on their own: glibc's
// default raises the threshold after the first large free, after which freed frames stay in the
// heap and the daemon's memory does not return when its clients go.
static inline void paymentsd_malloc_map_large_buffers(size_t threshold) {
    mallopt(M_MMAP_THRESHOLD, (int)threshold);
}
// Hands free heap pages back to the kernel.
static inline void paymentsd_malloc_trim(void) { malloc_trim(0); }

#include <sys/ioctl.h>
#include <linux/fs.h>

// Whether the open file carries the immutable or append-only attribute (chattr +i / +a). Writing
// to a shared mapping of such a file (SQLite's -shm) raises SIGBUS, so the store asks first.
static inline int paymentsd_file_is_immutable(int fd) {
    int flags = 0;
    if (ioctl(fd, FS_IOC_GETFLAGS, &flags) != 0) return 0;
    return (flags & (FS_IMMUTABLE_FL | FS_APPEND_FL)) != 0;
}
