#include "daemon/daemon.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <exception>
#include <functional>
#include <iostream>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fmt/format.h>
#include <sodium.h>
#include <spdlog/spdlog.h>

#include "common/fs.hpp"
#include "common/log.hpp"
#include "common/version.hpp"
#include "daemon/agent/agent_api.hpp"
#include "daemon/agent/proxy.hpp"
#include "daemon/audit/audit_log.hpp"
#include "daemon/control/control_api.hpp"
#include "daemon/control/peer_policy.hpp"
#include "daemon/credentials/credential_store.hpp"
#include "daemon/http/router.hpp"
#include "daemon/http/server.hpp"
#include "daemon/hub/hub.hpp"
#include "daemon/identity/registry.hpp"
#include "daemon/oauth/device_flow.hpp"
#include "daemon/oauth/refresher.hpp"
#include "daemon/systemd/systemd.hpp"
#include "daemon/util/clock.hpp"
#include "daemon/util/on_worker.hpp"
#include "daemon/vault/key_source.hpp"
#include "daemon/vault/vault.hpp"

namespace agentgw {

namespace asio = boost::asio;
namespace fs = std::filesystem;
using verb = http::beast_http::verb;

namespace {

// A body the agent listener reads before it knows who sent it: login, discovery and the hub's
// retrievals take none, so a body this size is as much as any client needs to send them.
constexpr size_t k_agent_body_limit = 16 * 1024;

// SIG_BLOCK or SIG_UNBLOCK SIGHUP for the calling thread.
void set_sighup_mask(int how) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(how, &set, nullptr);
}

struct OpenedVault {
    std::unique_ptr<Vault> vault;
    fs::path key_file;     // where the master secret came from, if a file
    bool created = false;  // made by this call
};

// Opens the vault in the state dir; creates it (and perhaps a key) only when `create` is set.
Result<OpenedVault> open_vault(const DaemonConfig& config, bool create) {
    if (!create && !fs::is_directory(config.state_dir)) {
        return make_error(Code::not_found,
                          fmt::format("there is no vault in {}", config.state_dir.string()));
    }
    TRY(ensure_private_dir(config.state_dir, 0700));
    TRY_ASSIGN(auto lock, StateLock::acquire(config.state_dir));
    TRY_ASSIGN(auto existing, Vault::probe(config.state_dir));
    if (!existing && !create) {
        return make_error(Code::not_found,
                          fmt::format("there is no vault in {}", config.state_dir.string()));
    }
    TRY_ASSIGN(auto master, resolve_master_secret(config, existing));
    VaultOptions options;
    options.dir = config.state_dir;
    TRY_ASSIGN(auto vault, Vault::open(options, std::move(lock), master));
    if (!existing) {
        spdlog::info("created a new vault in {} ({})", config.state_dir.string(), master.source);
    }
    return OpenedVault{std::move(vault), master.file, !existing};
}

// --services, else services.json beside the config file when it exists, else none.
fs::path services_file_for(const DaemonConfig& config) {
    if (!config.services_file.empty()) {
        return config.services_file;
    }
    if (!config.config_file.empty()) {
        const fs::path beside = fs::path(config.config_file).parent_path() / "services.json";
        if (fs::exists(beside)) {
            return beside;
        }
    }
    return {};
}

// Keeps the secrets this process holds (the master key, decrypted credentials, session
// signing keys) out of core dumps and out of reach of the user's other processes, agents
// included: with the dumpable flag off, attaching with ptrace or reading /proc/PID/mem,
// environ, maps or fd takes CAP_SYS_PTRACE. ssh-agent does the same.
void keep_memory_private() {
    const rlimit no_core{0, 0};
    if (::setrlimit(RLIMIT_CORE, &no_core) != 0) {
        std::cerr << "agentgwd: warning: cannot turn core dumps off: " << std::strerror(errno)
                  << '\n';
    }
    if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
        std::cerr << "agentgwd: warning: cannot keep other processes from reading this one's "
                     "memory: "
                  << std::strerror(errno) << '\n';
    }
}

// Each agent connection being proxied holds an upstream connection too, so the soft limit on
// descriptors that most services start with (1024) would refuse new agents at about 500 at
// once, and upstream connections before that. Nothing here is bound by FD_SETSIZE (epoll, and
// curl's multi-socket interface), so the soft limit goes up towards the hard one, but no further
// than k_max_descriptors: the limit on descriptors is also the limit on connections, and so on
// the memory that local clients can make the daemon hold.
constexpr rlim_t k_max_descriptors = 65536;

