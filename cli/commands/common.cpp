#include "cli/commands/common.hpp"

#include <algorithm>
#include <memory>
#include <ostream>

#include <fmt/format.h>

#include "cli/output.hpp"
#include "common/utf8.hpp"

namespace agentgw::cli {

namespace {

std::string join(const std::vector<std::string>& parts) {
    std::string out;
    for (const auto& part : parts) {
        out += out.empty() ? part : ", " + part;
    }
    return out;
}

bool is_list_of_scalars(const nlohmann::json& value) {
    return value.is_array() && std::all_of(value.begin(), value.end(),
                                           [](const auto& item) { return item.is_primitive(); });
}

// The items of a list of strings in words, or `none` when the list is missing or empty.
std::string words_or(const nlohmann::json& list, std::string_view none) {
    if (!list.is_array() || list.empty()) {
        return std::string(none);
    }
    return cell(list);
}

}  // namespace

CLI::App* add_group(CLI::App& parent, const std::string& name, const std::string& description) {
    auto* group = parent.add_subcommand(name, description);
    group->require_subcommand(1);
    return group;
}

CLI::App* add_leaf(CLI::App& parent, Runner& chosen, const std::string& name,
                   const std::string& description, Runner run) {
    auto* cmd = parent.add_subcommand(name, description);
    cmd->callback([&chosen, run = std::move(run)] { chosen = run; });
    return cmd;
}

CLI::App* add_leaf(CLI::App& parent, Runner& chosen, const std::string& name,
                   const std::string& description, const std::string& arg_name,
                   const std::string& arg_help, ArgRunner run) {
    auto arg = std::make_shared<std::string>();
    auto* cmd = add_leaf(parent, chosen, name, description,
                         [arg, run = std::move(run)](Context& ctx) { return run(ctx, *arg); });
    cmd->add_option(arg_name, *arg, arg_help)->required();
    return cmd;
}

Result<Reply> call(Context& ctx, std::string_view method, const std::string& path,
                   const std::optional<nlohmann::json>& body) {
    TRY_ASSIGN(Reply reply, ctx.daemon().request(method, path, body));
    if (reply.status < 200 || reply.status > 299) {
        return ControlClient::error_of(reply);
    }
    return reply;
}

void print_reply(Context& ctx, const Reply& reply, const Printer& print) {
    if (ctx.json) {
        *ctx.out << (reply.body.is_null() ? nlohmann::json{{"ok", true}} : reply.body).dump()
                 << '\n';
    } else if (print) {
        print(*ctx.out, reply.body);
    }
}

Status call_and_print(Context& ctx, std::string_view method, const std::string& path,
                      const std::optional<nlohmann::json>& body, const Printer& print) {
    TRY_ASSIGN(Reply reply, call(ctx, method, path, body));
    print_reply(ctx, reply, print);
    return {};
}

const CLI::Validator& non_empty() {
    static const CLI::Validator check(
        [](const std::string& value) { return value.empty() ? "empty value" : ""; }, "");
    return check;
}

std::string printable(std::string_view text, bool keep_lines) {
    std::string out;
    out.reserve(text.size());
    while (!text.empty()) {
        const auto c = static_cast<unsigned char>(text.front());
        const size_t n = utf8_sequence_length(text);
        const size_t take = n == 0 ? 1 : n;
        // Control characters (newline and tab may stay) and bytes that are not UTF-8.
        const bool control =
            n == 0 || (utf8_is_control(text, n) && !(keep_lines && (c == '\n' || c == '\t')));
        if (control) {
            for (const unsigned char b : text.substr(0, take)) {
                out += fmt::format("\\x{:02x}", b);
            }
        } else {
            out.append(text.substr(0, take));
        }
        text.remove_prefix(take);
    }
    return out;
}

std::string cell(const nlohmann::json& value) {
    if (value.is_null() || (value.is_string() && value.get_ref<const std::string&>().empty())) {
        return "-";
    }
    if (value.is_string()) {
        return printable(value.get_ref<const std::string&>());
    }
    if (value.is_boolean()) {
        return value.get<bool>() ? "yes" : "no";
    }
    if (is_list_of_scalars(value)) {
        std::vector<std::string> parts;
        for (const auto& item : value) {
            parts.push_back(cell(item));
        }
        return parts.empty() ? "-" : join(parts);
    }
    // Numbers, and objects as JSON text, whose strings dump() leaves unescaped beyond JSON's
    // own rules (C1 controls among them).
    return printable(value.dump());
}

std::string field(const nlohmann::json& object, const std::string& key) {
    const auto it = object.find(key);
    return it == object.end() ? "-" : cell(*it);
}

std::string rule_text(const nlohmann::json& rule) {
    const auto member = [&](const char* key) {
        const auto it = rule.find(key);
        return it == rule.end() ? nlohmann::json() : *it;
    };
    return words_or(member("methods"), "any method") + " on " +
           words_or(member("paths"), "any path");
}

std::string rate_limit_text(const nlohmann::json& limit) {
    if (!limit.is_object()) {
        return "none";
    }
    return field(limit, "requests") + " requests per " + field(limit, "window_secs") + "s";
}

void append_rows(Rows& rows, const std::string& label, const nlohmann::json& items,
                 const std::function<std::string(const nlohmann::json&)>& text,
                 const std::string& none) {
    if (!items.is_array() || items.empty()) {
        rows.push_back({label, none});
        return;
    }
    for (size_t i = 0; i < items.size(); ++i) {
        rows.push_back({i == 0 ? label : "", text(items[i])});
    }
}

void print_list(std::ostream& out, const std::vector<std::string>& header,
                const nlohmann::json& items, const RowOf& row) {
    Rows rows;
    for (const auto& item : items) {
        rows.push_back(row(item));
    }
    print_table(out, header, rows);
}

}  // namespace agentgw::cli
