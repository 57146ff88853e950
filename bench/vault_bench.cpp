// Vault benchmark: sealed reads per second, and durable writes per second at 1, 8 and 64
// concurrent writers with group commit, against one commit per write for comparison.
//
//   vault_bench [--seconds S] [--dir DIR]
//
// Runs in a fresh vault under DIR (default: a temp dir) so the disk's fsync cost is measured.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <stdlib.h>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <sodium.h>

#include "common/fs.hpp"
#include "daemon/vault/vault.hpp"

using namespace agentgw;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

std::unique_ptr<Vault> open_bench_vault(const fs::path& dir, size_t max_batch) {
    fs::remove_all(dir);
    if (auto s = ensure_private_dir(dir, 0700); !s) {
        throw std::runtime_error(s.error().message);
    }
    auto lock = StateLock::acquire(dir);
    if (!lock) {
        throw std::runtime_error(lock.error().message);
    }
    MasterSecret key{MasterKind::key, SecureBuffer::random(32), "bench key", {}};
    VaultOptions options;
    options.dir = dir;
    options.max_batch = max_batch;
    auto vault = Vault::open(options, std::move(*lock), key);
    if (!vault) {
        throw std::runtime_error(vault.error().message);
    }
    return std::move(*vault);
}

struct WriteFigures {
    double writes_per_sec;
    double writes_per_commit;
};

WriteFigures bench_writes(const fs::path& dir, int writers, size_t max_batch, double seconds) {
    auto vault = open_bench_vault(dir, max_batch);
    const std::string value(256, 'v');
    std::atomic<bool> stop{false};
    std::atomic<uint64_t> done{0};
    std::vector<std::thread> threads;
    const auto start = Clock::now();
    for (int t = 0; t < writers; ++t) {
        threads.emplace_back([&, t] {
            for (uint64_t i = 0; !stop.load(std::memory_order_relaxed); ++i) {
                const std::string key = fmt::format("w{}-{}", t, i);
                auto s =
                    vault->write([&](WriteTxn& txn) { return txn.put(Table::audit, key, value); });
                if (!s) {
                    std::fprintf(stderr, "write failed: %s\n", s.error().message.c_str());
                    std::exit(1);
                }
                done.fetch_add(1, std::memory_order_relaxed);
            }
        });
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    stop = true;
    for (auto& th : threads) {
        th.join();
    }
    const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    const auto stats = vault->stats();
    return {static_cast<double>(done.load()) / elapsed,
            static_cast<double>(stats.writes) /
                static_cast<double>(std::max<uint64_t>(1, stats.commits))};
}

double bench_reads(const fs::path& dir, int readers, double seconds) {
    auto vault = open_bench_vault(dir, 1024);
    constexpr int k_records = 10000;
    const std::string value(256, 'r');
    auto s = vault->write([&](WriteTxn& txn) -> Status {
        for (int i = 0; i < k_records; ++i) {
            TRY(txn.put(Table::credentials, fmt::format("k{:05}", i), value));
        }
        return {};
    });
    if (!s) {
        throw std::runtime_error(s.error().message);
    }
    std::atomic<bool> stop{false};
    std::atomic<uint64_t> done{0};
    std::vector<std::thread> threads;
    const auto start = Clock::now();
    for (int t = 0; t < readers; ++t) {
        threads.emplace_back([&] {
            uint64_t n = 0;
            while (!stop.load(std::memory_order_relaxed)) {
                const auto key = fmt::format("k{:05}", randombytes_uniform(k_records));
                auto v = vault->get(Table::credentials, key);
                if (!v || !v->has_value() || (*v)->size() != value.size()) {
                    std::fprintf(stderr, "read failed\n");
                    std::exit(1);
                }
                ++n;
            }
            done.fetch_add(n);
        });
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    stop = true;
    for (auto& th : threads) {
        th.join();
    }
    return static_cast<double>(done.load()) /
           std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
    if (sodium_init() < 0) {
        return 1;
    }
    double seconds = 3.0;
    fs::path base;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (std::strcmp(argv[i], "--seconds") == 0) {
            seconds = std::stod(argv[i + 1]);
        } else if (std::strcmp(argv[i], "--dir") == 0) {
            base = argv[i + 1];
        }
    }
    bool own_dir = false;
    if (base.empty()) {
        std::string tmpl = (fs::temp_directory_path() / "agentgw-bench-XXXXXX").string();
        if (::mkdtemp(tmpl.data()) == nullptr) {
            return 1;
        }
        base = tmpl;
        own_dir = true;
    }
    const fs::path dir = base / "vault";

    fmt::print("vault benchmark: {:.0f} s per figure, 256-byte values, in {}\n", seconds,
               base.string());
    fmt::print("{:<44} {:>12}\n", "sealed reads/s, 1 thread",
               fmt::format("{:.0f}", bench_reads(dir, 1, seconds)));
    fmt::print("{:<44} {:>12}\n", "sealed reads/s, 2 threads",
               fmt::format("{:.0f}", bench_reads(dir, 2, seconds)));
    for (int writers : {1, 8, 64}) {
        const auto grouped = bench_writes(dir, writers, 1024, seconds);
        fmt::print("{:<44} {:>12.0f}   ({:.1f} writes/commit)\n",
                   fmt::format("durable writes/s, group commit, {} writers", writers),
                   grouped.writes_per_sec, grouped.writes_per_commit);
    }
    for (int writers : {1, 8, 64}) {
        const auto single = bench_writes(dir, writers, 1, seconds);
        fmt::print("{:<44} {:>12.0f}   ({:.1f} writes/commit)\n",
                   fmt::format("durable writes/s, commit per write, {} writers", writers),
                   single.writes_per_sec, single.writes_per_commit);
    }
    if (own_dir) {
        fs::remove_all(base);
    }
    return 0;
}
