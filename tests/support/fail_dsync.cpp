// libfail_dsync.so, for LD_PRELOAD: while the file named by $AGENTGW_FAIL_DSYNC exists, every
// pwrite to a descriptor opened with O_DSYNC fails with EIO. LMDB writes the meta page that
// completes a commit through such a descriptor, so a test can make that write fail as a dying
// disk would, at the moment it chooses.
#include <cerrno>
#include <cstdlib>
#include <dlfcn.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>

namespace {

bool failing(int fd) {
    const char* trigger = std::getenv("AGENTGW_FAIL_DSYNC");
    struct stat st {};
    if (trigger == nullptr || ::stat(trigger, &st) != 0) {
        return false;
    }
    const int flags = ::fcntl(fd, F_GETFL);
    return flags != -1 && (flags & O_DSYNC) == O_DSYNC;
}

using PwriteFn = ssize_t (*)(int, const void*, size_t, off_t);

ssize_t pass_on(const char* name, int fd, const void* buf, size_t n, off_t offset) {
    if (failing(fd)) {
        errno = EIO;
        return -1;
    }
    const auto real = reinterpret_cast<PwriteFn>(::dlsym(RTLD_NEXT, name));
    return real(fd, buf, n, offset);
}

}  // namespace

// Both names: libc exports pwrite and pwrite64 as one function, and a library may call either.
extern "C" ssize_t pwrite(int fd, const void* buf, size_t n, off_t offset) {
    return pass_on("pwrite", fd, buf, n, offset);
}

extern "C" ssize_t pwrite64(int fd, const void* buf, size_t n, off_t offset) {
    return pass_on("pwrite64", fd, buf, n, offset);
}
