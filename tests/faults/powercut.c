/* A power cut, simulated: LD_PRELOADed into the bridge, this wraps fsync and fdatasync. After
 * each successful flush of a file whose name ends in POWERCUT_SUFFIX ("bridge.db" matches
 * bridge.db and bridge.db-wal), it copies the file, as the disk now holds it, to
 * "<file>.synced", and appends the file's name to POWERCUT_LOG (one line per flush).
 *
 * After SIGKILL, putting each ".synced" copy in place of its file (and deleting -shm) leaves
 * exactly what a power cut at that moment could leave at worst: what was flushed, nothing
 * written after it. (A real disk may keep some unflushed writes too; SQLite's WAL checksums
 * make any such torn suffix count as not written.)
 *
 * Build: cc -shared -fPIC -O2 -o powercut.so powercut.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static int name_of(int fd, char *path, size_t size) {
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, size - 1);
    if (n < 0) return -1;
    path[n] = '\0';
    return 0;
}

static int ends_with(const char *text, const char *suffix) {
    size_t t = strlen(text), s = strlen(suffix);
    return t >= s && strcmp(text + t - s, suffix) == 0;
}

static void snapshot(int fd) {
    const char *suffix = getenv("POWERCUT_SUFFIX");
    char path[PATH_MAX], copy[PATH_MAX + 16], partial[PATH_MAX + 32];
    if (suffix == NULL || name_of(fd, path, sizeof path) != 0) return;
    if (!ends_with(path, suffix) && !ends_with(path, "-wal")) return;
    if (strstr(path, suffix) == NULL) return;
    struct stat st;
    if (fstat(fd, &st) != 0) return;
    snprintf(copy, sizeof copy, "%s.synced", path);
    snprintf(partial, sizeof partial, "%s.synced.partial", path);
    pthread_mutex_lock(&lock);
    int out = open(partial, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (out >= 0) {
        off_t offset = 0;
        while (offset < st.st_size) {
            ssize_t sent = sendfile(out, fd, &offset, st.st_size - offset);
            if (sent <= 0) break;
        }
        close(out);
        if (offset == st.st_size) rename(partial, copy);
    }
    const char *log = getenv("POWERCUT_LOG");
    if (log != NULL) {
        FILE *f = fopen(log, "a");
        if (f != NULL) {
            fprintf(f, "%s\n", path);
            fclose(f);
        }
    }
    pthread_mutex_unlock(&lock);
}

int fsync(int fd) {
    static int (*real)(int) = NULL;
    if (real == NULL) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    int answer = real(fd);
    if (answer == 0) snapshot(fd);
    return answer;
}

int fdatasync(int fd) {
    static int (*real)(int) = NULL;
    if (real == NULL) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    int answer = real(fd);
    if (answer == 0) snapshot(fd);
    return answer;
}
