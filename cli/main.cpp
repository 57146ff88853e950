#include <iostream>

#include <curl/curl.h>

#include "cli/app.hpp"

int main(int argc, char** argv) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const int code = agentgw::cli::run_cli(argc, argv, std::cout, std::cerr);
    curl_global_cleanup();
    return code;
}
