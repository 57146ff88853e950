#include <catch2/catch.hpp>

#include "daemon/identity/registry.hpp"
#include "tests/support/fake_clock.hpp"
#include "tests/support/run_await.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/vault_fixture.hpp"

using namespace agentgw;
using agentgw::test::run_await;

namespace {

struct Fixture {
    test::TempDir dir;
    test::FakeClock clock;
    std::unique_ptr<Vault> vault;
    std::unique_ptr<Registry> registry;

    Fixture() {
        const auto key = test::key_at(dir / "k");
        auto opened = test::open_vault(dir / "state", key);
        REQUIRE(opened);
        vault = std::move(*opened);
        auto keyring = Registry::load_keyring(*vault);
        REQUIRE(keyring);
        registry = std::make_unique<Registry>(*vault, clock, std::move(*keyring), 3600);
    }

    IssuedKey new_agent(const std::string& name) {
        auto user = run_await(registry->create_user("owner-" + name, "o@example.com"));
        REQUIRE(user);
        auto issued = run_await(registry->create_agent({user->id, name, "", {"openai"}, 30}));
        REQUIRE(issued);
        return std::move(*issued);
    }
};

bool accepted(const std::variant<Agent, AuthError>& r) {
    return std::holds_alternative<Agent>(r);
}

AuthFailure failure(const std::variant<Agent, AuthError>& r) {
    REQUIRE(std::holds_alternative<AuthError>(r));
    return std::get<AuthError>(r).failure;
}

}  // namespace

TEST_CASE("a new agent's key and session authenticate", "[registry]") {
    Fixture f;
    const auto issued = f.new_agent("worker");
    const auto by_key = f.registry->authenticate_key(issued.api_key);
    REQUIRE(accepted(by_key));
    CHECK(std::get<Agent>(by_key).name == "worker");
    CHECK(accepted(f.registry->authenticate_session(issued.session)));

    std::string wrong = issued.api_key;
    wrong.back() = wrong.back() == 'A' ? 'B' : 'A';
    CHECK(failure(f.registry->authenticate_key(wrong)) == AuthFailure::unauthorized);
    CHECK(failure(f.registry->authenticate_key("not-a-key")) == AuthFailure::unauthorized);
    CHECK(failure(f.registry->authenticate_session("a.b.c")) == AuthFailure::unauthorized);
}

TEST_CASE("rotation without grace rejects the old key and sessions at once", "[registry]") {
    Fixture f;
    const auto first = f.new_agent("worker");
    auto rotated = run_await(f.registry->rotate(first.agent.id, 0));
    REQUIRE(rotated);
    CHECK(rotated->agent.id == first.agent.id);
    CHECK(rotated->agent.generation == first.agent.generation + 1);

    CHECK(failure(f.registry->authenticate_key(first.api_key)) == AuthFailure::unauthorized);
    CHECK(failure(f.registry->authenticate_session(first.session)) == AuthFailure::unauthorized);
    CHECK(accepted(f.registry->authenticate_key(rotated->api_key)));
    CHECK(accepted(f.registry->authenticate_session(rotated->session)));
}

TEST_CASE("rotation with grace keeps the old key and sessions until it ends", "[registry]") {
    Fixture f;
    const auto first = f.new_agent("worker");
    auto rotated = run_await(f.registry->rotate(first.agent.id, 300));
    REQUIRE(rotated);

    f.clock.advance_secs(299);
    CHECK(accepted(f.registry->authenticate_key(first.api_key)));
    CHECK(accepted(f.registry->authenticate_session(first.session)));
    CHECK(accepted(f.registry->authenticate_key(rotated->api_key)));

    f.clock.advance_secs(1);
    CHECK(failure(f.registry->authenticate_key(first.api_key)) == AuthFailure::unauthorized);
    CHECK(failure(f.registry->authenticate_session(first.session)) == AuthFailure::unauthorized);
    CHECK(accepted(f.registry->authenticate_key(rotated->api_key)));
    CHECK(accepted(f.registry->authenticate_session(rotated->session)));

    // A second rotation ends the first one's grace for good.
    auto again = run_await(f.registry->rotate(first.agent.id, 300));
    REQUIRE(again);
    CHECK(accepted(f.registry->authenticate_key(rotated->api_key)));
    CHECK(failure(f.registry->authenticate_key(first.api_key)) == AuthFailure::unauthorized);
}

TEST_CASE("a session got with the old key during grace ends with the grace", "[registry]") {
    Fixture f;
    const auto first = f.new_agent("worker");
    auto rotated = run_await(f.registry->rotate(first.agent.id, 300));
    REQUIRE(rotated);
    f.clock.advance_secs(100);

    Registry::KeyUse used = Registry::KeyUse::current;
    auto by_old = f.registry->authenticate_key(first.api_key, &used);
    REQUIRE(accepted(by_old));
    CHECK(used == Registry::KeyUse::previous);
    int64_t expires_at = 0;
    const std::string session =
        f.registry->issue_session(std::get<Agent>(by_old), expires_at, used);
    CHECK(expires_at == f.clock.now_secs() + 200);  // the grace's end, not session_ttl away
    CHECK(accepted(f.registry->authenticate_session(session)));

    auto by_new = f.registry->authenticate_key(rotated->api_key, &used);
    REQUIRE(accepted(by_new));
    CHECK(used == Registry::KeyUse::current);
    int64_t new_expires_at = 0;
    const std::string current =
        f.registry->issue_session(std::get<Agent>(by_new), new_expires_at, used);
    CHECK(new_expires_at == f.clock.now_secs() + f.registry->session_ttl_secs());

    f.clock.advance_secs(199);
    CHECK(accepted(f.registry->authenticate_session(session)));
    f.clock.advance_secs(1);
    CHECK(failure(f.registry->authenticate_session(session)) == AuthFailure::unauthorized);
    CHECK(accepted(f.registry->authenticate_session(current)));
}

