#include "cli/spec.hpp"

#include <sstream>
#include <stdexcept>
#include <string_view>

namespace agentgw::cli {

namespace {

// A hint is a validator named "<k_hint_prefix><kind>[ <value>...]".
constexpr std::string_view k_hint_prefix = "agentgw-hint:";

CLI::Option* add_hint(CLI::Option* opt, const std::string& kind,
                      const std::vector<std::string>& values = {}) {
    std::string name = std::string(k_hint_prefix) + kind;
    for (const auto& value : values) {
        // A programming error in a command's definition, found by the first run of any test.
        if (value.empty() || value.find_first_of(" \t\n") != std::string::npos) {
            throw std::logic_error("completion value empty or with whitespace: '" + value + "'");
        }
        name += ' ' + value;
    }
    CLI::Validator hint;  // accepts everything, describes nothing
    hint.name(name);
    return opt->check(hint);
}

struct Hints {
    std::vector<std::string> choices;
    bool only_choices = false;
    bool file = false;
};

// The validator at `index`, or null past the last. CLI11 2.1.2 tells neither how many there are
// nor (get_validator is not const) lets a const Option be asked; it throws past the end.
const CLI::Validator* validator_at(CLI::Option& opt, int index) {
    try {
        return opt.get_validator(index);
    } catch (const CLI::OptionNotFound&) {
        return nullptr;
    }
}

Hints hints_of(CLI::Option& opt) {
    Hints hints;
    for (int i = 0; const CLI::Validator* v = validator_at(opt, i); ++i) {
        const std::string& name = v->get_name();
        if (!name.starts_with(k_hint_prefix)) {
            continue;
        }
        std::istringstream words(name.substr(k_hint_prefix.size()));
        std::string kind;
        words >> kind;
        if (kind == "file") {
            hints.file = true;
        } else {
            hints.only_choices = kind == "choices";
            hints.choices.clear();
            for (std::string value; words >> value;) {
                hints.choices.push_back(value);
            }
        }
    }
    return hints;
}

void add_hints(nlohmann::ordered_json& out, CLI::Option& opt) {
    const Hints hints = hints_of(opt);
    if (!hints.choices.empty()) {
        out["choices"] = hints.choices;
        out["only_choices"] = hints.only_choices;
    }
    if (hints.file) {
        out["file"] = true;
    }
}

std::vector<std::string> names_of(const CLI::Option& opt) {
    std::vector<std::string> names;
    for (const auto& s : opt.get_snames()) {
        names.push_back("-" + s);
    }
    for (const auto& l : opt.get_lnames()) {
        names.push_back("--" + l);
    }
    return names;
}

// More than one value in all: several occurrences, or several values in one.
bool repeatable(const CLI::Option& opt) {
    return opt.get_multi_option_policy() == CLI::MultiOptionPolicy::TakeAll ||
           opt.get_items_expected_max() > 1;
}

nlohmann::ordered_json describe_option(const CLI::App& app, CLI::Option& opt) {
    nlohmann::ordered_json out;
    out["names"] = names_of(opt);
    out["description"] = opt.get_description();
    out["takes_value"] = opt.get_items_expected_max() > 0;
    out["repeatable"] = repeatable(opt);
    out["required"] = opt.get_required();
    if (&opt == app.get_help_ptr()) {
        out["role"] = "help";
    } else if (&opt == app.get_version_ptr()) {
        out["role"] = "version";
    }
    if (!opt.get_envname().empty()) {
        out["env"] = opt.get_envname();
    }
    if (const auto excludes = opt.get_excludes(); !excludes.empty()) {
        std::vector<std::string> names;
        for (const CLI::Option* other : excludes) {
            for (auto& name : names_of(*other)) {
                names.push_back(std::move(name));
            }
        }
        out["excludes"] = names;
    }
    add_hints(out, opt);
    return out;
}

nlohmann::ordered_json describe_positional(CLI::Option& opt) {
    nlohmann::ordered_json out;
    out["name"] = opt.get_name();
    out["description"] = opt.get_description();
    out["required"] = opt.get_required();
    out["repeatable"] = repeatable(opt);
    add_hints(out, opt);
    return out;
}

}  // namespace

CLI::Option* one_of(CLI::Option* opt, const std::vector<std::string>& values) {
    opt->check(CLI::IsMember(values));
    return add_hint(opt, "choices", values);
}

CLI::Option* suggest(CLI::Option* opt, const std::vector<std::string>& values) {
    return add_hint(opt, "suggest", values);
}

CLI::Option* names_file(CLI::Option* opt) {
    return add_hint(opt, "file");
}

nlohmann::ordered_json describe(CLI::App& app) {
    nlohmann::ordered_json out;
    out["name"] = app.get_name();
    out["description"] = app.get_description();
    out["fallthrough"] = app.get_fallthrough();
    out["requires_command"] = app.get_require_subcommand_min() > 0;
    const auto visible = [](CLI::Option* opt) { return !opt->get_group().empty(); };
    out["options"] = nlohmann::ordered_json::array();
    out["positionals"] = nlohmann::ordered_json::array();
    for (CLI::Option* opt : app.get_options(visible)) {
        if (opt->get_positional() && !opt->nonpositional()) {
            out["positionals"].push_back(describe_positional(*opt));
        } else {
            out["options"].push_back(describe_option(app, *opt));
        }
    }
    out["commands"] = nlohmann::ordered_json::array();
    for (CLI::App* sub : app.get_subcommands([](CLI::App* a) { return !a->get_group().empty(); })) {
        out["commands"].push_back(describe(*sub));
    }
    return out;
}

}  // namespace agentgw::cli
