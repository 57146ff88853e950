// TokenRefresher's background refresh against the scripted token endpoint, with a clock the
// test moves: after a failure it waits before asking again, longer after each failure, and a
// success or a new credential ends the wait.
#include <chrono>
#include <optional>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>

#include "daemon/audit/audit_log.hpp"
#include "daemon/credentials/credential_store.hpp"
#include "daemon/metrics/metrics.hpp"
#include "daemon/oauth/refresher.hpp"
#include "daemon/services/service_catalog.hpp"
#include "daemon/upstream/upstream_client.hpp"
#include "tests/support/fake_clock.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/token_stub.hpp"
#include "tests/support/vault_fixture.hpp"

using namespace agentgw;
using nlohmann::json;
using oauth::TokenRefresher;

namespace {

struct Fixture {
    test::TokenStub stub;
    test::TempDir dir;
    test::FakeClock clock;
    std::unique_ptr<Vault> vault;
    std::unique_ptr<CredentialStore> credentials;
    std::unique_ptr<AuditLog> audit;
    Metrics metrics;
    boost::asio::io_context ioc;
    upstream::UpstreamClient client{ioc};
    std::unique_ptr<TokenRefresher> refresher;
    ServiceCatalog catalog;

    explicit Fixture(const std::string& refresh_script)
        : stub(test::TokenStubOptions{.refresh_script = refresh_script}) {
        auto opened = test::open_vault(dir / "state", test::key_at(dir / "k"));
        REQUIRE(opened);
        vault = std::move(*opened);
        credentials = std::make_unique<CredentialStore>(*vault, clock);
        audit = std::make_unique<AuditLog>(*vault, clock);
        refresher = std::make_unique<TokenRefresher>(client, *credentials, *audit, metrics, clock);
        const json service = {{"id", "stub"},
                              {"name", "stub"},
                              {"base_url", stub.base_url()},
                              {"auth",
                               {{"type", "oauth2"},
                                {"grant", "refresh_token"},
                                {"token_url", stub.base_url() + "/token"},
                                {"client_id", "stub-client"},
                                {"refresh_before_secs", 300}}}};
        auto parsed = ServiceCatalog::parse(json{{"services", {service}}}.dump(), "services");
        INFO((parsed ? std::string() : parsed.error().message));
        REQUIRE(parsed);
        catalog = std::move(*parsed);
    }

    ~Fixture() {
        client.abort_all("the test is over");
        ioc.restart();
        ioc.poll();
    }

    // Runs the loop until `done` says so (at most 20 s).
    template <typename Done>
    void drive(Done done) {
        ioc.restart();
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
        while (!done() && std::chrono::steady_clock::now() < deadline) {
            ioc.run_one_for(std::chrono::milliseconds(100));
        }
        REQUIRE(done());
    }

    // Starts `task` on the client's io_context; what it leaves behind says when it has ended
    // (and holds its exception, if any). Shared, so a task left running by a failed test does
    // not write to a frame that is gone.
    struct Started {
        bool done = false;
        std::exception_ptr error;
    };
    std::shared_ptr<Started> start(boost::asio::awaitable<void> task) {
        auto started = std::make_shared<Started>();
        boost::asio::co_spawn(ioc, std::move(task), [started](std::exception_ptr e) {
            started->error = std::move(e);
            started->done = true;
        });
        return started;
    }

    void run(boost::asio::awaitable<void> task) {
        const auto started = start(std::move(task));
        drive([&] { return started->done; });
        if (started->error) {
            std::rethrow_exception(started->error);
        }
    }

    template <typename T>
    T run(boost::asio::awaitable<T> task) {
        auto out = std::make_shared<std::optional<T>>();
        run([](std::shared_ptr<std::optional<T>> out,
               boost::asio::awaitable<T> task) -> boost::asio::awaitable<void> {
            out->emplace(co_await std::move(task));
        }(out, std::move(task)));
        return std::move(**out);
    }

    // A token set whose access token expires in 100 s: due, with refresh_before_secs 300.
    std::string store(const std::string& refresh_token) {
        CredentialInput in;
        in.service = "stub";
        in.type = "oauth2";
        in.access_token = "stub-access-old";
        in.refresh_token = refresh_token;
        in.expires_in = 100;
        auto info = run(credentials->set(in));
        INFO((info ? std::string() : info.error().message));
        REQUIRE(info);
        return info->key;
    }

    // One look of the background refresh; how many refresh requests the endpoint has had.
    size_t look(const std::string& key) {
        run(refresher->refresh_if_due(*catalog.find("stub"), key));
        return stub.requests("refresh_token").size();
    }
};

}  // namespace

