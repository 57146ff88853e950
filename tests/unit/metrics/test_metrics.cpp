#include <cmath>
#include <limits>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "daemon/metrics/metrics.hpp"

using namespace agentgw;
using Catch::Contains;

namespace {

// The value of the sample whose name and labels are `series`, or "" if there is none.
std::string sample(const std::string& text, const std::string& series) {
    std::istringstream lines(text);
    for (std::string line; std::getline(lines, line);) {
        if (line.rfind(series + " ", 0) == 0) {
            return line.substr(series.size() + 1);
        }
    }
    return "";
}

}  // namespace

TEST_CASE("render writes the exposition format exactly") {
    Metrics m;
    m.count_request("/healthz", 200);
    m.count_request("/api/{service}", 429);
    m.count_request("/healthz", 200);
    for (const double s : {0.5, 0.25, 0.00390625, 100.0, 0.75}) {
        m.observe_proxy("github", s);
    }
    m.count_upstream_error("we\"ird\\svc\nx", "timeout");
    m.count_rate_limited("agent");
    m.count_rate_limited("agent");
    m.count_rate_limited("login");
    m.set_gauge_source(Metrics::Gauge::hub_blobs_live, [] { return 3.0; });

    CHECK(m.render() ==
          R"(# HELP agentgw_http_requests_total HTTP requests answered, by route pattern and status.
# TYPE agentgw_http_requests_total counter
agentgw_http_requests_total{route="/api/{service}",status="429"} 1
agentgw_http_requests_total{route="/healthz",status="200"} 2
# HELP agentgw_proxy_request_duration_seconds Duration of proxied requests, by service.
# TYPE agentgw_proxy_request_duration_seconds histogram
agentgw_proxy_request_duration_seconds_bucket{service="github",le="0.005"} 1
agentgw_proxy_request_duration_seconds_bucket{service="github",le="0.01"} 1
agentgw_proxy_request_duration_seconds_bucket{service="github",le="0.025"} 1
agentgw_proxy_request_duration_seconds_bucket{service="github",le="0.05"} 1
agentgw_proxy_request_duration_seconds_bucket{service="github",le="0.1"} 1
agentgw_proxy_request_duration_seconds_bucket{service="github",le="0.25"} 2
agentgw_proxy_request_duration_seconds_bucket{service="github",le="0.5"} 3
agentgw_proxy_request_duration_seconds_bucket{service="github",le="1"} 4
agentgw_proxy_request_duration_seconds_bucket{service="github",le="2.5"} 4
agentgw_proxy_request_duration_seconds_bucket{service="github",le="5"} 4
agentgw_proxy_request_duration_seconds_bucket{service="github",le="10"} 4
agentgw_proxy_request_duration_seconds_bucket{service="github",le="30"} 4
agentgw_proxy_request_duration_seconds_bucket{service="github",le="60"} 4
agentgw_proxy_request_duration_seconds_bucket{service="github",le="+Inf"} 5
agentgw_proxy_request_duration_seconds_sum{service="github"} 101.50390625
agentgw_proxy_request_duration_seconds_count{service="github"} 5
# HELP agentgw_upstream_errors_total Failed upstream requests, by service and kind of failure.
# TYPE agentgw_upstream_errors_total counter
agentgw_upstream_errors_total{service="we\"ird\\svc\nx",kind="timeout"} 1
# HELP agentgw_rate_limit_rejections_total Requests refused by a rate limit, by scope (agent, service, login).
# TYPE agentgw_rate_limit_rejections_total counter
agentgw_rate_limit_rejections_total{scope="agent"} 2
agentgw_rate_limit_rejections_total{scope="login"} 1
# HELP agentgw_token_refreshes_total OAuth token refreshes, by service and outcome.
# TYPE agentgw_token_refreshes_total counter
# HELP agentgw_hub_blobs_live Hub blobs currently stored.
# TYPE agentgw_hub_blobs_live gauge
agentgw_hub_blobs_live 3
)");
}

