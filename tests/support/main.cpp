// The Catch2 runner shared by every test binary: libraries that want one-time set-up get it
// here, before any test (or thread) starts.
#define CATCH_CONFIG_RUNNER
#include <signal.h>

#include <catch2/catch.hpp>
#include <curl/curl.h>
#include <sodium.h>

int main(int argc, char* argv[]) {
    if (sodium_init() < 0) {
        return 1;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    ::signal(SIGPIPE, SIG_IGN);  // a test talking to a killed child must see EPIPE, not die
    const int result = Catch::Session().run(argc, argv);
    curl_global_cleanup();
    return result;
}
