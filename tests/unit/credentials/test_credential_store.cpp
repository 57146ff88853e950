// CredentialStore against a real vault in a temp dir: the precedence of agent, user and service
// scope, and resolve()'s kept answers, which must follow every change to the credentials table,
// whoever writes it, and survive writes to any other table.
#include <catch2/catch.hpp>

#include "daemon/credentials/credential_store.hpp"
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
    std::unique_ptr<CredentialStore> store;

    Fixture() {
        const auto key = test::key_at(dir / "k");
        auto opened = test::open_vault(dir / "state", key);
        REQUIRE(opened);
        vault = std::move(*opened);
        store = std::make_unique<CredentialStore>(*vault, clock);
        // The owners a user- or agent-scoped credential needs.
        REQUIRE(test::put(*vault, Table::users, "u1", "{}"));
        REQUIRE(test::put(*vault, Table::agents, "a1", "{}"));
    }

    void set(CredentialScope scope, const std::string& owner, const std::string& secret) {
        CredentialInput in;
        in.service = "svc";
        in.scope = scope;
        in.owner_id = owner;
        in.type = "api_key";
        in.secret = secret;
        auto info = run_await(store->set(in));
        INFO((info ? std::string() : info.error().message));
        REQUIRE(info);
    }

    std::shared_ptr<const ResolvedCredential> resolve() {
        auto r = store->resolve("svc", "u1", "a1");
        REQUIRE(r);
        return *r;
    }

    // The secret resolve() gives now, or "" for none.
    std::string secret() {
        auto r = resolve();
        return r ? r->secret : "";
    }
};

}  // namespace

TEST_CASE("resolve takes the agent's, then the user's, then the service's credential",
          "[credentials]") {
    Fixture f;
    CHECK(f.resolve() == nullptr);
    f.set(CredentialScope::service, "", "for-everyone");
    CHECK(f.secret() == "for-everyone");
    f.set(CredentialScope::user, "u1", "for-the-user");
    CHECK(f.secret() == "for-the-user");
    CHECK(f.resolve()->scope == CredentialScope::user);
    f.set(CredentialScope::agent, "a1", "for-the-agent");
    CHECK(f.secret() == "for-the-agent");
    CHECK(f.resolve()->scope == CredentialScope::agent);

    REQUIRE(run_await(f.store->remove("svc", CredentialScope::agent, "a1")));
    CHECK(f.secret() == "for-the-user");
    REQUIRE(run_await(f.store->remove("svc", CredentialScope::user, "u1")));
    CHECK(f.secret() == "for-everyone");
    REQUIRE(run_await(f.store->remove("svc", CredentialScope::service, "")));
    CHECK(f.resolve() == nullptr);
}

TEST_CASE("resolve keeps its answer until the credentials table changes", "[credentials]") {
    Fixture f;
    f.set(CredentialScope::service, "", "first");
    const auto kept = f.resolve();
    REQUIRE(kept);
    CHECK(f.resolve() == kept);  // the same answer, not read again

    SECTION("writes to other tables leave it") {
        const uint64_t before = f.vault->version(Table::credentials);
        REQUIRE(f.vault->write([](WriteTxn& txn) { return txn.put(Table::settings, "x", "1"); }));
        CHECK(f.vault->version(Table::credentials) == before);
        CHECK(f.resolve() == kept);
    }
    SECTION("a replaced credential is read again") {
        f.set(CredentialScope::service, "", "second");
        CHECK(f.secret() == "second");
        CHECK(kept->secret == "first");  // a request holding the old one keeps it intact
    }
    SECTION("a change made by another writer is seen") {
        f.set(CredentialScope::user, "u1", "users");
        const auto users = f.resolve();
        CHECK(users->secret == "users");
        // The way a user's or agent's deletion removes its credentials: inside another write.
        const uint64_t before = f.vault->version(Table::credentials);
        REQUIRE(f.vault->write(
            [](WriteTxn& txn) -> Status { return CredentialStore::remove_owned(txn, "u1"); }));
        CHECK(f.vault->version(Table::credentials) != before);
        CHECK(f.secret() == "first");
        CHECK(users->secret == "users");
    }
    SECTION("a failed write to the table does no harm") {
        REQUIRE_FALSE(f.vault->write([](WriteTxn& txn) -> Status {
            TRY(txn.put(Table::credentials, "junk", "{}"));
            return make_error(Code::internal, "rolled back");
        }));
        CHECK(f.secret() == "first");
    }
}
