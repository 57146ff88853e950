// hub_fill: publishes many hub blobs straight into a stopped agentgwd's vault, as one agent,
// through the daemon's own Hub::publish (so the records, the expiry index and the usage record
// are exactly what the daemon writes). bench/hub_bench.sh uses it to reach 1,000,000 live
// blobs in seconds rather than through HTTP, and to set up a mass expiry.
//
//   hub_fill --state-dir DIR (--agent-id ID | --agent-name NAME) --count N [--bytes B]
//            [--ttl SECS] [--name NAME] [--in-flight K] [--tokens-out FILE] [--sample K]
//            [--key-file FILE | --passphrase-file FILE]
//
// The vault is opened as agentgwd opens it (state lock, then the master secret in SPEC §6's
// order), so the daemon must be stopped. The hub's clock is frozen at start: every blob gets
// the same created_at, and so a fill with one --ttl expires at one moment, printed as
// `expires_at_ms`. The quotas are lifted for the fill; --ttl and --bytes are bounded only
// by what the daemon's settings accept.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <string>
#include <sys/stat.h>
#include <vector>

#include <CLI/CLI.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fmt/format.h>
#include <sodium.h>

#include "common/log.hpp"
#include "daemon/config.hpp"
#include "daemon/crypto/encoding.hpp"
#include "daemon/hub/hub.hpp"
#include "daemon/identity/registry.hpp"
#include "daemon/util/clock.hpp"
#include "daemon/vault/key_source.hpp"
#include "daemon/vault/vault.hpp"

using namespace agentgw;
namespace asio = boost::asio;
namespace fs = std::filesystem;
using SteadyClock = std::chrono::steady_clock;

namespace {

struct Options {
    fs::path state_dir;
    fs::path key_file;
    fs::path passphrase_file;
    std::string agent_id;
    std::string agent_name;
    uint64_t count = 0;
    size_t bytes = 256;
    int64_t ttl_secs = 86400;
    std::string name = "bench-blob";
    size_t in_flight = 512;
    fs::path tokens_out;
    size_t sample = 1000;
};

// Every blob of one fill is created at the same instant.
class FrozenClock final : public Clock {
  public:
    explicit FrozenClock(int64_t ms) : ms_(ms) {}
    int64_t now_ms() const override { return ms_; }

