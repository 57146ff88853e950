#include <cstdlib>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "common/fs.hpp"
#include "common/paths.hpp"
#include "common/unique_fd.hpp"
#include "common/utf8.hpp"
#include "tests/support/temp_dir.hpp"

using namespace agentgw;
namespace fs = std::filesystem;

TEST_CASE("ensure_private_dir creates tight directories and refuses loose ones", "[common]") {
    test::TempDir dir;
    REQUIRE(ensure_private_dir(dir / "a" / "b", 0700));
    CHECK(test::mode_of(dir / "a" / "b") == 0700);
    CHECK(ensure_private_dir(dir / "a" / "b", 0700));  // idempotent

    fs::create_directory(dir / "loose");
    fs::permissions(dir / "loose", fs::perms(0770));
    auto loose = ensure_private_dir(dir / "loose", 0700);
    REQUIRE_FALSE(loose);
    CHECK(loose.error().code == Code::permission_denied);
    CHECK(loose.error().message.find("0770") != std::string::npos);
    CHECK(ensure_private_dir(dir / "loose", 0770));  // within what is allowed

    test::write_file(dir / "file", "x");
    CHECK(ensure_private_dir(dir / "file", 0700).error().code == Code::invalid_argument);
}

TEST_CASE("check_private_fd accepts 0600 files only", "[common]") {
    test::TempDir dir;
    for (unsigned mode : {0600u, 0400u, 0640u, 0604u, 0660u}) {
        const auto path = dir / ("f" + std::to_string(mode));
        test::write_file(path, "secret", mode);
        UniqueFd fd(::open(path.c_str(), O_RDONLY));
        REQUIRE(fd.valid());
        INFO(mode);
        CHECK(check_private_fd(fd.get(), path).ok() == ((mode & 077) == 0));
    }
    UniqueFd d(::open(dir.path().c_str(), O_RDONLY | O_DIRECTORY));
    CHECK(check_private_fd(d.get(), dir.path()).error().code == Code::invalid_argument);
}

TEST_CASE("the CLI falls back to the system socket when its own is absent", "[common]") {
    test::TempDir dir;
    const fs::path system_socket = dir / "system.sock";
    fs::create_directories(dir / "xdg" / "agentgw");
    ::unsetenv("RUNTIME_DIRECTORY");
    ::setenv("XDG_RUNTIME_DIR", (dir / "xdg").c_str(), 1);
    const fs::path own =
        ::geteuid() == 0 ? fs::path(k_system_socket) : dir / "xdg" / "agentgw" / "agentgw.sock";
    REQUIRE_FALSE(fs::exists(k_system_socket));  // a daemon of the machine's own would interfere

    // Neither exists: the default, so the error names the socket the user would expect.
    CHECK(*client_socket_path(system_socket) == own);

    test::write_file(system_socket, "");
    CHECK(*client_socket_path(system_socket) == system_socket);

    if (::geteuid() != 0) {
        // The user's own daemon, once it exists, wins.
        test::write_file(own, "");
        CHECK(*client_socket_path(system_socket) == own);
    }
}

TEST_CASE("a system socket the user may not reach is still the one the CLI tries", "[common]") {
    // Needs a user other than root, whom no directory mode stops.
    if (::geteuid() != 0) {
        WARN("not run: needs root, to look as another user");
        return;
    }
    test::TempDir dir;
    fs::create_directories(dir / "run");
    fs::permissions(dir / "run", fs::perms(0750));  // as the unit's RuntimeDirectoryMode
    const fs::path system_socket = dir / "run" / "agentgw.sock";
    test::write_file(system_socket, "");
    fs::create_directories(dir / "xdg");
    REQUIRE(::chown(dir.path().c_str(), 65534, 65534) == 0);
    REQUIRE(::chown((dir / "xdg").c_str(), 65534, 65534) == 0);

    // As nobody, in a child: the answer comes back as the exit status.
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        if (::setgid(65534) != 0 || ::setuid(65534) != 0) {
            ::_exit(3);
        }
        ::unsetenv("RUNTIME_DIRECTORY");
        ::setenv("XDG_RUNTIME_DIR", (dir / "xdg").c_str(), 1);
        const auto path = client_socket_path(system_socket);
        ::_exit(!path ? 4 : *path == system_socket ? 0 : 1);
    }
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    REQUIRE(WIFEXITED(status));
    // 1: the user's own (absent) socket was chosen, so the CLI would report "no daemon".
    CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("text is cut between UTF-8 characters, never inside one", "[common][utf8]") {
    const std::string text = "x\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80";  // x é € 😀
    CHECK(utf8_prefix(text, 100) == text);
    CHECK(utf8_prefix(text, 1) == "x");
    CHECK(utf8_prefix(text, 2) == "x");  // not half of é
    CHECK(utf8_prefix(text, 3) == "x\xc3\xa9");
    CHECK(utf8_prefix(text, 5) == "x\xc3\xa9");  // not two thirds of €
    CHECK(utf8_prefix(text, 6) == "x\xc3\xa9\xe2\x82\xac");
    CHECK(utf8_prefix(text, 9) == "x\xc3\xa9\xe2\x82\xac");
    CHECK(utf8_prefix(text, 0).empty());

    CHECK(utf8_sequence_length("a") == 1);
    CHECK(utf8_sequence_length("\xc3\xa9") == 2);
    CHECK(utf8_sequence_length("\xf0\x9f\x98\x80") == 4);
    CHECK(utf8_sequence_length("\xc0\x80") == 0);      // an overlong NUL
    CHECK(utf8_sequence_length("\xed\xa0\x80") == 0);  // a surrogate
    CHECK(utf8_sequence_length("\xc3") == 0);          // cut short
    CHECK(utf8_sequence_length("\x80") == 0);
    CHECK(utf8_sequence_length("") == 0);
}
