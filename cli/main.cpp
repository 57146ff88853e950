#include <csignal>
#include <iostream>
#include <sys/prctl.h>
#include <sys/resource.h>

#include <curl/curl.h>

#include "cli/app.hpp"

int main(int argc, char** argv) {
    // A secret typed at the prompt, a key the daemon hands back: none of it may end up in a
    // core dump or be read by the user's other processes (agents included) through ptrace or
    // /proc/PID/mem. Best effort: a failure leaves the defaults, which the command can live with.
    const rlimit no_core{0, 0};
    (void)::setrlimit(RLIMIT_CORE, &no_core);
    (void)::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    // A reader that went away (`agentgw ... | head -c0`) is a failed write, reported as such
    // with exit status 1, not a silent death by SIGPIPE.
    (void)std::signal(SIGPIPE, SIG_IGN);

    curl_global_init(CURL_GLOBAL_DEFAULT);
    const int code = agentgw::cli::run_cli(argc, argv, std::cout, std::cerr);
    curl_global_cleanup();
    return code;
}
