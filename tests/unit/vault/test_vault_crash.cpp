#include <random>
#include <set>
#include <signal.h>

#include <catch2/catch.hpp>

#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/vault_fixture.hpp"

using namespace agentgw;
using namespace std::chrono_literals;

TEST_CASE("every acknowledged write survives SIGKILL", "[vault][crash]") {
    test::TempDir dir;
    const auto key = test::key_at(dir / "master.key");
    std::set<std::string> acked;
    std::mt19937 rng(std::random_device{}());

    for (int round = 0; round < 4; ++round) {
        test::Child writer(
            {AGENTGW_VAULT_WRITER, (dir / "state").string(), (dir / "master.key").string(), "8"});
        // Let it run for a random moment (after at least one acknowledgement), then kill it.
        const auto first = writer.read_stdout_line(10s);
        REQUIRE(first.has_value());
        const auto deadline =
            std::chrono::steady_clock::now() + std::chrono::milliseconds(rng() % 300);
        std::vector<std::string> lines{*first};
        while (std::chrono::steady_clock::now() < deadline) {
            if (auto line = writer.read_stdout_line(5ms)) {
                lines.push_back(*line);
            }
        }
        writer.signal(SIGKILL);
        REQUIRE(writer.wait(10s) == 128 + SIGKILL);
        // Lines already written to the pipe were acknowledged before the kill.
        while (auto line = writer.read_stdout_line(0ms)) {
            lines.push_back(*line);
        }
        for (const auto& line : lines) {
            REQUIRE(line.rfind("acked ", 0) == 0);
            acked.insert(line.substr(6));
        }

        auto vault = test::open_vault(dir / "state", key);
        REQUIRE(vault);
        // SIGKILL leaves the page cache alone, so this test alone cannot tell fsync from none;
        // the environment must also be configured to flush every commit.
        REQUIRE((*vault)->stats().full_sync);
        for (const auto& k : acked) {
            auto value = (*vault)->get(Table::audit, k);
            REQUIRE(value);
            REQUIRE(value->has_value());
            REQUIRE(as_view(**value) == "value:" + k);
        }
    }
    CHECK(acked.size() > 4);
}
