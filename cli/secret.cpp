#include "cli/secret.hpp"

#include <array>
#include <cctype>
#include <cerrno>
#include <iostream>
#include <signal.h>
#include <string.h>  // explicit_bzero
#include <string_view>
#include <termios.h>
#include <unistd.h>
#include <utility>

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

Error no_secret() {
    return make_error(Code::invalid_argument, "no secret given (empty input)");
}

Error read_failed() {
    return make_error(Code::io_error, std::string("cannot read the secret: ") + strerror(errno));
}

Error too_long() {
    return make_error(Code::invalid_argument, "the secret is longer than 1 MiB");
}

// Reads all of `fd` into a SecretString. One trailing line end, LF or CRLF (a file saved on
// Windows), is dropped.
Result<SecretString> read_fd(int fd) {
    SecretString secret;
    std::string& s = secret.value();
    s.reserve(256);
    for (;;) {
        if (s.size() == s.capacity()) {
            grow(s);
        }
        const size_t used = s.size();
        s.resize(s.capacity());  // within capacity: no reallocation
        const ssize_t n = ::read(fd, s.data() + used, s.size() - used);
        s.resize(n > 0 ? used + static_cast<size_t>(n) : used);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return read_failed();
        }
        if (n == 0) {
            break;
        }
        if (s.size() > k_max_secret) {
            return too_long();
        }
    }
    if (!s.empty() && s.back() == '\n') {
        s.pop_back();
        if (!s.empty() && s.back() == '\r') {
            s.pop_back();
        }
    }
    if (s.empty()) {
        return no_secret();
    }
    return secret;
}

// The terminal's settings before and during the prompt, the prompt, and whether a stop (^Z)
// ended since the line was last looked at. Written before the handlers are installed, read by
// them; there is one prompt at a time.
termios g_saved_terminal;
termios g_quiet_terminal;
const char* g_prompt = "";
size_t g_prompt_size = 0;
volatile sig_atomic_t g_continued = 0;

extern "C" void restore_terminal_and_reraise(int sig) {
    tcsetattr(STDIN_FILENO, TCSANOW, &g_saved_terminal);
    signal(sig, SIG_DFL);
    raise(sig);
}

// ^Z at the prompt: the terminal has its own settings back while the program is stopped (the
// shell must not inherit a terminal without echo), and the prompt's, with the prompt shown
// again, once it continues. What was typed before is dropped, as the terminal itself drops a
// half-typed line on ^Z: the user starts the line again.
extern "C" void restore_terminal_and_stop(int) {
    const int saved_errno = errno;
    tcsetattr(STDIN_FILENO, TCSANOW, &g_saved_terminal);
    struct sigaction stop = {};
    stop.sa_handler = SIG_DFL;
    sigemptyset(&stop.sa_mask);
    struct sigaction mine = {};
    sigaction(SIGTSTP, &stop, &mine);
    sigset_t tstp;
    sigemptyset(&tstp);
    sigaddset(&tstp, SIGTSTP);
    sigprocmask(SIG_UNBLOCK, &tstp, nullptr);  // blocked while its handler runs
    raise(SIGTSTP);                            // stopped here until SIGCONT
    sigaction(SIGTSTP, &mine, nullptr);
    tcsetattr(STDIN_FILENO, TCSANOW, &g_quiet_terminal);
    g_continued = 1;
    if (write(STDERR_FILENO, "\n", 1) < 0 || write(STDERR_FILENO, g_prompt, g_prompt_size) < 0) {
        // nothing to do: the prompt is a courtesy
    }
    errno = saved_errno;
}

// Echo and the kernel's line editing off on the standard-input terminal for its lifetime; a
// fatal signal meanwhile restores the terminal before the program ends, and a stop (^Z) until
// the program continues. (A signal the program was started ignoring stays ignored.) The
// kernel's line editing goes because it cuts a line at 4095 bytes, dropping the rest of a long
// pasted token without a word; read_typed_line() does the editing instead.
class QuietTerminal {
  public:
    explicit QuietTerminal(std::string_view prompt) {
        if (tcgetattr(STDIN_FILENO, &g_saved_terminal) != 0) {
            return;
        }
        g_quiet_terminal = g_saved_terminal;
        g_quiet_terminal.c_lflag &= ~static_cast<tcflag_t>(ECHO | ICANON);
        g_quiet_terminal.c_cc[VMIN] = 1;  // each read returns as soon as a byte is there
        g_quiet_terminal.c_cc[VTIME] = 0;
        g_prompt = prompt.data();
        g_prompt_size = prompt.size();
        g_continued = 0;
        for (size_t i = 0; i < k_handled_signals.size(); ++i) {
            const int sig = k_handled_signals[i];
            struct sigaction action = {};
            action.sa_handler =
                sig == SIGTSTP ? restore_terminal_and_stop : restore_terminal_and_reraise;
            sigemptyset(&action.sa_mask);
            sigaction(sig, nullptr, &previous_[i]);
            if (previous_[i].sa_handler != SIG_IGN) {
                sigaction(sig, &action, nullptr);
            }
        }
        active_ = tcsetattr(STDIN_FILENO, TCSAFLUSH, &g_quiet_terminal) == 0;
        if (!active_) {
            restore_handlers();
        }
    }
    ~QuietTerminal() {
        if (active_) {
            // No stop or fatal signal between the two steps: either would put back the wrong
            // settings (the prompt's on continuing, or none at all).
            sigset_t handled;
            sigset_t before;
            sigemptyset(&handled);
            for (const int sig : k_handled_signals) {
                sigaddset(&handled, sig);
            }
            sigprocmask(SIG_BLOCK, &handled, &before);
            tcsetattr(STDIN_FILENO, TCSAFLUSH, &g_saved_terminal);
            restore_handlers();
            sigprocmask(SIG_SETMASK, &before, nullptr);
        }
    }
    QuietTerminal(const QuietTerminal&) = delete;
    QuietTerminal& operator=(const QuietTerminal&) = delete;

