#include "common/fs.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <system_error>
#include <unistd.h>

#include <fmt/format.h>

#include "common/unique_fd.hpp"

namespace agentgw {

namespace fs = std::filesystem;

Error errno_error(Code code, std::string_view what, int errno_value) {
    return make_error(code, fmt::format("{}: {}", what, std::strerror(errno_value)));
}

namespace {

Status check_owner_and_mode(const fs::path& path, const struct stat& st, mode_t allowed,
                            std::string_view kind) {
    if (st.st_uid != ::geteuid() && st.st_uid != 0) {
        return make_error(Code::permission_denied,
                          fmt::format("{} {} is owned by uid {}, not by uid {}", kind,
                                      path.string(), st.st_uid, ::geteuid()));
    }
    const mode_t extra = st.st_mode & 07777 & ~allowed;
    if (extra != 0) {
        return make_error(Code::permission_denied,
                          fmt::format("{} {} has mode {:04o}, which is looser than {:04o}", kind,
                                      path.string(), st.st_mode & 07777, allowed));
    }
    return {};
}

}  // namespace

Status ensure_private_dir(const fs::path& dir, mode_t mode) {
    struct stat st {};
    if (::lstat(dir.c_str(), &st) == 0) {
        if (!S_ISDIR(st.st_mode)) {
            return make_error(Code::invalid_argument,
                              fmt::format("{} exists and is not a directory", dir.string()));
        }
        return check_owner_and_mode(dir, st, mode, "directory");
    }
    if (errno != ENOENT) {
        return errno_error(Code::io_error, fmt::format("cannot inspect {}", dir.string()), errno);
    }
    if (dir.has_parent_path() && dir.parent_path() != dir) {
        std::error_code ec;
        fs::create_directories(dir.parent_path(), ec);
        if (ec) {
            return make_error(
                Code::io_error,
                fmt::format("cannot create {}: {}", dir.parent_path().string(), ec.message()));
        }
    }
    if (::mkdir(dir.c_str(), mode) != 0) {
        if (errno == EEXIST) {
            return ensure_private_dir(dir, mode);  // someone else made it: check theirs
        }
        return errno_error(Code::io_error, fmt::format("cannot create {}", dir.string()), errno);
    }
    // mkdir applied the umask; set the exact mode on the directory just made, through a
    // descriptor that cannot have been swapped for a symlink.
    UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd.valid() || ::fchmod(fd.get(), mode) != 0) {
        return errno_error(Code::io_error, fmt::format("cannot chmod {}", dir.string()), errno);
    }
    return {};
}

Status check_private_fd(int fd, const fs::path& file) {
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
        return errno_error(Code::io_error, fmt::format("cannot inspect {}", file.string()), errno);
    }
    if (!S_ISREG(st.st_mode)) {
        return make_error(Code::invalid_argument,
                          fmt::format("{} is not a regular file", file.string()));
    }
    return check_owner_and_mode(file, st, 0600, "file");
}

}  // namespace agentgw
