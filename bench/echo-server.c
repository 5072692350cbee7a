/*
 * The physical limit for `make bench`: a Unix-socket echo server that does
 * nothing but give back every byte it reads, on one thread with epoll. The
 * bench drives it with the same client code as the daemon, so the ratio
 * "paymentsd / echo" is what the daemon costs on top of the socket itself.
 *
 * Usage: echo-server SOCKET_PATH. It prints "ready" on stdout once it listens
 * and runs until it is killed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

enum { MAX_EVENTS = 256, BUFFER_SIZE = 64 * 1024 };

/* Writes all of [data, data+length) to a blocking-until-done loop on a nonblocking socket:
 * the echo's answers are tiny, so a full send buffer is rare and a short busy wait is fine. */
static int write_all(int fd, const char *data, size_t length) {
    while (length > 0) {
        ssize_t written = write(fd, data, length);
        if (written < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            return -1;
        }
        data += written;
        length -= (size_t)written;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s SOCKET_PATH\n", argv[0]);
        return 64;
    }
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    if (strlen(argv[1]) >= sizeof(address.sun_path)) {
        fprintf(stderr, "socket path too long\n");
        return 64;
    }
    strcpy(address.sun_path, argv[1]);
    unlink(argv[1]);
    int listening = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (listening < 0 || bind(listening, (struct sockaddr *)&address, sizeof(address)) < 0 ||
        listen(listening, 256) < 0) {
        perror("listen");
        return 1;
    }
    int poller = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event event = {.events = EPOLLIN, .data.fd = listening};
    if (poller < 0 || epoll_ctl(poller, EPOLL_CTL_ADD, listening, &event) < 0) {
        perror("epoll");
        return 1;
    }
    printf("ready\n");
    fflush(stdout);

    static char buffer[BUFFER_SIZE];
    struct epoll_event events[MAX_EVENTS];
    for (;;) {
        int ready = epoll_wait(poller, events, MAX_EVENTS, -1);
        if (ready < 0) {
            if (errno == EINTR) continue;
            perror("epoll_wait");
            return 1;
        }
        for (int i = 0; i < ready; i++) {
            int fd = events[i].data.fd;
            if (fd == listening) {
                int client;
                while ((client = accept4(listening, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    struct epoll_event added = {.events = EPOLLIN, .data.fd = client};
                    if (epoll_ctl(poller, EPOLL_CTL_ADD, client, &added) < 0) close(client);
                }
                continue;
            }
            ssize_t got = read(fd, buffer, sizeof(buffer));
            if (got > 0 && write_all(fd, buffer, (size_t)got) == 0) continue;
            if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            close(fd); /* end of stream or an error: closing also removes it from epoll */
        }
    }
}