    bool active() const noexcept { return active_; }
    // The terminal's settings as they were, with the user's editing keys.
    const termios& before() const noexcept { return g_saved_terminal; }

  private:
    static constexpr std::array k_handled_signals = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGTSTP};

    void restore_handlers() noexcept {
        for (size_t i = 0; i < k_handled_signals.size(); ++i) {
            sigaction(k_handled_signals[i], &previous_[i], nullptr);
        }
    }

    bool active_ = false;
    std::array<struct sigaction, k_handled_signals.size()> previous_ = {};
};

// Whether `c` begins a UTF-8 character rather than continuing one.
bool starts_character(char c) {
    return (static_cast<unsigned char>(c) & 0xC0) != 0x80;
}

// One line typed at the standard-input terminal, in the mode QuietTerminal sets: read a byte at
// a time, with the editing keys of `keys` applied as the kernel would have: erase (and
// backspace) drops a character, kill the line, word-erase a word, literal-next takes the next
// byte as it is, reprint is ignored (nothing shows), and end-of-file and the end-of-line keys
// end the line. (What follows the line is flushed with the prompt's mode, as getpass does.)
Result<SecretString> read_typed_line(const termios& keys) {
    SecretString secret;
    std::string& s = secret.value();
    s.reserve(256);
    // Literal-next, word-erase, reprint and the second end-of-line key are extensions, which the
    // terminal honours only with IEXTEN.
    const bool extended = (keys.c_lflag & IEXTEN) != 0;
    const auto is_key = [&keys, extended](char c, int which) {
        const bool extension =
            which == VLNEXT || which == VWERASE || which == VREPRINT || which == VEOL2;
        return (extended || !extension) && keys.c_cc[which] != _POSIX_VDISABLE &&
               static_cast<cc_t>(c) == keys.c_cc[which];
    };
    const auto is_word = [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_';
    };
    bool literal = false;  // the byte before was literal-next
    for (;;) {
        char c = 0;
        const ssize_t n = ::read(STDIN_FILENO, &c, 1);
        if (g_continued != 0) {
            // Stopped and continued: the line starts again. A byte read meanwhile was typed
            // before the stop (the terminal drops what was not read by then).
            g_continued = 0;
            s.clear();
            literal = false;
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return read_failed();
        }
        if (n == 0) {
            return make_error(Code::io_error, "the terminal closed before the line ended");
        }
        if (!std::exchange(literal, false)) {
            if (c == '\n' || c == '\r' || is_key(c, VEOF) || is_key(c, VEOL) || is_key(c, VEOL2)) {
                break;
            }
            if (is_key(c, VLNEXT)) {
                literal = true;
                continue;
            }
            if (is_key(c, VREPRINT)) {
                continue;
            }
            if (is_key(c, VERASE) || c == '\b') {
                while (!s.empty()) {
                    const char last = s.back();
                    s.pop_back();  // the byte stays in the capacity, which is wiped at the end
                    if (starts_character(last)) {
                        break;
                    }
                }
                continue;
            }
            if (is_key(c, VKILL)) {
                s.clear();
                continue;
            }
            if (is_key(c, VWERASE)) {
                // As Linux does: what is not a word character, then a run of word characters.
                while (!s.empty() && !is_word(s.back())) {
                    s.pop_back();
                }
                while (!s.empty() && is_word(s.back())) {
                    s.pop_back();
                }
                continue;
            }
        }
        if (s.size() == s.capacity()) {
            grow(s);
        }
        s.push_back(c);
        if (s.size() > k_max_secret) {
            return too_long();
        }
    }
    if (s.empty()) {
        return no_secret();
    }
    return secret;
}

}  // namespace

void wipe(std::string& s) noexcept {
    s.resize(s.capacity());  // reach the spare capacity too, without reallocating
    explicit_bzero(s.data(), s.size());
    s.clear();
}

Result<SecretString> read_secret(std::string_view prompt) {
    if (isatty(STDIN_FILENO) == 0) {
        return read_fd(STDIN_FILENO);
    }
    const QuietTerminal quiet(prompt);
    if (!quiet.active()) {
        return make_error(Code::io_error, "cannot turn off echo on the terminal");
    }
    // Only now: what is typed once the prompt shows is not flushed by the change of mode.
    std::cerr << prompt << std::flush;
    Result<SecretString> secret = read_typed_line(quiet.before());
    std::cerr << '\n';  // the user's Enter was not echoed
    return secret;
}

}  // namespace agentgw::cli
