#include "daemon/metrics/metrics.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <utility>

namespace agentgw {

namespace {

// The counter of `labels` in `family`, created at 0 if new: a lookup by views, so an existing
// series costs no allocation.
template <typename Map, size_t N>
typename Map::mapped_type& series(Map& family, const std::array<std::string_view, N>& labels) {
    auto it = family.find(labels);
    if (it == family.end()) {
        typename Map::key_type key;
        std::copy(labels.begin(), labels.end(), key.begin());
        it = family.emplace(std::move(key), typename Map::mapped_type{}).first;
    }
    return it->second;
}

void append_number(std::string& out, double v) {
    if (std::isnan(v)) {
        out += "NaN";
    } else if (std::isinf(v)) {
        out += v > 0 ? "+Inf" : "-Inf";
    } else {
        char buf[32];
        const auto end = std::to_chars(buf, buf + sizeof buf, v).ptr;  // shortest round trip
        out.append(buf, end);
    }
}

void append_number(std::string& out, uint64_t v) {
    char buf[24];
    out.append(buf, std::to_chars(buf, buf + sizeof buf, v).ptr);
}

// A label value, escaped as the format requires: backslash, double quote and newline.
void append_escaped(std::string& out, std::string_view value) {
    for (const char c : value) {
        switch (c) {
            case '\\':
                out += "\\\\";
                break;
            case '"':
                out += "\\\"";
                break;
            case '\n':
                out += "\\n";
                break;
            default:
                out += c;
        }
    }
}

void append_family(std::string& out, std::string_view name, std::string_view type,
                   std::string_view help) {
    out.append("# HELP ").append(name).append(" ").append(help).append("\n");
    out.append("# TYPE ").append(name).append(" ").append(type).append("\n");
}

// `name="value",...` without the braces, so a histogram can add its `le`.
template <size_t N>
std::string label_text(const std::array<std::string_view, N>& names,
                       const std::array<std::string, N>& values) {
    std::string out;
    for (size_t i = 0; i < N; ++i) {
        out.append(i ? "," : "").append(names[i]).append("=\"");
        append_escaped(out, values[i]);
        out += '"';
    }
    return out;
}

template <typename Map, size_t N>
void append_counters(std::string& out, std::string_view name, std::string_view help,
                     const std::array<std::string_view, N>& label_names, const Map& family) {
    append_family(out, name, "counter", help);
    for (const auto& [labels, value] : family) {
        out.append(name).append("{").append(label_text(label_names, labels)).append("} ");
        append_number(out, value);
        out += '\n';
    }
}

constexpr std::array<std::string_view, 2> k_gauge_names{"agentgw_hub_blobs_live",
                                                        "agentgw_audit_queue_depth"};
constexpr std::array<std::string_view, 2> k_gauge_help{"Hub blobs currently stored.",
                                                       "Audit entries waiting to be written."};

}  // namespace

void Metrics::count_request(std::string_view route, unsigned status) {
    char buf[12];
    const std::string_view code(buf, std::to_chars(buf, buf + sizeof buf, status).ptr - buf);
    const std::lock_guard lock(mutex_);
    ++series(requests_, std::array{route, code});
}

void Metrics::observe_proxy(std::string_view service, double seconds) {
    if (!(seconds >= 0)) {
        seconds = 0;
    }
    // `le` is inclusive: the first bound >= seconds.
    const auto bucket = static_cast<size_t>(
        std::lower_bound(k_duration_buckets.begin(), k_duration_buckets.end(), seconds) -
        k_duration_buckets.begin());
    const std::lock_guard lock(mutex_);
    Histogram& h = series(durations_, std::array{service});
    ++h.buckets[bucket];
    h.sum += seconds;
    ++h.count;
}

void Metrics::count_upstream_error(std::string_view service, std::string_view kind) {
    const std::lock_guard lock(mutex_);
    ++series(upstream_errors_, std::array{service, kind});
}

void Metrics::count_rate_limited(std::string_view scope) {
    const std::lock_guard lock(mutex_);
    ++series(rate_limited_, std::array{scope});
}

void Metrics::count_refresh(std::string_view service, std::string_view outcome) {
    const std::lock_guard lock(mutex_);
    ++series(refreshes_, std::array{service, outcome});
}

void Metrics::set_gauge_source(Gauge gauge, std::function<double()> source) {
    const std::lock_guard lock(mutex_);
    gauge_sources_[static_cast<size_t>(gauge)] = std::move(source);
}

std::string Metrics::render() const {
    std::string out;
    decltype(gauge_sources_) sources;
    {
        const std::lock_guard lock(mutex_);
        sources = gauge_sources_;

        append_counters(out, "agentgw_http_requests_total",
                        "HTTP requests answered, by route pattern and status.",
                        std::array<std::string_view, 2>{"route", "status"}, requests_);

        constexpr std::string_view name = "agentgw_proxy_request_duration_seconds";
        append_family(out, name, "histogram", "Duration of proxied requests, by service.");
        for (const auto& [labels, h] : durations_) {
            const std::string base = label_text(std::array<std::string_view, 1>{"service"}, labels);
            uint64_t cumulative = 0;
            for (size_t i = 0; i <= k_duration_buckets.size(); ++i) {
                cumulative += h.buckets[i];
                out.append(name).append("_bucket{").append(base).append(",le=\"");
                append_number(out, i < k_duration_buckets.size()
                                       ? k_duration_buckets[i]
                                       : std::numeric_limits<double>::infinity());
                out.append("\"} ");
                append_number(out, cumulative);
                out += '\n';
            }
            out.append(name).append("_sum{").append(base).append("} ");
            append_number(out, h.sum);
            out.append("\n").append(name).append("_count{").append(base).append("} ");
            append_number(out, h.count);
            out += '\n';
        }

        append_counters(out, "agentgw_upstream_errors_total",
                        "Failed upstream requests, by service and kind of failure.",
                        std::array<std::string_view, 2>{"service", "kind"}, upstream_errors_);
        append_counters(out, "agentgw_rate_limit_rejections_total",
                        "Requests refused by a rate limit, by scope (agent, service, login).",
                        std::array<std::string_view, 1>{"scope"}, rate_limited_);
        append_counters(out, "agentgw_token_refreshes_total",
                        "OAuth token refreshes, by service and outcome.",
                        std::array<std::string_view, 2>{"service", "outcome"}, refreshes_);
    }

    // Sources run unlocked: they may take their own locks, or even record metrics.
    for (size_t i = 0; i < sources.size(); ++i) {
        if (sources[i]) {
            append_family(out, k_gauge_names[i], "gauge", k_gauge_help[i]);
            out.append(k_gauge_names[i]).append(" ");
            append_number(out, sources[i]());
            out += '\n';
        }
    }
    return out;
}

}  // namespace agentgw
