#include "cli/secret.hpp"

#include <array>
#include <cerrno>
#include <iostream>
#include <signal.h>
#include <string.h>  // explicit_bzero
#include <termios.h>
#include <unistd.h>

namespace agentgw::cli {

namespace {

constexpr size_t k_max_secret = 1 << 20;  // the control API's body limit

// Makes room in `s` without leaving a copy of its bytes in freed memory (as += could).
void grow(std::string& s) {
    std::string bigger;
    bigger.reserve(s.capacity() * 2);
    bigger.append(s);
    wipe(s);
    s.swap(bigger);
}

// Reads `fd` into a SecretString: to the end, or with `one_line` up to a newline (one byte at a
// time, so nothing after the line is consumed). One trailing line end, LF or CRLF (a file
// saved on Windows), is dropped.
Result<SecretString> read_fd(int fd, bool one_line) {
    SecretString secret;
    std::string& s = secret.value();
    s.reserve(256);
    for (;;) {
        if (s.size() == s.capacity()) {
            grow(s);
        }
        const size_t used = s.size();
        s.resize(s.capacity());  // within capacity: no reallocation
        const ssize_t n = ::read(fd, s.data() + used, one_line ? 1 : s.size() - used);
        s.resize(n > 0 ? used + static_cast<size_t>(n) : used);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return make_error(Code::io_error,
                              std::string("cannot read the secret: ") + strerror(errno));
        }
        if (n == 0 || (one_line && s.back() == '\n')) {
            break;
        }
        if (s.size() > k_max_secret) {
            return make_error(Code::invalid_argument, "the secret is longer than 1 MiB");
        }
    }
    if (!s.empty() && s.back() == '\n') {
        s.pop_back();
        if (!s.empty() && s.back() == '\r') {
            s.pop_back();
        }
    }
    if (s.empty()) {
        return make_error(Code::invalid_argument, "no secret given (empty input)");
    }
    return secret;
}

constexpr std::array k_fatal_signals = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};

// The terminal's settings before echo was turned off. Written before the handler is installed,
// read by it; there is one prompt at a time.
termios g_saved_terminal;

extern "C" void restore_terminal_and_reraise(int sig) {
    tcsetattr(STDIN_FILENO, TCSANOW, &g_saved_terminal);
    signal(sig, SIG_DFL);
    raise(sig);
}

// Echo off on the standard-input terminal for its lifetime; a fatal signal meanwhile restores
// the terminal before the program ends.
class EchoOff {
  public:
    EchoOff() {
        if (tcgetattr(STDIN_FILENO, &g_saved_terminal) != 0) {
            return;
        }
        struct sigaction action = {};
        action.sa_handler = restore_terminal_and_reraise;
        sigemptyset(&action.sa_mask);
        for (size_t i = 0; i < k_fatal_signals.size(); ++i) {
            sigaction(k_fatal_signals[i], &action, &previous_[i]);
        }
        termios quiet = g_saved_terminal;
        quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
        active_ = tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) == 0;
        if (!active_) {
            restore_handlers();
        }
    }
    ~EchoOff() {
        if (active_) {
            tcsetattr(STDIN_FILENO, TCSAFLUSH, &g_saved_terminal);
            restore_handlers();
        }
    }
    EchoOff(const EchoOff&) = delete;
    EchoOff& operator=(const EchoOff&) = delete;

    bool active() const noexcept { return active_; }

  private:
    void restore_handlers() noexcept {
        for (size_t i = 0; i < k_fatal_signals.size(); ++i) {
            sigaction(k_fatal_signals[i], &previous_[i], nullptr);
        }
    }

    bool active_ = false;
    std::array<struct sigaction, k_fatal_signals.size()> previous_ = {};
};

}  // namespace

void wipe(std::string& s) noexcept {
    s.resize(s.capacity());  // reach the spare capacity too, without reallocating
    explicit_bzero(s.data(), s.size());
    s.clear();
}

Result<SecretString> read_secret(std::string_view prompt) {
    if (isatty(STDIN_FILENO) == 0) {
        return read_fd(STDIN_FILENO, false);
    }
    std::cerr << prompt << std::flush;
    const EchoOff echo_off;
    if (!echo_off.active()) {
        return make_error(Code::io_error, "cannot turn off echo on the terminal");
    }
    Result<SecretString> secret = read_fd(STDIN_FILENO, true);
    std::cerr << '\n';  // the user's Enter was not echoed
    return secret;
}

}  // namespace agentgw::cli