void raise_descriptor_limit() {
    rlimit lim{};
    if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) {
        return;
    }
    const rlim_t want = std::min(lim.rlim_max, k_max_descriptors);
    if (lim.rlim_cur >= want) {
        return;
    }
    const rlim_t was = lim.rlim_cur;
    lim.rlim_cur = want;
    if (::setrlimit(RLIMIT_NOFILE, &lim) != 0) {
        spdlog::warn("cannot raise the limit on open files from {}: {}", was, std::strerror(errno));
        return;
    }
    spdlog::debug("limit on open files raised from {} to {}", was, lim.rlim_cur);
}

}  // namespace

int run_daemon(DaemonConfig config) {
    // Taken first, so that the variables are gone and the fds marked close-on-exec whatever
    // happens next.
    auto passed = systemd::take_passed_sockets();
    const systemd::Notifier notifier = systemd::Notifier::from_environment();
    if (!passed) {
        spdlog::error("{}", passed.error().message);
        return 1;
    }
    // Whichever passed socket is not used (a failed start) is closed on the way out.
    struct ClosePassed {
        systemd::PassedSockets& fds;
        ~ClosePassed() {
            for (auto* fd : {&fds.control, &fds.proxy}) {
                if (*fd) {
                    ::close(**fd);
                }
            }
        }
    } close_passed{*passed};
    raise_descriptor_limit();
    Status resolved = resolve_state_dir(config);
    if (resolved) {
        resolved = resolve_socket_path(config);
    }
    if (!resolved) {
        spdlog::error("{}", resolved.error().message);
        return 1;
    }
    auto listen_at = parse_listen(config.listen);
    if (!listen_at) {  // parse_daemon_args checked it
        spdlog::error("--listen: {}", listen_at.error().message);
        return 1;
    }
    // Before the vault: writes still queued when it closes may read the clock.
    const SystemClock clock;
    auto opened = open_vault(config, true);
    if (!opened) {
        spdlog::error("{}", opened.error().message);
        return 1;
    }
    Vault& vault = *opened->vault;
    const auto started = std::chrono::steady_clock::now();

    auto keyring = Registry::load_keyring(vault);
    if (!keyring) {
        spdlog::error("{}", keyring.error().message);
        return 1;
    }
    Registry registry(vault, clock, std::move(*keyring), config.session_ttl_secs);
    CredentialStore credentials(vault, clock);
    Hub hub(vault, clock, config.hub);
    AuditLog audit(vault, clock);
    if (auto s = audit.init(opened->created); !s) {
        spdlog::error("{}", s.error().message);
        return 1;
    }
    ServiceDirectory services(services_file_for(config), clock);
    if (auto s = services.reload(); !s) {
        spdlog::error("{}", s.error().message);
        return 1;
    }

    asio::io_context ioc{1};
    http::Server server(ioc);
    std::string agent_api;

    const auto healthz = [](http::RequestContext&) -> asio::awaitable<http::Response> {
        co_return http::json_response(http::HttpStatus::ok, {{"status", "ok"}});
    };
    // Entries recorded on the request path (proxy, login) are written in batches: the first
    // one held back starts a short timer, so a commit carries many entries instead of a few.
    asio::steady_timer audit_timer(ioc);
    audit.defer_with(
        [&audit_timer](std::function<void()> flush) {
            audit_timer.expires_after(std::chrono::milliseconds(20));
            audit_timer.async_wait([flush = std::move(flush)](const boost::system::error_code& ec) {
                if (!ec) {
                    flush();
                }
            });
        },
        1024);
    RateLimiter limiter(clock);
    Metrics metrics;
    metrics.set_gauge_source(Metrics::Gauge::audit_queue_depth,
                             [&audit] { return static_cast<double>(audit.waiting()); });
    metrics.set_gauge_source(Metrics::Gauge::hub_blobs_live, [&hub] {
        const auto n = hub.stored();
        return n ? static_cast<double>(*n) : 0.0;
    });
    upstream::UpstreamClient upstream(ioc);
    oauth::TokenRefresher refresher(upstream, credentials, audit, metrics, clock);
    oauth::DeviceFlows device_flows(ioc, upstream, vault, credentials, audit, services, clock);
    AgentApiContext agent_api_ctx{registry, credentials, audit, services, limiter,
                                  metrics,  upstream,    hub,   refresher};
    http::Router agent_routes;
    add_agent_routes(agent_routes, agent_api_ctx);
    add_hub_routes(agent_routes, agent_api_ctx);
    server.set_observer([&metrics](const http::Request& req, unsigned status) {
        // Label by route, never by raw path: label sets live as long as the process.
        std::string_view path = req.target();
        path = path.substr(0, path.find('?'));
        const bool known =
            path == "/healthz" || path == "/metrics" || path == "/login" || path == "/api";
        if (known) {
            metrics.count_request(path, status);
        } else if (path == "/secure/agent/publish") {
            metrics.count_request("/secure/agent/publish", status);
        } else if (path.starts_with("/secure/retrieve/")) {
            metrics.count_request("/secure/retrieve", status);
        } else {
            metrics.count_request("other", status);
        }
    });

    // One thread for control reads that scan the whole audit log. It is joined (on leaving
    // this function) before the vault closes; the loop's run() has waited for its work.
    asio::thread_pool slow_reads(1);
    ControlContext control{
        registry,
        credentials,
        audit,
        services,
        vault,
        hub,
        device_flows,
        slow_reads.get_executor(),
        [&] {
            const auto stats = vault.stats();
            const auto uptime = std::chrono::duration_cast<std::chrono::seconds>(
                std::chrono::steady_clock::now() - started);
            nlohmann::json counts = {{"services", services.current()->services().size()}};
            nlohmann::json audit_state = nullptr;
            (void)vault.read([&](const ReadTxn& txn) -> Status {
                for (auto [name, table] :
                     {std::pair{"users", Table::users}, std::pair{"agents", Table::agents},
                      std::pair{"credentials", Table::credentials}}) {
                    TRY_ASSIGN(counts[name], txn.count(table));
                }
                return {};
            });
            if (auto infos = credentials.list()) {
                counts["credentials_reauth_required"] =
                    std::count_if(infos->begin(), infos->end(),
                                  [](const CredentialInfo& i) { return i.reauth_required; });
            }
            if (auto head = audit.head()) {
                audit_state = {{"last_seq", head->first}, {"entries", head->second}};
            }
            return nlohmann::json{
                {"version", k_version},
                {"pid", ::getpid()},
                {"uptime_secs", uptime.count()},
                {"listeners",
                 {{"agent_api", agent_api}, {"control_socket", config.socket_path.string()}}},
                {"counts", counts},
                {"services", services.state()},
                {"vault",
                 {{"state", "open"},
                  {"dir", vault.dir().string()},
                  {"map_size_bytes", stats.map_size},
                  {"commits", stats.commits},
                  {"writes", stats.writes}}},
                {"audit", audit_state}};
        }};
    http::Router control_routes;
    control_routes.add(verb::get, "/healthz", healthz);
    add_control_routes(control_routes, control);

    // Retention: prune once the loop runs and then daily, keeping the chain verifiable from
    // its new start. Each batch scans and deletes in one write; the batches follow one another
    // on the slow_reads thread (the loop is not held up) until nothing older is left.
    asio::steady_timer retention_timer(ioc);
    // Set on SIGTERM: a prune or a hub sweep in flight (on another thread, out of the timers'
    // reach) then does not start another or wait again.
    bool stopping = false;
    const auto prune_audit = [&]() -> asio::awaitable<void> {
        constexpr uint64_t k_batch = 10'000;
        const auto prune_batch = [&] {
            const int64_t cutoff = clock.now_secs() - config.audit_retention_days * 86400;
            return audit.prune(cutoff, k_batch);
        };
        for (;;) {
            uint64_t total = 0;
            while (config.audit_retention_days > 0) {
                const Result<uint64_t> removed =
                    co_await on_worker(slow_reads.get_executor(), prune_batch);
                if (stopping) {
                    co_return;
                }
                if (!removed) {
                    spdlog::error("audit retention: {}", removed.error().message);
                    break;
                }
                total += *removed;
                if (*removed < k_batch) {
                    break;
                }
            }
            if (total > 0) {
                spdlog::info("audit retention: removed {} entries older than {} days", total,
                             config.audit_retention_days);
            }
            retention_timer.expires_after(std::chrono::hours(24));
            const auto [ec] =
                co_await retention_timer.async_wait(asio::as_tuple(asio::use_awaitable));
            if (ec) {
                co_return;  // stopping
            }
        }
    };
    asio::co_spawn(ioc, prune_audit, asio::detached);

    // Forgotten keys (idle two windows) are dropped so the limiter's memory stays bounded.
    asio::steady_timer sweep_timer(ioc);
    std::function<void()> sweep_limits = [&] {
        limiter.sweep();
        sweep_timer.expires_after(std::chrono::minutes(1));
        sweep_timer.async_wait([&](const boost::system::error_code& ec) {
            if (!ec) {
                sweep_limits();
            }
        });
    };
    sweep_limits();

    // Expired hub blobs go in bounded batches, each one write among the others: a full batch
    // is followed at once by the next, otherwise the sweeper looks again a second later.
    asio::steady_timer hub_timer(ioc);
    asio::co_spawn(
        ioc,
        [&]() -> asio::awaitable<void> {
            for (;;) {
                const auto removed = co_await hub.sweep();
                if (!removed) {
                    spdlog::error("hub sweep: {}", removed.error().message);
                }
                if (stopping) {
                    co_return;
                }
                const bool more = removed && *removed >= hub.limits().sweep_batch;
                hub_timer.expires_after(more ? std::chrono::milliseconds(0)
                                             : std::chrono::milliseconds(1000));
                auto [ec] = co_await hub_timer.async_wait(asio::as_tuple(asio::use_awaitable));
                if (ec) {
                    co_return;
                }
            }
        },
        asio::detached);

    // OAuth2 access tokens are refreshed ahead of their expiry (refresh_before_secs, with
    // jitter), so requests rarely wait for one; a request finding one expired refreshes it.
    asio::steady_timer refresh_timer(ioc);
    std::function<void()> refresh_due = [&] {
        if (auto infos = credentials.list()) {
            const auto catalog = services.current();
            for (const auto& info : *infos) {
                const Service* service = catalog->find(info.service);
                if (service == nullptr || service->auth.type != AuthSpec::Type::oauth2 ||
                    !info.refreshable || info.reauth_required || info.expires_at == 0) {
                    continue;
                }
                // The coroutine starts later: it gets copies, not references into this loop.
                asio::co_spawn(
                    ioc,
                    [&refresher, s = *service, key = info.key]() -> asio::awaitable<void> {
                        co_await refresher.refresh_if_due(s, key);
                    },
                    asio::detached);
            }
        } else {
            spdlog::error("proactive token refresh: {}", infos.error().message);
        }
        refresh_timer.expires_after(std::chrono::seconds(15));
        refresh_timer.async_wait([&](const boost::system::error_code& ec) {
            if (!ec) {
                refresh_due();
            }
        });
    };
    refresh_due();
    device_flows.resume();

    // Routed requests are read whole. On the agent listener only a hub publish has a body worth
    // reading, and its route lets one of publish_body_limit() in once the agent is known; the
    // control API takes publishes too, from operators.
    http::Limits agent_limits;
    agent_limits.body_limit = k_agent_body_limit;
    http::Limits control_limits;
    control_limits.body_limit = config.hub.publish_body_limit();
    auto bound = passed->proxy
                     ? server.adopt_tcp(*std::exchange(passed->proxy, std::nullopt), agent_routes,
                                        agent_limits, proxy_takeover(agent_api_ctx))
                     : server.listen_tcp(*listen_at, agent_routes, agent_limits,
                                         proxy_takeover(agent_api_ctx));
    if (!bound) {
        spdlog::error("{}", bound.error().message);
        return 1;
    }
    agent_api = fmt::format("{}:{}", bound->address().to_string(), bound->port());
    auto policy = PeerPolicy::create(config.socket_group);
    if (!policy) {
        spdlog::error("{}", policy.error().message);
        return 1;
    }
    const auto peer_check = [p = *policy](const http::Peer& peer) { return p.allows(peer); };
    if (passed->control) {
        // systemd made the socket, with the unit's SocketGroup and SocketMode.
        auto path = server.adopt_unix(*std::exchange(passed->control, std::nullopt), control_routes,
                                      control_limits, peer_check);
        if (!path) {
            spdlog::error("{}", path.error().message);
            return 1;
        }
        config.socket_path = *path;
    } else if (auto s = server.listen_unix(config.socket_path, control_routes, control_limits,
                                           peer_check);
               !s) {
        spdlog::error("{}", s.error().message);
        return 1;
    } else if (policy->gid()) {
        // The group reaches the socket through its directory (0750) and the socket (0660).
        // Under agentgwd.service both already belong to it (Group=, RuntimeDirectory=), and
        // the unit's system call filter refuses chown: change only what differs.
        for (const auto& path : {config.socket_path.parent_path(), config.socket_path}) {
            struct stat st {};
            if (::stat(path.c_str(), &st) == 0 && st.st_gid == *policy->gid()) {
                continue;
            }
            if (::chown(path.c_str(), static_cast<uid_t>(-1), *policy->gid()) != 0) {
                spdlog::error("cannot give {} to group {}: {}", path.string(), config.socket_group,
                              std::strerror(errno));
                return 1;
            }
        }
    }

    // What `systemctl status` shows: a failed reload stays visible until one succeeds.
    const auto ready_status = [&] {
        const auto state = services.state();
        std::string failed;
        if (state.contains("last_error")) {
            failed = "; services reload failed: " + state.at("last_error").get<std::string>();
            std::replace(failed.begin(), failed.end(), '\n', ' ');  // one line per variable
        }
        return fmt::format("READY=1\nSTATUS=agent API on {}, {} service(s){}", agent_api,
                           state.at("services").get<size_t>(), failed);
    };
    // Every reload after the first, from SIGHUP or the control socket, is logged and shown in
    // the status systemd reports.
    services.on_reload([&](std::string_view trigger, const Status& reloaded) {
        if (reloaded) {
            spdlog::info("{}: loaded {} service(s) from {}", trigger,
                         services.current()->services().size(),
                         services.file().empty() ? std::string("(no services file)")
                                                 : services.file().string());
        } else {
            spdlog::error("{}: {}; keeping the old services", trigger, reloaded.error().message);
        }
        notifier.notify(ready_status());
    });

    // The watchdog is fed from the event loop itself: if the loop hangs, systemd notices.
    asio::steady_timer watchdog_timer(ioc);
    std::function<void()> feed_watchdog = [&] {
        notifier.notify("WATCHDOG=1");
        watchdog_timer.expires_after(*notifier.watchdog_interval());
        watchdog_timer.async_wait([&](const boost::system::error_code& ec) {
            if (!ec) {
                feed_watchdog();
            }
        });
    };

    // After SIGTERM, requests in progress get config.drain to finish; then the upstream
    // exchanges still running (a stalled upstream, a token call) are cut off too.
    asio::steady_timer shutdown_timer(ioc);
    asio::signal_set signals(ioc, SIGINT, SIGTERM, SIGHUP);
    std::function<void(const boost::system::error_code&, int)> on_signal =
        [&](const boost::system::error_code& ec, int signo) {
            if (ec) {
                return;
            }
            if (signo == SIGHUP) {
                const auto now = std::chrono::duration_cast<std::chrono::microseconds>(
                    std::chrono::steady_clock::now().time_since_epoch());
                notifier.notify(fmt::format("RELOADING=1\nMONOTONIC_USEC={}", now.count()));
                const Status reloaded = services.reload("received SIGHUP");
                audit.record({"system", "services.reload", "services",
                              reloaded ? "ok" : "bad_request",
                              reloaded ? nlohmann::json::object()
                                       : nlohmann::json{{"message", reloaded.error().message}}});
                signals.async_wait(on_signal);
                return;
            }
            spdlog::info("received {}, stopping", signo == SIGTERM ? "SIGTERM" : "SIGINT");
            // Room for the drain and the audit flush, should it exceed the unit's
            // TimeoutStopSec=.
            notifier.notify(fmt::format(
                "STOPPING=1\nEXTEND_TIMEOUT_USEC={}",
                std::chrono::duration_cast<std::chrono::microseconds>(config.drain).count() +
                    5'000'000));
            signals.cancel();
            watchdog_timer.cancel();
            retention_timer.cancel();
            sweep_timer.cancel();
            stopping = true;
            hub_timer.cancel();
            refresh_timer.cancel();
            device_flows.stop();
            shutdown_timer.expires_after(config.drain);
            shutdown_timer.async_wait([&](const boost::system::error_code& ec) {
                if (ec) {
                    return;
                }
                if (upstream.active() > 0) {
                    spdlog::warn("cutting off {} upstream exchange(s) still running",
                                 upstream.active());
                }
                upstream.abort_all("the daemon is stopping");
            });
            server.stop(config.drain, [&] {
                // Every client is answered. Upstream calls of the daemon's own (a token
                // refresh) may still run until the deadline, but none starts any more.
                upstream.close([&] { shutdown_timer.cancel(); });
            });
        };
    signals.async_wait(on_signal);
    set_sighup_mask(SIG_UNBLOCK);  // a SIGHUP that came during startup is handled now

    spdlog::info("agentgwd {} ready: agent API on http://{}, control socket {}, state {}",
                 k_version, agent_api, config.socket_path.string(), config.state_dir.string());
    notifier.notify(ready_status());
    if (notifier.watchdog_interval()) {
        feed_watchdog();
    }
    ioc.run();
    // The signal_set's destruction puts SIGHUP's default action back, which would end the
    // daemon while it closes the vault.
    set_sighup_mask(SIG_BLOCK);
    audit.defer_with({}, 0);
    audit.flush();  // anything still held back (the vault writes it before closing)
    spdlog::info("stopped");
    return 0;
}

