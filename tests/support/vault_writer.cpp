// A child process for the crash-safety test: opens the vault in argv[1] with the key file
// argv[2] and writes records from argv[3] threads until killed, printing "acked <key>" only
// after each write is durable.
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <unistd.h>
#include <vector>

#include <fmt/format.h>
#include <sodium.h>

#include "tests/support/vault_fixture.hpp"

int main(int argc, char** argv) {
    if (argc != 4 || sodium_init() < 0) {
        std::fprintf(stderr, "usage: vault_writer STATE_DIR KEY_FILE THREADS\n");
        return 2;
    }
    auto key = agentgw::load_key_file(argv[2]);
    if (!key) {
        std::fprintf(stderr, "%s\n", key.error().message.c_str());
        return 1;
    }
    auto vault = agentgw::test::open_vault(argv[1], *key);
    if (!vault) {
        std::fprintf(stderr, "%s\n", vault.error().message.c_str());
        return 1;
    }
    std::mutex out;  // guards stdout
    const int threads = std::atoi(argv[3]);
    const unsigned run = randombytes_random();
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
        workers.emplace_back([&, t] {
            for (int i = 0;; ++i) {
                const std::string k = fmt::format("{:08x}-{}-{}", run, t, i);
                if (!agentgw::test::put(**vault, agentgw::Table::audit, k, "value:" + k)) {
                    std::_Exit(1);
                }
                std::lock_guard lk(out);
                std::printf("acked %s\n", k.c_str());
                std::fflush(stdout);
            }
        });
    }
    for (auto& w : workers) {
        w.join();
    }
}
