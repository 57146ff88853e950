// agentgw audit [--follow] [filters] | audit verify: read and check the audit log.
#include <array>
#include <chrono>
#include <csignal>
#include <memory>
#include <ostream>
#include <regex>
#include <signal.h>
#include <thread>

#include <fmt/format.h>

#include "cli/commands/commands.hpp"
#include "cli/commands/common.hpp"
#include "cli/output.hpp"
#include "common/decimal_check.hpp"

namespace agentgw::cli {

namespace {

struct AuditOptions {
    bool follow = false;
    std::string since;
    std::string agent;
    std::string service;
    std::string action;
    int limit = 100;
};

const std::vector<std::string> k_header = {"SEQ", "TIME", "ACTOR", "ACTION", "TARGET", "OUTCOME"};
// --follow prints the table a few rows at a time; fixed widths keep its columns aligned.
const std::vector<size_t> k_follow_widths = {6, 20, 14, 18, 24, 0};

std::vector<std::string> entry_row(const nlohmann::json& e) {
    return {field(e, "seq"),    field(e, "time"),   field(e, "actor"),
            field(e, "action"), field(e, "target"), field(e, "outcome")};
}

std::string audit_path(const AuditOptions& o, const std::string& after) {
    const std::string limit = std::to_string(o.limit);
    return "/v1/audit" + ControlClient::query({{"after", after},
                                               {"since", o.since},
                                               {"agent", o.agent},
                                               {"service", o.service},
                                               {"action", o.action},
                                               {"limit", limit}});
}

Status run_list(Context& ctx, const AuditOptions& o) {
    return call_and_print(ctx, "GET", audit_path(o, ""), std::nullopt,
                          [](auto& out, const auto& body) {
                              print_list(out, k_header, body.at("entries"), entry_row);
                          });
}

volatile std::sig_atomic_t g_stop = 0;

extern "C" void request_stop(int) {
    g_stop = 1;
}

// SIGINT and SIGTERM set g_stop instead of ending the program, for its lifetime.
class StopOnSignal {
  public:
    StopOnSignal() {
        g_stop = 0;
        struct sigaction action = {};
        action.sa_handler = request_stop;
        sigemptyset(&action.sa_mask);
        sigaction(SIGINT, &action, &previous_[0]);
        sigaction(SIGTERM, &action, &previous_[1]);
    }
    ~StopOnSignal() {
        sigaction(SIGINT, &previous_[0], nullptr);
        sigaction(SIGTERM, &previous_[1], nullptr);
    }
    StopOnSignal(const StopOnSignal&) = delete;
    StopOnSignal& operator=(const StopOnSignal&) = delete;

  private:
    std::array<struct sigaction, 2> previous_ = {};
};

// Pages through the log from the start (or --since), then polls every second from the `next`
// cursor until SIGINT or SIGTERM. With --json: one entry per line (NDJSON).
Status run_follow(Context& ctx, const AuditOptions& o) {
    const StopOnSignal stop_on_signal;
    ctx.daemon().stop_when(&g_stop);  // a signal ends a request that waits, too
    std::ostream& out = *ctx.out;
    if (!ctx.json) {
        print_table(out, k_header, {}, k_follow_widths);
    }
    std::string after;
    while (g_stop == 0) {
        auto answered = call(ctx, "GET", audit_path(o, after));
        if (!answered && g_stop != 0) {
            break;  // interrupted while waiting for the daemon: a normal end
        }
        TRY_ASSIGN(Reply reply, std::move(answered));
        const auto& entries = reply.body.at("entries");
        Rows rows;
        for (const auto& entry : entries) {
            if (ctx.json) {
                out << entry.dump() << '\n';
            } else {
                rows.push_back(entry_row(entry));
            }
        }
        print_table(out, {}, rows, k_follow_widths);
        out.flush();
        if (!out) {
            break;  // nobody gets what follows: the caller reports the failed write
        }
        if (const auto next = reply.body.find("next");
            next != reply.body.end() && next->is_number_integer()) {
            after = std::to_string(next->get<int64_t>());
        } else if (!entries.empty()) {
            after = field(entries.back(), "seq");
        }
        // A full page means more are waiting: ask again at once.
        if (entries.size() >= static_cast<size_t>(o.limit)) {
            continue;
        }
        for (int i = 0; i < 10 && g_stop == 0; ++i) {
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
    }
    return {};
}

Status run_verify(Context& ctx) {
    TRY_ASSIGN(Reply reply, call(ctx, "POST", "/v1/audit/verify"));
    const auto& r = reply.body;
    if (!r.at("ok").get<bool>()) {
        print_reply(ctx, reply);  // --json still prints the document
        return make_error(Code::corrupt, fmt::format("audit log BROKEN at entry {}: {}",
                                                     field(r, "broken_seq"), field(r, "message")));
    }
    print_reply(ctx, reply, [](auto& out, const auto& body) {
        const std::string entries = field(body, "entries");
        if (entries == "0") {
            out << "audit log OK: 0 entries\n";
        } else {
            out << fmt::format("audit log OK: {} entries (seq {}..{})\n", entries,
                               field(body, "first_seq"), field(body, "last_seq"));
        }
    });
    return {};
}

// RFC 3339 in UTC, as the daemon writes times: 2026-11-22T21:00:00Z, fractions allowed.
const CLI::Validator k_utc_time(
    [](std::string& value) -> std::string {
        static const std::regex pattern(R"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z)");
        return std::regex_match(value, pattern)
                   ? std::string()
                   : "not an RFC 3339 UTC time such as 2026-11-22T21:00:00Z: " + value;
    },
    "RFC3339", "RFC3339_UTC");

}  // namespace

void register_audit(CLI::App& parent, Context&, Runner& chosen) {
    auto* audit = parent.add_subcommand("audit", "Show, follow or verify the audit log");
    audit->require_subcommand(0, 1);
    auto* verify =
        add_leaf(*audit, chosen, "verify", "Check the audit log's hash chain", run_verify);

    auto o = std::make_shared<AuditOptions>();
    const std::vector<CLI::Option*> options = {
        audit->add_flag("--follow", o->follow,
                        "Keep printing new entries until interrupted (NDJSON with --json)"),
        audit->add_option("--since", o->since, "Only entries at or after this RFC 3339 UTC time")
            ->check(k_utc_time),
        audit->add_option("--agent", o->agent, "Only entries about this agent (name or id)")
            ->check(non_empty()),
        audit->add_option("--service", o->service, "Only entries about this service")
            ->check(non_empty()),
        audit->add_option("--action", o->action, "Only entries with this action")
            ->check(non_empty()),
        audit->add_option("--limit", o->limit, "At most this many entries (default 100)")
            ->check(decimal())
            ->check(CLI::Range(1, 1000)),
    };
    audit->callback([&chosen, o, verify, options] {
        // Subcommand callbacks run first: verify has chosen already.
        if (verify->parsed()) {
            for (const auto* opt : options) {
                if (opt->count() > 0) {
                    throw CLI::ValidationError(opt->get_name(), "not an option of audit verify");
                }
            }
            return;
        }
        chosen = [o](Context& ctx) { return o->follow ? run_follow(ctx, *o) : run_list(ctx, *o); };
    });
}

}  // namespace agentgw::cli
