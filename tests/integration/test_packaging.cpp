// What `cmake --install` puts where, and the systemd units as systemd-analyze sees them once
// installed: valid (verify, with the man pages they name) and confined (an exposure score of
// at most 2.0, "OK").
#include <algorithm>
#include <filesystem>
#include <regex>
#include <sys/stat.h>

#include <catch2/catch.hpp>

#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"

using namespace agentgw::test;
namespace fs = std::filesystem;

namespace {

// Installs this build under `prefix`, below DESTDIR `destdir` when given.
void install(const fs::path& prefix, const std::optional<fs::path>& destdir = std::nullopt) {
    std::map<std::string, std::optional<std::string>> env;
    if (destdir) {
        env["DESTDIR"] = destdir->string();
    }
    const RunResult r = run({AGENTGW_CMAKE, "--install", AGENTGW_BUILD_DIR, "--prefix", prefix},
                            env, std::nullopt, 60s);
    INFO("cmake --install: " << r.out << r.err);
    REQUIRE(r.code == 0);
}

// Every file and symlink below `root`, relative to it, sorted.
std::vector<std::string> files_below(const fs::path& root) {
    std::vector<std::string> out;
    for (const auto& e : fs::recursive_directory_iterator(root)) {
        if (!e.is_directory()) {
            out.push_back(fs::relative(e.path(), root).string());
        }
    }
    std::sort(out.begin(), out.end());
    return out;
}

}  // namespace

TEST_CASE("cmake --install with DESTDIR places exactly the expected files", "[install]") {
    TempDir dir;
    const fs::path dest = dir / "dest";
    install("/usr", dest);

    const std::vector<std::string> expected = {
        "usr/bin/agentgw",
        "usr/lib/systemd/system/agentgwd-control.socket",
        "usr/lib/systemd/system/agentgwd-proxy.socket",
        "usr/lib/systemd/system/agentgwd.service",
        "usr/lib/sysusers.d/agentgw.conf",
        "usr/lib/tmpfiles.d/agentgw.conf",
        "usr/sbin/agentgwd",
        "usr/share/bash-completion/completions/agentgw",
        "usr/share/fish/vendor_completions.d/agentgw.fish",
        "usr/share/man/man1/agentgw.1",
        "usr/share/man/man5/agentgw-services.5",
        "usr/share/man/man8/agentgwd.8",
        "usr/share/zsh/vendor-completions/_agentgw",
    };
    CHECK(files_below(dest) == expected);

    for (const char* program : {"usr/bin/agentgw", "usr/sbin/agentgwd"}) {
        CHECK((mode_of(dest / program) & 0111) == 0111);
    }
    // The unit names the daemon where this install put it.
    const std::string unit = read_file(dest / "usr/lib/systemd/system/agentgwd.service");
    CHECK(std::regex_search(unit, std::regex("\nExecStart=/usr/sbin/agentgwd ")));
    const RunResult version = run({(dest / "usr/bin/agentgw").string(), "--version"});
    CHECK(version.code == 0);
    CHECK_FALSE(version.out.empty());
}

TEST_CASE("the installed units pass systemd-analyze verify and security", "[install][systemd]") {
    TempDir dir;
    // A real prefix (no DESTDIR): verify checks that ExecStart= names an executable.
    const fs::path prefix = dir / "usr";
    install(prefix);
    const fs::path units = prefix / "lib/systemd/system";
    const std::string unit = read_file(units / "agentgwd.service");
    CHECK(unit.find("ExecStart=" + (prefix / "sbin/agentgwd").string() + " ") != std::string::npos);

    // verify also runs man(1) on each Documentation=man:… page: those come from this install.
    const std::map<std::string, std::optional<std::string>> env = {
        {"MANPATH", (prefix / "share/man").string()}, {"SYSTEMD_PAGER", ""}};
    const RunResult verify = run(
        {program_path("systemd-analyze"), "verify", (units / "agentgwd.service").string(),
         (units / "agentgwd-control.socket").string(), (units / "agentgwd-proxy.socket").string()},
        env, std::nullopt, 60s);
    INFO("systemd-analyze verify: " << verify.out << verify.err);
    CHECK(verify.code == 0);
    CHECK(verify.err.empty());

    // The threshold is in tenths: 20 is an exposure of 2.0.
    const RunResult security = run({program_path("systemd-analyze"), "security", "--offline=yes",
                                    "--threshold=20", (units / "agentgwd.service").string()},
                                   env, std::nullopt, 60s);
    INFO("systemd-analyze security: " << security.out << security.err);
    CHECK(security.code == 0);
    std::smatch m;
    REQUIRE(std::regex_search(
        security.out, m, std::regex(R"(Overall exposure level for agentgwd\.service: ([0-9.]+))")));
    CHECK(std::stod(m[1]) <= 2.0);
}
