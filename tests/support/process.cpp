#include "tests/support/process.hpp"

#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdexcept>
#include <string_view>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace agentgw::test {

namespace {

bool scrubbed(const std::string& name) {
    return name.starts_with("AGENTGWD_") || name.starts_with("AGENTGW_") ||
           name == "CREDENTIALS_DIRECTORY" || name == "STATE_DIRECTORY" ||
           name == "RUNTIME_DIRECTORY" || name == "JOURNAL_STREAM";
}

std::vector<std::string> build_env(const std::map<std::string, std::optional<std::string>>& env) {
    std::map<std::string, std::string> merged;
    for (char** e = environ; *e != nullptr; ++e) {
        const std::string entry(*e);
        const auto eq = entry.find('=');
        const std::string name = entry.substr(0, eq);
        if (eq != std::string::npos && !scrubbed(name)) {
            merged[name] = entry.substr(eq + 1);
        }
    }
    for (const auto& [name, value] : env) {
        if (value) {
            merged[name] = *value;
        } else {
            merged.erase(name);
        }
    }
    std::vector<std::string> out;
    for (const auto& [name, value] : merged) {
        out.push_back(name + "=" + value);
    }
    return out;
}

}  // namespace

Child::Child(const std::vector<std::string>& argv,
             const std::map<std::string, std::optional<std::string>>& env,
             const std::optional<std::string>& stdin_data) {
    int out_pipe[2], err_pipe[2], in_pipe[2];
    if (::pipe2(out_pipe, O_CLOEXEC) != 0 || ::pipe2(err_pipe, O_CLOEXEC) != 0 ||
        ::pipe2(in_pipe, O_CLOEXEC) != 0) {
        throw std::runtime_error("pipe failed");
    }
    // Everything exec needs is prepared before fork: the child only dup2s and execs.
    const std::vector<std::string> env_strings = build_env(env);
    std::vector<char*> envp;
    for (const auto& s : env_strings) {
        envp.push_back(const_cast<char*>(s.c_str()));
    }
    envp.push_back(nullptr);
    std::vector<char*> args;
    for (const auto& a : argv) {
        args.push_back(const_cast<char*>(a.c_str()));
    }
    args.push_back(nullptr);

    pid_ = ::fork();
    if (pid_ < 0) {
        throw std::runtime_error("fork failed");
    }
    if (pid_ == 0) {
        ::dup2(in_pipe[0], STDIN_FILENO);
        ::dup2(out_pipe[1], STDOUT_FILENO);
        ::dup2(err_pipe[1], STDERR_FILENO);
        // The test runner ignores SIGPIPE, and an ignored signal stays ignored across exec:
        // the program must meet the default, as it would from a shell.
        ::signal(SIGPIPE, SIG_DFL);
        ::execve(args[0], args.data(), envp.data());
        ::_exit(127);
    }
    ::close(out_pipe[1]);
    ::close(err_pipe[1]);
    ::close(in_pipe[0]);
    if (stdin_data) {
        (void)!::write(in_pipe[1], stdin_data->data(), stdin_data->size());
    }
    ::close(in_pipe[1]);
    out_fd_ = out_pipe[0];
    err_fd_ = err_pipe[0];
    ::fcntl(out_fd_, F_SETFL, O_NONBLOCK);
    ::fcntl(err_fd_, F_SETFL, O_NONBLOCK);
}

void Child::close_output() {
    for (int* fd : {&out_fd_, &err_fd_}) {
        if (*fd >= 0) {
            ::close(*fd);
            *fd = -1;
        }
    }
}

Child::~Child() {
    if (!status_ && pid_ > 0) {
        ::kill(pid_, SIGKILL);
        int st = 0;
        ::waitpid(pid_, &st, 0);
    }
    close_output();
}

bool Child::pump(std::chrono::milliseconds timeout) {
    pollfd fds[2] = {{out_fd_, POLLIN, 0}, {err_fd_, POLLIN, 0}};
    const int n = ::poll(fds, 2, static_cast<int>(timeout.count()));
    if (n <= 0) {
        return n == 0;
    }
    bool open = false;
    for (int i = 0; i < 2; ++i) {
        if (fds[i].fd < 0) {
            continue;
        }
        std::string& sink = i == 0 ? out_ : err_;
        char buf[4096];
        for (;;) {
            const ssize_t r = ::read(fds[i].fd, buf, sizeof buf);
            if (r > 0) {
                sink.append(buf, static_cast<size_t>(r));
                continue;
            }
            if (r < 0 && errno == EAGAIN) {
                open = true;
            }
            break;
        }
    }
    return open;
}

std::optional<std::string> Child::wait_for_stderr(const std::string& needle,
                                                  std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    size_t start = 0;
    for (;;) {
        for (size_t end; (end = err_.find('\n', start)) != std::string::npos; start = end + 1) {
            const std::string line = err_.substr(start, end - start);
            if (line.find(needle) != std::string::npos) {
                return line;
            }
        }
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left <= 0ms) {
            return std::nullopt;
        }
        if (!pump(std::min(left, 100ms)) && err_.find('\n', start) == std::string::npos) {
            return std::nullopt;  // both pipes at end of file: the process is gone
        }
    }
}

std::optional<std::string> Child::read_stdout_line(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        const auto end = out_.find('\n', out_pos_);
        if (end != std::string::npos) {
            std::string line = out_.substr(out_pos_, end - out_pos_);
            out_pos_ = end + 1;
            return line;
        }
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left <= 0ms) {
            return std::nullopt;
        }
        const size_t before = out_.size();
        const bool open = pump(std::min(left, 50ms));
        if (out_.size() == before && (status_ || !open)) {
            return std::nullopt;  // end of output
        }
    }
}

void Child::signal(int signo) {
    if (!status_) {
        ::kill(pid_, signo);
    }
}

std::optional<int> Child::wait(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!status_) {
        int st = 0;
        const pid_t r = ::waitpid(pid_, &st, WNOHANG);
        if (r == pid_) {
            status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            break;
        }
        if (std::chrono::steady_clock::now() >= deadline) {
            return std::nullopt;
        }
        pump(20ms);
    }
    // Collect the rest of the output: the pipes are at EOF once the process is gone.
    for (int i = 0; i < 50; ++i) {
        const size_t before = out_.size() + err_.size();
        pump(10ms);
        if (out_.size() + err_.size() == before) {
            break;
        }
    }
    return status_;
}

std::optional<std::string> find_on_path(const std::string& program) {
    const char* path = std::getenv("PATH");
    std::string_view rest = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
    while (!rest.empty()) {
        const auto colon = rest.find(':');
        const std::string_view dir = rest.substr(0, colon);
        rest = colon == std::string_view::npos ? std::string_view() : rest.substr(colon + 1);
        if (dir.empty()) {
            continue;
        }
        const std::string candidate = std::string(dir) + "/" + program;
        if (::access(candidate.c_str(), X_OK) == 0) {
            return candidate;
        }
    }
    return std::nullopt;
}

std::string program_path(const std::string& program) {
    if (auto found = find_on_path(program)) {
        return *found;
    }
    throw std::runtime_error(program + " is not on PATH");
}

RunResult run(const std::vector<std::string>& argv,
              const std::map<std::string, std::optional<std::string>>& env,
              const std::optional<std::string>& stdin_data, std::chrono::milliseconds timeout) {
    Child child(argv, env, stdin_data);
    const auto code = child.wait(timeout);
    return {code.value_or(-1), child.stdout_text(), child.stderr_text()};
}

}  // namespace agentgw::test