int rekey_vault(const DaemonInvocation& inv) {
    DaemonConfig config = inv.config;
    if (auto s = resolve_state_dir(config); !s) {
        spdlog::error("{}", s.error().message);
        return 1;
    }
    // Unlock with the current secret first: when both secrets come from standard input, the
    // current one is the first line and the new one the second.
    auto opened = open_vault(config, false);
    if (!opened) {
        spdlog::error("{}", opened.error().message);
        return 1;
    }
    auto next = inv.new_key_file.empty() ? load_passphrase_file(inv.new_passphrase_file)
                                         : load_key_file(inv.new_key_file);
    if (!next) {
        spdlog::error("{}", next.error().message);
        return 1;
    }
    if (auto s = opened->vault->change_master_key(*next, PwhashParams::moderate()); !s) {
        spdlog::error("{}", s.error().message);
        return 1;
    }
    // The key file the daemon generated no longer opens the vault; leaving it would only
    // mislead. It still unwraps the old envelope, which data.mdb may keep in a page not yet
    // reused: a rekey moves the vault to a new secret, it does not revoke the old one (the
    // data key stays). The new secret is the operator's to keep.
    std::error_code ec;
    const fs::path local_key = fs::weakly_canonical(config.state_dir / "master.key", ec);
    const auto same_file = [&](const fs::path& p) {
        return !p.empty() && fs::weakly_canonical(p, ec) == local_key;
    };
    if (same_file(opened->key_file) && !same_file(next->file)) {
        fs::remove(local_key, ec);
    }
    spdlog::info("vault in {} now unlocks with {}", config.state_dir.string(), next->source);
    return 0;
}

