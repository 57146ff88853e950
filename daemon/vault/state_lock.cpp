#include "daemon/vault/state_lock.hpp"

#include <cerrno>
#include <fcntl.h>

#include <fmt/format.h>

#include "common/fs.hpp"

namespace agentgw {

Result<StateLock> StateLock::acquire(const std::filesystem::path& dir) {
    const auto path = dir / "agentgwd.lock";
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!fd.valid()) {
        return errno_error(Code::io_error, fmt::format("cannot open {}", path.string()), errno);
    }
    // An open-file-description lock: it conflicts even with another open of the file in this
    // same process, and closing some other descriptor of the file does not drop it.
    struct flock lock {};
    lock.l_type = F_WRLCK;
    lock.l_whence = SEEK_SET;
    if (::fcntl(fd.get(), F_OFD_SETLK, &lock) == 0) {
        return StateLock(dir, std::move(fd));
    }
    if (errno != EACCES && errno != EAGAIN) {
        return errno_error(Code::io_error, fmt::format("cannot lock {}", path.string()), errno);
    }
    return make_error(Code::unavailable,
                      fmt::format("another agentgwd is already using state directory {} "
                                  "({} is locked)",
                                  dir.string(), path.string()));
}

}  // namespace agentgw