TEST_CASE("an empty registry still describes every family") {
    const std::string text = Metrics().render();
    for (const char* type : {"# TYPE agentgw_http_requests_total counter\n",
                             "# TYPE agentgw_proxy_request_duration_seconds histogram\n",
                             "# TYPE agentgw_upstream_errors_total counter\n",
                             "# TYPE agentgw_rate_limit_rejections_total counter\n",
                             "# TYPE agentgw_token_refreshes_total counter\n"}) {
        CHECK_THAT(text, Contains(type));
    }
    CHECK_THAT(text, !Contains("gauge"));
}

TEST_CASE("histograms keep one series per service, odd durations count as 0") {
    Metrics m;
    m.observe_proxy("b", 2.0);
    m.observe_proxy("a", -1.0);
    m.observe_proxy("a", std::numeric_limits<double>::quiet_NaN());
    m.observe_proxy("a", 0.005);  // a bound is inclusive
    const std::string text = m.render();
    const std::string name = "agentgw_proxy_request_duration_seconds";
    CHECK(sample(text, name + "_bucket{service=\"a\",le=\"0.005\"}") == "3");
    CHECK(sample(text, name + "_sum{service=\"a\"}") == "0.005");
    CHECK(sample(text, name + "_count{service=\"a\"}") == "3");
    CHECK(sample(text, name + "_bucket{service=\"b\",le=\"1\"}") == "0");
    CHECK(sample(text, name + "_bucket{service=\"b\",le=\"2.5\"}") == "1");
    CHECK(sample(text, name + "_sum{service=\"b\"}") == "2");
    CHECK(text.find("service=\"a\"") < text.find("service=\"b\""));
}

TEST_CASE("counters accumulate, from several threads at once") {
    Metrics m;
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&m] {
            for (int i = 0; i < 1000; ++i) {
                m.count_request("/api/{service}", 200);
                m.count_refresh("google", i % 10 == 0 ? "failure" : "success");
                m.observe_proxy("google", 0.02);
            }
        });
    }
    for (auto& t : threads) {
        t.join();
    }
    m.count_upstream_error("google", "connect");
    m.count_upstream_error("google", "connect");
    m.count_upstream_error("google", "tls");

    const std::string text = m.render();
    CHECK(sample(text, R"(agentgw_http_requests_total{route="/api/{service}",status="200"})") ==
          "4000");
    CHECK(sample(text, R"(agentgw_token_refreshes_total{service="google",outcome="success"})") ==
          "3600");
    CHECK(sample(text, R"(agentgw_token_refreshes_total{service="google",outcome="failure"})") ==
          "400");
    CHECK(sample(text, R"(agentgw_proxy_request_duration_seconds_count{service="google"})") ==
          "4000");
    CHECK(sample(text, R"(agentgw_upstream_errors_total{service="google",kind="connect"})") == "2");
    CHECK(sample(text, R"(agentgw_upstream_errors_total{service="google",kind="tls"})") == "1");
}

TEST_CASE("gauges read their sources at every render") {
    Metrics m;
    double blobs = 0;
    int calls = 0;
    m.set_gauge_source(Metrics::Gauge::hub_blobs_live, [&] {
        ++calls;
        return blobs;
    });
    // A source may record metrics itself: render does not hold the lock while calling it.
    m.set_gauge_source(Metrics::Gauge::audit_queue_depth, [&m] {
        m.count_rate_limited("service");
        return 12.0;
    });

    CHECK(sample(m.render(), "agentgw_hub_blobs_live") == "0");
    blobs = 1.5;
    const std::string text = m.render();
    CHECK(sample(text, "agentgw_hub_blobs_live") == "1.5");
    CHECK(sample(text, "agentgw_audit_queue_depth") == "12");
    CHECK_THAT(text, Contains("# HELP agentgw_audit_queue_depth "));
    CHECK_THAT(text, Contains("# TYPE agentgw_audit_queue_depth gauge\n"));
    CHECK(calls == 2);
    CHECK(sample(text, R"(agentgw_rate_limit_rejections_total{scope="service"})") == "1");

    blobs = std::nan("");
    CHECK(sample(m.render(), "agentgw_hub_blobs_live") == "NaN");
    m.set_gauge_source(Metrics::Gauge::hub_blobs_live, nullptr);
    CHECK_THAT(m.render(), !Contains("agentgw_hub_blobs_live"));
    CHECK(calls == 3);
}