int daemon_main(int argc, const char* const* argv) {
    keep_memory_private();
    // No fast bins. Each allocation of 1 KiB or more (curl makes several per proxied request)
    // first merges every chunk waiting in them, which undoes their purpose: without them,
    // small frees still go to the per-thread cache, and the proxy spends about 5% less CPU.
    mallopt(M_MXFAST, 0);
    // A log line written to a reader that went away (`agentgwd | head`, a restarted
    // collector) is a failed write, not the end of the daemon. Sockets already send with
    // MSG_NOSIGNAL.
    (void)::signal(SIGPIPE, SIG_IGN);
    if (sodium_init() < 0) {
        std::cerr << "agentgwd: libsodium failed to initialise\n";
        return 1;
    }
    try {
        DaemonInvocation inv = parse_daemon_args(argc, argv);
        if (inv.action == DaemonInvocation::Action::exit) {
            return inv.exit_code;
        }
        if (inv.action == DaemonInvocation::Action::run) {
            // A SIGHUP (a reload) sent while the daemon starts waits until it can be acted on,
            // instead of killing the daemon. Blocked before any thread starts, so that every
            // thread inherits the mask; run_daemon unblocks it on this one.
            set_sighup_mask(SIG_BLOCK);
        }
        setup_logging("agentgwd", inv.config.log_level);
        return inv.action == DaemonInvocation::Action::rekey ? rekey_vault(inv)
                                                             : run_daemon(std::move(inv.config));
    } catch (const std::exception& e) {
        std::cerr << "agentgwd: " << e.what() << '\n';
        return 1;
    }
}

}  // namespace agentgw
