// upstream_floor: what agentgwd's upstream side costs on its own, per request.
//
//   upstream_floor --url URL [--connections N] [--duration S] [--warmup S] [--header H]...
//                  [--post-bytes B]
//
// Runs the proxy's own upstream client (agentgw::upstream::UpstreamClient: libcurl's
// multi-socket interface on one Asio event loop, the connection pool, the header list and
// the body pieces exactly as the proxy drives them) with N exchanges always in flight
// against URL, and nothing else: no agent listener, no authentication, no rate limit, no
// audit. After the warm-up it counts the exchanges completed in --duration seconds and the
// process's user+system CPU time over them, and prints one line:
//
//   requests N errors E seconds S rps R mib_per_s M cpu_us_per_req C
//
// bench/proxy_bench.sh runs it as the `floor` target, on the proxies' core, so the CPU time
// per request is a floor under agentgwd's proxy cost, next to nginx's whole proxy cost.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <malloc.h>
#include <optional>
#include <string>
#include <sys/resource.h>
#include <vector>

#include <CLI/CLI.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "daemon/upstream/upstream_client.hpp"

namespace asio = boost::asio;
using agentgw::upstream::Failure;
using agentgw::upstream::UpstreamClient;
using agentgw::upstream::UpstreamRequest;
using SteadyClock = std::chrono::steady_clock;

namespace {

struct Options {
    std::string url;
    unsigned connections = 32;
    unsigned duration_secs = 10;
    unsigned warmup_secs = 1;
    std::vector<std::string> headers;
    size_t post_bytes = 0;  // 0: GET
};

// What the exchange loops share. They all run on the one io_context thread.
struct Run {
    Run(UpstreamClient& c, const Options& o) : client(c), options(o) {}
    UpstreamClient& client;
    const Options& options;
    bool measuring = false;
    bool stopping = false;
    uint64_t requests = 0;  // completed with a 2xx while measuring
    uint64_t errors = 0;    // failed or not 2xx while measuring
    uint64_t bytes = 0;     // response body bytes of the exchanges counted in `requests`
    std::string first_error;
};

// One exchange: the request, the response head, then the body read piece by piece, as the
// proxy does. The body's size when it completed with a 2xx.
asio::awaitable<std::optional<uint64_t>> exchange(Run& run) {
    UpstreamRequest request;
    request.method = run.options.post_bytes > 0 ? "POST" : "GET";
    request.url = run.options.url;
    request.headers = run.options.headers;
    request.allow_http = true;
    std::optional<std::string> body;
    if (run.options.post_bytes > 0) {
        request.has_body = true;
        request.body_size = run.options.post_bytes;
        body.emplace(run.options.post_bytes, 'a');
    }
    auto transfer = run.client.start(request, std::move(body));
    std::optional<Failure> failure = co_await transfer->wait_head();
    if (failure) {
        run.first_error = run.first_error.empty() ? failure->message : run.first_error;
        co_return std::nullopt;
    }
    const unsigned status = transfer->head().status;
    std::string piece;
    for (;;) {
        failure = co_await transfer->read(piece);
        if (failure) {
            run.first_error = run.first_error.empty() ? failure->message : run.first_error;
            co_return std::nullopt;
        }
        if (piece.empty()) {
            break;
        }
    }
    if (status < 200 || status > 299) {
        run.first_error =
            run.first_error.empty() ? "HTTP " + std::to_string(status) : run.first_error;
        co_return std::nullopt;
    }
    co_return transfer->bytes_received();
}

asio::awaitable<void> exchange_loop(Run& run) {
    while (!run.stopping) {
        const std::optional<uint64_t> bytes = co_await exchange(run);
        if (run.measuring && !run.stopping) {
            ++(bytes ? run.requests : run.errors);
            run.bytes += bytes.value_or(0);
        }
    }
}

double cpu_seconds() {
    rusage usage{};
    ::getrusage(RUSAGE_SELF, &usage);
    auto secs = [](const timeval& tv) {
        return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6;
    };
    return secs(usage.ru_utime) + secs(usage.ru_stime);
}

// Sleeps through the warm-up, then measures for the duration, then stops the loops.
asio::awaitable<void> conduct(Run& run, double& cpu_used, double& seconds) {
    asio::steady_timer timer(co_await asio::this_coro::executor);
    timer.expires_after(std::chrono::seconds(run.options.warmup_secs));
    co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
    const double cpu0 = cpu_seconds();
    const auto t0 = SteadyClock::now();
    run.measuring = true;
    timer.expires_after(std::chrono::seconds(run.options.duration_secs));
    co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
    run.stopping = true;
    cpu_used = cpu_seconds() - cpu0;
    seconds = std::chrono::duration<double>(SteadyClock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    CLI::App app{"agentgwd's upstream client alone: CPU time per request against one URL"};
    app.add_option("--url", o.url, "http:// URL every exchange requests")->required();
    app.add_option("--connections", o.connections, "Exchanges always in flight")
        ->check(CLI::Range(1u, 4096u));
    app.add_option("--duration", o.duration_secs, "Seconds measured")->check(CLI::Range(1u, 3600u));
    app.add_option("--warmup", o.warmup_secs, "Seconds before measuring")
        ->check(CLI::Range(0u, 3600u));
    app.add_option("--header", o.headers, "\"Name: value\" sent with every request");
    app.add_option("--post-bytes", o.post_bytes, "POST a body of this many bytes (0: GET)")
        ->check(CLI::Range(size_t{0}, size_t{64} << 20));
    CLI11_PARSE(app, argc, argv);

    // This process's heap is small, so glibc would hand the freed top of it back to the
    // kernel after almost every large body and fault the pages in again for the next one:
    // tens of page faults per 1 MiB exchange, a cost agentgwd's busier heap does not pay.
    // Keeping freed memory makes the floor measure the client, not this process's heap.
    ::mallopt(M_TRIM_THRESHOLD, 256 << 20);
    ::mallopt(M_MMAP_THRESHOLD, 32 << 20);

    asio::io_context ioc(1);
    double cpu_used = 0;
    double seconds = 0;
    {
        UpstreamClient client(ioc);
        Run run(client, o);
        for (unsigned i = 0; i < o.connections; ++i) {
            asio::co_spawn(ioc, exchange_loop(run), asio::detached);
        }
        asio::co_spawn(ioc, conduct(run, cpu_used, seconds), asio::detached);
        ioc.run();  // ends when every loop has finished its last exchange

        if (run.requests == 0) {
            std::fprintf(stderr, "upstream_floor: no exchange succeeded (%s)\n",
                         run.first_error.empty() ? "none completed" : run.first_error.c_str());
            return 1;
        }
        if (run.errors > 0) {
            std::fprintf(stderr, "upstream_floor: %llu exchanges failed; the first: %s\n",
                         static_cast<unsigned long long>(run.errors), run.first_error.c_str());
        }
        std::printf(
            "requests %llu errors %llu seconds %.3f rps %.1f mib_per_s %.1f cpu_us_per_req %.2f\n",
            static_cast<unsigned long long>(run.requests),
            static_cast<unsigned long long>(run.errors), seconds,
            static_cast<double>(run.requests) / seconds,
            static_cast<double>(run.bytes) / 1048576.0 / seconds,
            cpu_used * 1e6 / static_cast<double>(run.requests));
    }
    return 0;
}