  private:
    int64_t ms_;
};

// What the publishing coroutines share. They all run on the one io_context thread.
struct Fill {
    Fill(Hub& h, const Options& o, const Agent& a, const std::string& d)
        : hub(h), options(o), agent(a), data(d) {}
    Hub& hub;
    const Options& options;
    const Agent& agent;
    const std::string& data;
    uint64_t next = 0;       // publishes started
    uint64_t done = 0;       // publishes durable
    uint64_t reservoir = 0;  // tokens offered to the sample so far
    std::vector<std::string> sample;
    std::string failure;  // the first error; stops every worker
    int64_t expires_ms = 0;
};

// A uniform sample of the tokens (reservoir sampling over completion order).
void offer(Fill& fill, const std::string& token) {
    const uint64_t seen = fill.reservoir++;
    if (fill.sample.size() < fill.options.sample) {
        fill.sample.push_back(token);
        return;
    }
    const uint64_t j = seen < std::numeric_limits<uint32_t>::max()
                           ? randombytes_uniform(static_cast<uint32_t>(seen + 1))
                           : seen;
    if (j < fill.sample.size()) {
        fill.sample[j] = token;
    }
}

// One of --in-flight workers: publishes until the count is reached or a publish fails.
asio::awaitable<void> publish_worker(Fill& fill) {
    while (fill.failure.empty() && fill.next < fill.options.count) {
        ++fill.next;
        BlobInput input;
        input.publisher_id = fill.agent.id;
        input.publisher_name = fill.agent.name;
        input.name = fill.options.name;
        input.data = fill.data;
        input.ttl_secs = fill.options.ttl_secs;
        const Result<PublishedBlob> published = co_await fill.hub.publish(input);
        if (!published) {
            if (fill.failure.empty()) {
                fill.failure = published.error().message;
            }
            co_return;
        }
        fill.expires_ms = published->expires_ms;
        offer(fill, published->token);
        ++fill.done;
    }
}

// Prints the progress once a second until `timer` is cancelled (the last worker does that).
asio::awaitable<void> report_progress(const Fill& fill, asio::steady_timer& timer,
                                      const SteadyClock::time_point& start) {
    for (;;) {
        timer.expires_after(std::chrono::seconds(1));
        auto [ec] = co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
        if (ec) {
            co_return;
        }
        const double secs = std::chrono::duration<double>(SteadyClock::now() - start).count();
        std::fprintf(stderr, "hub_fill: %llu / %llu blobs, %.0f/s\n",
                     static_cast<unsigned long long>(fill.done),
                     static_cast<unsigned long long>(fill.options.count),
                     static_cast<double>(fill.done) / secs);
    }
}

// Opens the vault the way agentgwd does: never creates one, and fails while the daemon runs.
Result<std::unique_ptr<Vault>> open_existing_vault(const DaemonConfig& config) {
    if (!fs::is_directory(config.state_dir)) {
        return make_error(Code::not_found,
                          fmt::format("there is no vault in {}", config.state_dir.string()));
    }
    auto lock = StateLock::acquire(config.state_dir);
    if (!lock) {
        return make_error(
            lock.error().code,
            fmt::format("{} (stop agentgwd before filling its hub)", lock.error().message));
    }
    TRY_ASSIGN(auto existing, Vault::probe(config.state_dir));
    if (!existing) {
        return make_error(Code::not_found,
                          fmt::format("there is no vault in {}", config.state_dir.string()));
    }
    TRY_ASSIGN(auto master, resolve_master_secret(config, existing));
    VaultOptions options;
    options.dir = config.state_dir;
    return Vault::open(options, std::move(*lock), master);
}

// The agent named by --agent-id and/or --agent-name (both must then name the same one).
Result<Agent> publishing_agent(const Registry& registry, const Options& o) {
    TRY_ASSIGN(Agent agent, registry.find_agent(o.agent_id.empty() ? o.agent_name : o.agent_id));
    if (!o.agent_id.empty() && agent.id != o.agent_id) {
        return make_error(Code::not_found, fmt::format("no agent with id {}", o.agent_id));
    }
    if (!o.agent_name.empty() && agent.name != o.agent_name) {
        return make_error(Code::invalid_argument, fmt::format("agent {} is named {}, not {}",
                                                              agent.id, agent.name, o.agent_name));
    }
    return agent;
}

Status write_tokens(const fs::path& path, const std::vector<std::string>& tokens) {
    const mode_t old_mask = ::umask(077);  // data tokens are secrets, even in a bench
    std::ofstream out(path, std::ios::trunc);
    ::umask(old_mask);
    for (const auto& t : tokens) {
        out << t << '\n';
    }
    out.close();
    if (!out) {
        return make_error(Code::io_error, fmt::format("cannot write {}", path.string()));
    }
    return {};
}

int run(const Options& o) {
    DaemonConfig config;
    config.state_dir = fs::absolute(o.state_dir);
    config.key_file = o.key_file;
    config.passphrase_file = o.passphrase_file;
    auto vault = open_existing_vault(config);
    if (!vault) {
        std::fprintf(stderr, "hub_fill: %s\n", vault.error().message.c_str());
        return 1;
    }
    const SystemClock system_clock;
    auto keyring = Registry::load_keyring(**vault);
    if (!keyring) {
        std::fprintf(stderr, "hub_fill: %s\n", keyring.error().message.c_str());
        return 1;
    }
    const Registry registry(**vault, system_clock, std::move(*keyring), 3600);
    const auto agent = publishing_agent(registry, o);
    if (!agent) {
        std::fprintf(stderr, "hub_fill: %s\n", agent.error().message.c_str());
        return 1;
    }

    HubLimits limits;
    limits.max_data = std::max(limits.max_data, o.bytes);
    limits.max_ttl_secs = std::max(limits.max_ttl_secs, o.ttl_secs);
    limits.quota_blobs = std::numeric_limits<uint64_t>::max() / 2;
    limits.quota_bytes = std::numeric_limits<uint64_t>::max() / 2;
    const FrozenClock clock(system_clock.now_ms());
    Hub hub(**vault, clock, limits);
    const auto stored_before = hub.stored();

    // Opaque printable data, as an agent's own ciphertext would be; the same for every blob.
    std::string data;
    while (data.size() < o.bytes) {
        unsigned char raw[48];
        randombytes_buf(raw, sizeof raw);
        data += base64url_encode({raw, sizeof raw});
    }
    data.resize(o.bytes);

    Fill fill{hub, o, *agent, data};
    const auto commits_before = (*vault)->stats().commits;
    const auto start = SteadyClock::now();
    auto finished = start;
    asio::io_context ioc{1};
    asio::steady_timer progress(ioc);
    uint64_t workers_left = std::max<uint64_t>(1, std::min<uint64_t>(o.in_flight, o.count));
    const auto rethrow = [](const std::exception_ptr& e) {
        if (e) {
            std::rethrow_exception(e);
        }
    };
    for (uint64_t i = 0, n = workers_left; i < n; ++i) {
        asio::co_spawn(ioc, publish_worker(fill), [&](const std::exception_ptr& e) {
            if (--workers_left == 0) {
                finished = SteadyClock::now();
                progress.cancel();
            }
            rethrow(e);
        });
    }
    asio::co_spawn(ioc, report_progress(fill, progress, start), rethrow);
    ioc.run();
    const double secs = std::chrono::duration<double>(finished - start).count();
    const auto commits = (*vault)->stats().commits - commits_before;

    if (!fill.failure.empty()) {
        std::fprintf(stderr, "hub_fill: publish failed after %llu blobs: %s\n",
                     static_cast<unsigned long long>(fill.done), fill.failure.c_str());
        return 1;
    }
    if (!o.tokens_out.empty()) {
        if (auto s = write_tokens(o.tokens_out, fill.sample); !s) {
            std::fprintf(stderr, "hub_fill: %s\n", s.error().message.c_str());
            return 1;
        }
    }
    const auto stored_after = hub.stored();
    fmt::print(
        "published {} blobs of {} bytes as {} (ttl {} s) in {:.2f} s: {:.0f} blobs/s, "
        "{:.1f} publishes/commit\n",
        fill.done, o.bytes, agent->name, o.ttl_secs, secs, static_cast<double>(fill.done) / secs,
        static_cast<double>(fill.done) / static_cast<double>(std::max<uint64_t>(1, commits)));
    if (stored_before && stored_after) {
        fmt::print("blobs stored: {} before, {} after\n", *stored_before, *stored_after);
    }
    if (!o.tokens_out.empty()) {
        fmt::print("wrote {} sampled tokens to {}\n", fill.sample.size(), o.tokens_out.string());
    }
    fmt::print("expires_at_ms {}\n", fill.expires_ms);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (sodium_init() < 0) {
        std::fprintf(stderr, "hub_fill: libsodium failed to initialise\n");
        return 1;
    }
    setup_logging("hub_fill", spdlog::level::warn);
    Options o;
    CLI::App app{"Publish many hub blobs straight into a stopped agentgwd's vault"};
    app.add_option("--state-dir", o.state_dir, "agentgwd's state directory")->required();
    app.add_option("--key-file", o.key_file, "Master key file, when not in the state directory");
    app.add_option("--passphrase-file", o.passphrase_file, "Unlock with a passphrase file");
    app.add_option("--agent-id", o.agent_id, "Publish as this agent (id)");
    app.add_option("--agent-name", o.agent_name, "Publish as this agent (name)");
    app.add_option("--count", o.count, "Blobs to publish")
        ->required()
        ->check(CLI::Range(uint64_t{1}, uint64_t{1'000'000'000}));
    app.add_option("--bytes", o.bytes, "Bytes of data per blob")
        ->check(CLI::Range(size_t{1}, size_t{64} * 1024 * 1024))
        ->capture_default_str();
    app.add_option("--ttl", o.ttl_secs, "Lifetime of every blob, in seconds")
        ->check(CLI::Range(int64_t{1}, int64_t{365} * 86400))
        ->capture_default_str();
    app.add_option("--name", o.name, "The blobs' name")->capture_default_str();
    app.add_option("--in-flight", o.in_flight, "Publishes kept in flight at once")
        ->check(CLI::Range(size_t{1}, size_t{65536}))
        ->capture_default_str();
    app.add_option("--tokens-out", o.tokens_out, "Write a sample of the data tokens here");
    app.add_option("--sample", o.sample, "Tokens in the sample")->capture_default_str();
    CLI11_PARSE(app, argc, argv);
    if (o.agent_id.empty() && o.agent_name.empty()) {
        std::fprintf(stderr, "hub_fill: give --agent-id or --agent-name\n");
        return 2;
    }
    try {
        return run(o);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "hub_fill: %s\n", e.what());
        return 1;
    }
}
