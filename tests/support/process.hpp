// Child: a process started by a test, with its stdout and stderr captured through pipes.
// The destructor kills (SIGKILL) and reaps it if it is still running, so a test stops exactly
// the processes it started. Not thread-safe.
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <sys/types.h>
#include <vector>

namespace agentgw::test {

using namespace std::chrono_literals;

class Child {
  public:
    // `env` entries override the inherited environment; a nullopt value removes the variable.
    // Every AGENTGWD_*/AGENTGW_* variable and CREDENTIALS_DIRECTORY, STATE_DIRECTORY and
    // RUNTIME_DIRECTORY are removed first, so tests do not depend on the caller's environment.
    Child(const std::vector<std::string>& argv,
          const std::map<std::string, std::optional<std::string>>& env = {},
          const std::optional<std::string>& stdin_data = std::nullopt);
    ~Child();
    Child(const Child&) = delete;
    Child& operator=(const Child&) = delete;

    pid_t pid() const { return pid_; }

    // Waits until stderr holds a line containing `needle`; returns that line.
    std::optional<std::string> wait_for_stderr(const std::string& needle,
                                               std::chrono::milliseconds timeout = 10s);
    // The next complete stdout line, or nullopt on timeout or end of output.
    std::optional<std::string> read_stdout_line(std::chrono::milliseconds timeout);

    void signal(int signo);
    // Stops reading its stdout and stderr, as a pipeline whose reader exited: the child's
    // further writes there fail (EPIPE), or kill it by SIGPIPE unless it ignores that.
    void close_output();
    // The exit code (or 128 + signal) once the process ends within `timeout`.
    std::optional<int> wait(std::chrono::milliseconds timeout = 10s);

    const std::string& stdout_text() const { return out_; }
    const std::string& stderr_text() const { return err_; }

  private:
    // Reads whatever is available on both pipes, waiting at most `timeout`; false at EOF of both.
    bool pump(std::chrono::milliseconds timeout);

    pid_t pid_ = -1;
    int out_fd_ = -1;
    int err_fd_ = -1;
    std::string out_;
    std::string err_;
    size_t out_pos_ = 0;
    std::optional<int> status_;
};

// The path of `program` found on $PATH (Child execs a path, not a name), if it is there.
std::optional<std::string> find_on_path(const std::string& program);
// The same, failing the test (by exception) when it is not there.
std::string program_path(const std::string& program);

// Runs a command to completion (bounded by `timeout`) and returns exit code, stdout, stderr.
struct RunResult {
    int code = -1;
    std::string out;
    std::string err;
};
RunResult run(const std::vector<std::string>& argv,
              const std::map<std::string, std::optional<std::string>>& env = {},
              const std::optional<std::string>& stdin_data = std::nullopt,
              std::chrono::milliseconds timeout = 20s);

}  // namespace agentgw::test
