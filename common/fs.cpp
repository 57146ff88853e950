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
                          fmt::format("{} {} has mode {:04o}, which is looser than {:04o}; "
                                      "run chmod {:o} on it",
                                      kind, path.string(), st.st_mode & 07777, allowed, allowed));
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
    // mkdir applies the umask; chmod afterwards so the mode is exactly what was asked.
    if (::mkdir(dir.c_str(), mode) != 0 && errno != EEXIST) {
        return errno_error(Code::io_error, fmt::format("cannot create {}", dir.string()), errno);
    }
    if (::chmod(dir.c_str(), mode) != 0) {
        return errno_error(Code::io_error, fmt::format("cannot chmod {}", dir.string()), errno);
    }
    return {};
}

Status check_private_file(const fs::path& file) {
    struct stat st {};
    if (::stat(file.c_str(), &st) != 0) {
        return errno_error(errno == ENOENT ? Code::not_found : Code::io_error,
                           fmt::format("cannot read {}", file.string()), errno);
    }
    if (!S_ISREG(st.st_mode)) {
        return make_error(Code::invalid_argument,
                          fmt::format("{} is not a regular file", file.string()));
    }
    return check_owner_and_mode(file, st, 0600, "file");
}

Status write_file_atomic(const fs::path& path, std::string_view data, mode_t mode) {
    const fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
    std::string tmpl = (dir / ("." + path.filename().string() + ".XXXXXX")).string();
    UniqueFd fd(::mkstemp(tmpl.data()));
    if (!fd.valid()) {
        return errno_error(Code::io_error, fmt::format("cannot create a file in {}", dir.string()),
                           errno);
    }
    auto fail = [&](std::string_view what) {
        const int saved = errno;
        ::unlink(tmpl.c_str());
        return errno_error(Code::io_error, fmt::format("{} {}", what, path.string()), saved);
    };
    if (::fchmod(fd.get(), mode) != 0) {
        return fail("cannot set the mode of");
    }
    size_t written = 0;
    while (written < data.size()) {
        const ssize_t n = ::write(fd.get(), data.data() + written, data.size() - written);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return fail("cannot write");
        }
        written += static_cast<size_t>(n);
    }
    if (::fsync(fd.get()) != 0) {
        return fail("cannot fsync");
    }
    fd.reset();
    if (::rename(tmpl.c_str(), path.c_str()) != 0) {
        return fail("cannot rename over");
    }
    UniqueFd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dfd.valid() || ::fsync(dfd.get()) != 0) {
        return errno_error(Code::io_error, fmt::format("cannot fsync {}", dir.string()), errno);
    }
    return {};
}

Result<std::string> read_small_file(const fs::path& path, size_t max_bytes) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) {
        return errno_error(errno == ENOENT ? Code::not_found : Code::io_error,
                           fmt::format("cannot open {}", path.string()), errno);
    }
    std::string out;
    char buf[4096];
    for (;;) {
        const ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return errno_error(Code::io_error, fmt::format("cannot read {}", path.string()), errno);
        }
        if (n == 0) {
            break;
        }
        out.append(buf, static_cast<size_t>(n));
        if (out.size() > max_bytes) {
            return make_error(Code::invalid_argument,
                              fmt::format("{} is larger than {} bytes", path.string(), max_bytes));
        }
    }
    return out;
}

}  // namespace agentgw
