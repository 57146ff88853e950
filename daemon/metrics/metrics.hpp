// Metrics: the counters, histogram and gauges behind `GET /metrics` (SPEC §3.4), rendered in
// the Prometheus text exposition format 0.0.4. Thread-safe: any member may be called from any
// thread; recording a sample whose label set exists already does not allocate.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <string_view>

namespace agentgw {

class Metrics {
  public:
    // Gauges whose value is read from a callback at render time.
    enum class Gauge { hub_blobs_live, audit_queue_depth };

    // Upper bounds (seconds) of the proxy latency buckets; +Inf is implicit.
    static constexpr std::array<double, 13> k_duration_buckets{
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
    // The Content-Type of render()'s output.
    static constexpr std::string_view k_content_type = "text/plain; version=0.0.4; charset=utf-8";

    Metrics() = default;
    Metrics(const Metrics&) = delete;
    Metrics& operator=(const Metrics&) = delete;

    // Each label set is kept for the life of the process, so label values must come from
    // bounded sets: the route's pattern (never the raw path), service ids from the catalog,
    // fixed words for kinds and outcomes. Values are escaped on output, never rejected.

    // agentgw_http_requests_total{route,status}
    void count_request(std::string_view route, unsigned status);
    // agentgw_proxy_request_duration_seconds{service}; a negative or NaN duration counts as 0.
    void observe_proxy(std::string_view service, double seconds);
    // agentgw_upstream_errors_total{service,kind}; kind e.g. "connect", "timeout", "tls".
    void count_upstream_error(std::string_view service, std::string_view kind);
    // agentgw_rate_limit_rejections_total{scope}; scope is "agent", "service" or "login".
    void count_rate_limited(std::string_view scope);
    // agentgw_token_refreshes_total{service,outcome}; outcome e.g. "success", "failure".
    void count_refresh(std::string_view service, std::string_view outcome);

    // render() calls `source` for the gauge's value, on its own thread and without the metrics
    // lock held. A gauge without a source is left out; an empty function removes the source.
    void set_gauge_source(Gauge gauge, std::function<double()> source);

    // Every metric in the exposition format: families in a fixed order, each with its # HELP
    // and # TYPE lines, series sorted by label values.
    std::string render() const;

  private:
    template <size_t N>
    using Labels = std::array<std::string, N>;
    // Orders label arrays of std::string or std::string_view alike, so that lookups take views.
    struct LabelsLess {
        using is_transparent = void;
        template <typename A, typename B>
        bool operator()(const A& a, const B& b) const {
            for (size_t i = 0; i < a.size(); ++i) {
                if (const int c = std::string_view(a[i]).compare(b[i]); c != 0) {
                    return c < 0;
                }
            }
            return false;
        }
    };
    template <size_t N>
    using Counters = std::map<Labels<N>, uint64_t, LabelsLess>;
    struct Histogram {
        // Observations per bucket (not cumulative); the last is above the largest bound.
        std::array<uint64_t, k_duration_buckets.size() + 1> buckets{};
        double sum = 0;
        uint64_t count = 0;
    };

    mutable std::mutex mutex_;  // guards every member below
    Counters<2> requests_;
    std::map<Labels<1>, Histogram, LabelsLess> durations_;
    Counters<2> upstream_errors_;
    Counters<1> rate_limited_;
    Counters<2> refreshes_;
    std::array<std::function<double()>, 2> gauge_sources_;
};

}  // namespace agentgw