TEST_CASE("sessions and keys expire on the clock", "[registry]") {
    Fixture f;
    const auto issued = f.new_agent("worker");
    f.clock.advance_secs(3600 + 61);  // past the TTL and the 60 s leeway
    CHECK(failure(f.registry->authenticate_session(issued.session)) ==
          AuthFailure::session_expired);
    CHECK(accepted(f.registry->authenticate_key(issued.api_key)));
    f.clock.advance_secs(30 * 86400);
    CHECK(failure(f.registry->authenticate_key(issued.api_key)) == AuthFailure::key_expired);
}

TEST_CASE("a session ends when the key it came from expires", "[registry]") {
    Fixture f;
    const auto issued = f.new_agent("worker");  // a key for 30 days
    f.clock.advance_secs(30 * 86400 - 100);
    auto agent = f.registry->authenticate_key(issued.api_key);
    REQUIRE(accepted(agent));
    int64_t expires_at = 0;
    const std::string session = f.registry->issue_session(std::get<Agent>(agent), expires_at);
    CHECK(expires_at == std::get<Agent>(agent).key_expires_at);  // not session_ttl away
    CHECK(accepted(f.registry->authenticate_session(session)));

    f.clock.advance_secs(100);  // the key's expiry, within the session token's leeway
    CHECK(failure(f.registry->authenticate_session(session)) == AuthFailure::key_expired);
    CHECK(failure(f.registry->authenticate_key(issued.api_key)) == AuthFailure::key_expired);

    // A rotation gives a new key, and its sessions work again.
    auto rotated = run_await(f.registry->rotate(issued.agent.id, 0));
    REQUIRE(rotated);
    CHECK(accepted(f.registry->authenticate_session(rotated->session)));
}

TEST_CASE("a credential that cannot be checked is not called wrong", "[registry]") {
    Fixture f;
    const auto issued = f.new_agent("worker");
    // The agent's record no longer parses: the vault cannot say whether the key is right.
    REQUIRE(test::put(*f.vault, Table::agents, issued.agent.id, "not an agent record"));
    CHECK(failure(f.registry->authenticate_key(issued.api_key)) == AuthFailure::unavailable);
    CHECK(failure(f.registry->authenticate_session(issued.session)) == AuthFailure::unavailable);
    // A key that names no agent at all is still simply wrong.
    CHECK(failure(f.registry->authenticate_key("agw_" + std::string(43, 'Q'))) ==
          AuthFailure::unauthorized);
}

TEST_CASE("a disabled or deleted agent is refused", "[registry]") {
    Fixture f;
    const auto issued = f.new_agent("worker");
    auto disabled = run_await(f.registry->update_agent(issued.agent.id, [](Agent& a) -> Status {
        a.enabled = false;
        return {};
    }));
    REQUIRE(disabled);
    CHECK(failure(f.registry->authenticate_key(issued.api_key)) == AuthFailure::disabled);
    CHECK(failure(f.registry->authenticate_session(issued.session)) == AuthFailure::disabled);

    REQUIRE(run_await(f.registry->delete_agent(issued.agent.id)));
    CHECK(failure(f.registry->authenticate_key(issued.api_key)) == AuthFailure::unauthorized);
    CHECK(failure(f.registry->authenticate_session(issued.session)) == AuthFailure::unauthorized);
    CHECK(f.registry->find_agent("worker").error().code == Code::not_found);
}

TEST_CASE("names are unique and lookups take a name or an id", "[registry]") {
    Fixture f;
    const auto issued = f.new_agent("worker");
    CHECK(f.registry->find_agent(issued.agent.id)->name == "worker");
    CHECK(f.registry->find_agent("worker")->id == issued.agent.id);
    auto dup_user = run_await(f.registry->create_user("owner-worker", "x@example.com"));
    REQUIRE_FALSE(dup_user);
    CHECK(dup_user.error().code == Code::conflict);
    auto dup_agent =
        run_await(f.registry->create_agent({issued.agent.user_id, "worker", "", {}, 1}));
    REQUIRE_FALSE(dup_agent);
    CHECK(dup_agent.error().code == Code::conflict);
    // The session keyring survives a reload from the vault.
    auto keyring = Registry::load_keyring(*f.vault);
    REQUIRE(keyring);
    Registry again(*f.vault, f.clock, std::move(*keyring), 3600);
    CHECK(accepted(again.authenticate_session(issued.session)));
}
