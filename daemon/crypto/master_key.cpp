#include "daemon/crypto/master_key.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <fcntl.h>
#include <optional>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <fmt/format.h>

#include "common/fs.hpp"
#include "common/unique_fd.hpp"

namespace agentgw {

namespace fs = std::filesystem;

namespace {

constexpr size_t k_max_passphrase = 4096;

// Reads up to buffer.size() bytes from fd into secure memory; returns the count. Reads one
// byte past what a caller accepts, so an over-long input is detected rather than truncated.
Result<size_t> read_into(int fd, SecureBuffer& buffer, std::string_view what, bool stop_at_eol) {
    size_t used = 0;
    while (used < buffer.size()) {
        const ssize_t n = ::read(fd, buffer.data() + used, stop_at_eol ? 1 : buffer.size() - used);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return errno_error(Code::io_error, fmt::format("cannot read {}", what), errno);
        }
        if (n == 0) {
            break;
        }
        if (stop_at_eol && buffer.data()[used] == '\n') {
            break;
        }
        used += static_cast<size_t>(n);
    }
    return used;
}

}  // namespace

Result<MasterSecret> load_key_file(const fs::path& path) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) {
        return errno_error(errno == ENOENT ? Code::not_found : Code::io_error,
                           fmt::format("cannot open key file {}", path.string()), errno);
    }
    TRY(check_private_fd(fd.get(), path));
    SecureBuffer raw(2 * k_master_key_size + 2);
    TRY_ASSIGN(size_t n, read_into(fd.get(), raw, "key file " + path.string(), false));

    MasterSecret out{MasterKind::key, SecureBuffer(k_master_key_size), "key file " + path.string(),
                     path};
    if (n == k_master_key_size) {
        std::copy_n(raw.data(), n, out.secret.data());
        return out;
    }
    size_t hex_len = n;
    if (hex_len > 0 && raw.data()[hex_len - 1] == '\n') {
        --hex_len;
    }
    size_t bin_len = 0;
    if (hex_len == 2 * k_master_key_size &&
        sodium_hex2bin(out.secret.data(), out.secret.size(),
                       reinterpret_cast<const char*>(raw.data()), hex_len, nullptr, &bin_len,
                       nullptr) == 0 &&
        bin_len == k_master_key_size) {
        return out;
    }
    return make_error(
        Code::invalid_argument,
        fmt::format("key file {} must hold 32 raw bytes or 64 hex characters", path.string()));
}

Result<MasterSecret> generate_key_file(const fs::path& path) {
    MasterSecret out{MasterKind::key, SecureBuffer::random(k_master_key_size),
                     "key file " + path.string(), path};
    // Written whole under another name, then moved into place: a start cut short (a crash, a
    // power loss) leaves no short key file behind to refuse every later start. The move fails
    // on an existing file, as O_EXCL would: a key is never overwritten.
    const fs::path staging = path.parent_path() / ("." + path.filename().string() + ".new");
    ::unlink(staging.c_str());  // left by such a start: it never held a key in use
    UniqueFd fd(
        ::open(staging.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!fd.valid()) {
        return errno_error(Code::io_error,
                           fmt::format("cannot create key file {}", staging.string()), errno);
    }
    errno = 0;
    if (::fchmod(fd.get(), 0600) != 0 ||
        ::write(fd.get(), out.secret.data(), out.secret.size()) !=
            static_cast<ssize_t>(out.secret.size()) ||
        ::fsync(fd.get()) != 0) {
        const int saved = errno != 0 ? errno : EIO;  // a short write sets no errno
        ::unlink(staging.c_str());
        return errno_error(Code::io_error,
                           fmt::format("cannot write key file {}", staging.string()), saved);
    }
    fd.reset();
    int moved = ::renameat2(AT_FDCWD, staging.c_str(), AT_FDCWD, path.c_str(), RENAME_NOREPLACE);
    if (moved != 0 && (errno == EINVAL || errno == ENOSYS)) {
        // A file system without RENAME_NOREPLACE (NFS): a hard link fails on an existing file
        // just the same.
        moved = ::link(staging.c_str(), path.c_str());
    }
    const int saved = errno;
    ::unlink(staging.c_str());  // after a link; after the move it is gone already
    if (moved != 0) {
        return errno_error(Code::io_error, fmt::format("cannot create key file {}", path.string()),
                           saved);
    }
    UniqueFd dir(::open(path.parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dir.valid()) {
        ::fsync(dir.get());
    }
    return out;
}

Result<MasterSecret> load_passphrase_file(const fs::path& path) {
    const bool from_stdin = path == "-";
    UniqueFd owned;
    int fd = STDIN_FILENO;
    if (!from_stdin) {
        owned.reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
        if (!owned.valid()) {
            return errno_error(errno == ENOENT ? Code::not_found : Code::io_error,
                               fmt::format("cannot open passphrase file {}", path.string()), errno);
        }
        TRY(check_private_fd(owned.get(), path));
        fd = owned.get();
    }
    const std::string what = from_stdin ? "standard input" : "passphrase file " + path.string();
    // On a terminal, prompt and keep the passphrase off the screen.
    std::optional<termios> saved_tty;
    if (from_stdin && ::isatty(fd) == 1) {
        termios tty{};
        if (::tcgetattr(fd, &tty) == 0) {
            saved_tty = tty;
            tty.c_lflag &= ~static_cast<tcflag_t>(ECHO);
            ::tcsetattr(fd, TCSAFLUSH, &tty);
        }
        (void)!::write(STDERR_FILENO, "Passphrase: ", 12);
    }
    SecureBuffer raw(k_max_passphrase + 1);
    auto read = read_into(fd, raw, what, true);
    if (saved_tty) {
        ::tcsetattr(fd, TCSAFLUSH, &*saved_tty);
        (void)!::write(STDERR_FILENO, "\n", 1);
    }
    TRY_ASSIGN(size_t n, std::move(read));
    if (n > k_max_passphrase) {
        return make_error(
            Code::invalid_argument,
            fmt::format("passphrase from {} is longer than {} bytes", what, k_max_passphrase));
    }
    TRY_ASSIGN(auto out,
               passphrase_from(std::string_view(reinterpret_cast<const char*>(raw.data()), n),
                               "passphrase from " + what));
    if (!from_stdin) {
        out.file = path;
    }
    return out;
}

Result<MasterSecret> passphrase_from(std::string_view passphrase, std::string source) {
    if (passphrase.empty()) {
        return make_error(Code::invalid_argument, fmt::format("{} is empty", source));
    }
    MasterSecret out{
        MasterKind::passphrase, SecureBuffer(passphrase.size()), std::move(source), {}};
    std::copy(passphrase.begin(), passphrase.end(), out.secret.data());
    return out;
}

}  // namespace agentgw