TEST_CASE("the background refresh waits longer after each failure, up to a cap",
          "[oauth][refresh][stub]") {
    Fixture f("denied");  // 400 access_denied: a failure, neither retried nor a refused grant
    const std::string key = f.store("stub-refresh-0");
    const int64_t first = TokenRefresher::k_backoff_first_secs;

    CHECK(f.look(key) == 1);
    f.clock.advance_secs(15);  // the next look, 15 s on: still waiting
    CHECK(f.look(key) == 1);
    f.clock.advance_secs(first - 15);
    CHECK(f.look(key) == 2);  // 30 s after the first failure
    f.clock.advance_secs(2 * first - 1);
    CHECK(f.look(key) == 2);  // the second failure waits twice as long
    f.clock.advance_secs(1);
    CHECK(f.look(key) == 3);
    f.clock.advance_secs(4 * first - 1);
    CHECK(f.look(key) == 3);
    f.clock.advance_secs(1);
    CHECK(f.look(key) == 4);

    // 240, 480 s, then the cap: never longer than k_backoff_max_secs.
    for (const int64_t wait : {8 * first, 16 * first, TokenRefresher::k_backoff_max_secs,
                               TokenRefresher::k_backoff_max_secs}) {
        const size_t before = f.stub.requests("refresh_token").size();
        f.clock.advance_secs(wait - 1);
        CHECK(f.look(key) == before);
        f.clock.advance_secs(1);
        CHECK(f.look(key) == before + 1);
    }

    // A clock set back does not make a wait longer than itself: 200 s back right after a
    // failure, the 900 s wait would have 1,100 s to go.
    const size_t before = f.stub.requests("refresh_token").size();
    f.clock.advance_secs(-200);
    CHECK(f.look(key) == before + 1);
}

TEST_CASE("a clock set back ends the background refresh's first wait too",
          "[oauth][refresh][stub]") {
    Fixture f("denied");
    const std::string key = f.store("stub-refresh-0");
    REQUIRE(f.look(key) == 1);  // waiting 30 s now
    f.clock.advance_secs(-60);  // 90 s to go: more than the wait itself
    CHECK(f.look(key) == 2);
    f.clock.advance_secs(2 * TokenRefresher::k_backoff_first_secs - 1);
    CHECK(f.look(key) == 2);  // the second wait holds as usual
}

TEST_CASE("a look while a refresh is under way leaves it alone", "[oauth][refresh][stub]") {
    Fixture f("slow_denied");  // fails after 2 s
    const std::string key = f.store("stub-refresh-0");
    const Service& service = *f.catalog.find("stub");
    // A second look comes while the first one's refresh still waits for its answer (as the
    // next pass does when the token endpoint is slow): it adds neither a request nor a failure.
    const auto first = f.start(f.refresher->refresh_if_due(service, key));
    f.drive([&] { return f.stub.requests("refresh_token").size() == 1; });
    f.run(f.refresher->refresh_if_due(service, key));
    CHECK_FALSE(first->done);
    f.drive([&] { return first->done; });
    CHECK(f.stub.requests("refresh_token").size() == 1);
    // One failure: the first wait.
    f.clock.advance_secs(TokenRefresher::k_backoff_first_secs);
    CHECK(f.look(key) == 2);
}

TEST_CASE("a success or a new credential ends the background refresh's wait",
          "[oauth][refresh][stub]") {
    Fixture f("denied");
    const std::string key = f.store("stub-refresh-0");
    REQUIRE(f.look(key) == 1);
    f.clock.advance_secs(TokenRefresher::k_backoff_first_secs);
    REQUIRE(f.look(key) == 2);  // waiting 60 s now

    SECTION("a new credential is looked at at once") {
        CHECK(f.store("stub-refresh-new") == key);
        CHECK(f.look(key) == 3);
        const json last = f.stub.requests("refresh_token").back();
        CHECK(last.at("form").at("refresh_token") == "stub-refresh-new");
    }
    SECTION("a success starts afresh") {
        f.stub.script({{"refresh", {"tokens", "denied"}}});
        f.clock.advance_secs(2 * TokenRefresher::k_backoff_first_secs);
        REQUIRE(f.look(key) == 3);  // new tokens, good for an hour: not due again for a while
        CHECK(f.look(key) == 3);
        auto tokens = f.credentials->load_tokens(key);
        REQUIRE(tokens);
        REQUIRE(*tokens);
        CHECK((**tokens)->access_token == "stub-access-1");
        // Due again later, the refresh fails: the wait is the first one again, not 120 s.
        f.clock.advance_secs(3600 - 100);
        CHECK(f.look(key) == 4);
        f.clock.advance_secs(TokenRefresher::k_backoff_first_secs);
        CHECK(f.look(key) == 5);
    }
}
