#include "daemon/systemd/systemd.hpp"

#include <cerrno>
#include <charconv>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace agentgw::systemd {

namespace {

// The variable's value as a number, when it is set and wholly one.
template <typename T>
std::optional<T> env_number(const char* name) {
    const char* text = std::getenv(name);
    if (text == nullptr || *text == '\0') {
        return std::nullopt;
    }
    T value{};
    const char* end = text + std::strlen(text);
    const auto [ptr, ec] = std::from_chars(text, end, value);
    if (ec != std::errc() || ptr != end) {
        return std::nullopt;
    }
    return value;
}

int socket_option(int fd, int option) {
    int value = 0;
    socklen_t len = sizeof(value);
    if (::getsockopt(fd, SOL_SOCKET, option, &value, &len) != 0) {
        return -1;
    }
    return value;
}

}  // namespace

Notifier Notifier::from_environment() {
    Notifier n;
    const char* path = std::getenv("NOTIFY_SOCKET");
    const auto usec = env_number<uint64_t>("WATCHDOG_USEC");
    const auto pid = env_number<long>("WATCHDOG_PID");
    if (usec && *usec > 0 && (!pid || *pid == static_cast<long>(::getpid()))) {
        n.watchdog_interval_ = std::chrono::microseconds(*usec / 2);
    }
    if (path != nullptr && (path[0] == '/' || path[0] == '@') &&
        std::strlen(path) < sizeof(n.address_.sun_path)) {
        const size_t len = std::strlen(path);
        n.address_.sun_family = AF_UNIX;
        std::memcpy(n.address_.sun_path, path, len);
        if (path[0] == '@') {
            n.address_.sun_path[0] = '\0';  // the abstract namespace
        }
        n.address_len_ = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len);
        n.fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (n.fd_ < 0) {
            spdlog::warn("NOTIFY_SOCKET is set but no socket could be made: {}",
                         std::strerror(errno));
        }
    } else if (path != nullptr) {
        spdlog::warn("ignoring NOTIFY_SOCKET: not an absolute path or an abstract name");
    }
    if (n.fd_ < 0) {
        n.watchdog_interval_.reset();  // nobody to tell
    }
    for (const char* name : {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"}) {
        ::unsetenv(name);
    }
    return n;
}

Notifier::Notifier(Notifier&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      address_(other.address_),
      address_len_(other.address_len_),
      watchdog_interval_(other.watchdog_interval_) {}

Notifier& Notifier::operator=(Notifier&& other) noexcept {
    if (this != &other) {
        if (fd_ >= 0) {
            ::close(fd_);
        }
        fd_ = std::exchange(other.fd_, -1);
        address_ = other.address_;
        address_len_ = other.address_len_;
        watchdog_interval_ = other.watchdog_interval_;
    }
    return *this;
}

Notifier::~Notifier() {
    if (fd_ >= 0) {
        ::close(fd_);
    }
}

void Notifier::notify(std::string_view state) const {
    if (fd_ < 0) {
        return;
    }
    const ssize_t sent = ::sendto(fd_, state.data(), state.size(), MSG_NOSIGNAL,
                                  reinterpret_cast<const sockaddr*>(&address_), address_len_);
    if (sent < 0) {
        spdlog::warn("cannot notify systemd: {}", std::strerror(errno));
    }
}

Result<PassedSockets> take_passed_sockets() {
    const auto pid = env_number<long>("LISTEN_PID");
    const auto count = env_number<int>("LISTEN_FDS");
    const char* names_text = std::getenv("LISTEN_FDNAMES");
    std::vector<std::string> names;
    if (names_text != nullptr) {
        std::string_view rest = names_text;
        while (!rest.empty()) {
            const auto colon = rest.find(':');
            names.emplace_back(rest.substr(0, colon));
            rest = colon == std::string_view::npos ? std::string_view() : rest.substr(colon + 1);
        }
    }
    for (const char* name : {"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"}) {
        ::unsetenv(name);
    }
    PassedSockets out;
    if (!pid || *pid != static_cast<long>(::getpid()) || !count || *count <= 0) {
        return out;
    }

    constexpr int k_first = 3;  // SD_LISTEN_FDS_START
    const auto close_all = [&] {
        for (int fd = k_first; fd < k_first + *count; ++fd) {
            ::close(fd);
        }
    };
    for (int i = 0; i < *count; ++i) {
        const int fd = k_first + i;
        const std::string name = i < static_cast<int>(names.size()) ? names[i] : "unknown";
        const int flags = ::fcntl(fd, F_GETFD);
        if (flags < 0 || ::fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0) {
            close_all();
            return make_error(Code::invalid_argument,
                              fmt::format("LISTEN_FDS: fd {} ({}) is not open", fd, name));
        }
        if (socket_option(fd, SO_TYPE) != SOCK_STREAM || socket_option(fd, SO_ACCEPTCONN) != 1) {
            close_all();
            return make_error(Code::invalid_argument,
                              fmt::format("LISTEN_FDS: fd {} ({}) is not a listening stream "
                                          "socket",
                                          fd, name));
        }
        const int family = socket_option(fd, SO_DOMAIN);
        std::optional<int>* role = nullptr;
        if (name == "control") {
            role = &out.control;
        } else if (name == "proxy") {
            role = &out.proxy;
        } else if (family == AF_UNIX) {
            role = &out.control;
        } else if (family == AF_INET || family == AF_INET6) {
            role = &out.proxy;
        }
        const bool unix_role = role == &out.control;
        if (role == nullptr || (unix_role != (family == AF_UNIX))) {
            close_all();
            return make_error(
                Code::invalid_argument,
                fmt::format("LISTEN_FDS: fd {} ({}) has the wrong address family for its role", fd,
                            name));
        }
        if (*role) {
            close_all();
            return make_error(Code::invalid_argument,
                              fmt::format("LISTEN_FDS: more than one {} socket",
                                          unix_role ? "control" : "proxy"));
        }
        *role = fd;
    }
    return out;
}

}  // namespace agentgw::systemd
