// The two systemd protocols agentgwd speaks without linking libsystemd: readiness and
// watchdog notifications (sd_notify(3)) and listening sockets passed in (sd_listen_fds(3)).
// Both are no-ops outside systemd: no NOTIFY_SOCKET, no LISTEN_FDS.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <sys/socket.h>
#include <sys/un.h>

#include "common/result.hpp"

namespace agentgw::systemd {

// Sends state lines ("READY=1", "STOPPING=1", "WATCHDOG=1", ...) as datagrams to
// $NOTIFY_SOCKET. A failed send is logged, never fatal: systemd's view of the daemon is not
// worth stopping it for.
class Notifier {
  public:
    // Reads NOTIFY_SOCKET ("/path" or "@abstract"), WATCHDOG_USEC and WATCHDOG_PID, then
    // removes them from the environment so nothing the daemon might start inherits them.
    static Notifier from_environment();

    Notifier() = default;
    Notifier(Notifier&& other) noexcept;
    Notifier& operator=(Notifier&& other) noexcept;
    Notifier(const Notifier&) = delete;
    Notifier& operator=(const Notifier&) = delete;
    ~Notifier();

    bool enabled() const noexcept { return fd_ >= 0; }
    void notify(std::string_view state) const;

    // How often to send WATCHDOG=1: half of WATCHDOG_USEC, when the watchdog is on for us.
    std::optional<std::chrono::microseconds> watchdog_interval() const noexcept {
        return watchdog_interval_;
    }

  private:
    int fd_ = -1;
    sockaddr_un address_{};
    socklen_t address_len_ = 0;
    std::optional<std::chrono::microseconds> watchdog_interval_;
};

// Listening sockets systemd passed (socket activation), by role. Each is a listening stream
// socket with FD_CLOEXEC set; the caller owns it.
struct PassedSockets {
    std::optional<int> control;  // AF_UNIX: the control socket
    std::optional<int> proxy;    // AF_INET/AF_INET6: the agent API
};

// Takes the sockets when LISTEN_PID is this process: LISTEN_FDS of them from fd 3 on, named
// by LISTEN_FDNAMES ("control", "proxy"; any other name is placed by address family). The
// three variables are then removed from the environment. Fails, closing what it took, on a
// socket that is not a listening stream socket or on two sockets for one role.
Result<PassedSockets> take_passed_sockets();

}  // namespace agentgw::systemd
