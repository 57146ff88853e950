#include "daemon/vault/state_lock.hpp"

#include <fcntl.h>

#include <cerrno>
#include <fmt/format.h>

#include "common/fs.hpp"

namespace agentgw {

Result<StateLock> StateLock::acquire(const std::filesystem::path& dir) {
    const auto path = dir / "agentgwd.lock";
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!fd.valid()) {
        return errno_error(Code::io_error, fmt::format("cannot open {}", path.string()), errno);
    }
    struct flock lock {};
    lock.l_type = F_WRLCK;
    lock.l_whence = SEEK_SET;
    if (::fcntl(fd.get(), F_SETLK, &lock) == 0) {
        return StateLock(dir, std::move(fd));
    }
    if (errno != EACCES && errno != EAGAIN) {
        return errno_error(Code::io_error, fmt::format("cannot lock {}", path.string()), errno);
    }
    struct flock holder {};
    holder.l_type = F_WRLCK;
    holder.l_whence = SEEK_SET;
    std::string who = "another process";
    if (::fcntl(fd.get(), F_GETLK, &holder) == 0 && holder.l_type != F_UNLCK) {
        who = fmt::format("another agentgwd (pid {})", holder.l_pid);
    }
    return make_error(Code::unavailable, fmt::format("{} is already using state directory {}",
                                                     who, dir.string()));
}

}  // namespace agentgw
