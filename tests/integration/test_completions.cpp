// The shell completions and agentgw(1) against the CLI's own definition, `agentgw __spec`:
// completions/ holds exactly what scripts/gen-completions writes from it, every command and
// option is in each script and in the man page, and bash, fish and zsh really complete with
// the scripts: commands, subcommands, options and their values.
#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <optional>
#include <set>
#include <sstream>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"

using namespace agentgw::test;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

using Words = std::vector<std::string>;
using Matches = std::set<std::string>;

const fs::path k_source = AGENTGW_SOURCE_DIR;
const fs::path k_completions = k_source / "completions";
const fs::path k_generator = k_source / "scripts" / "gen-completions";
const char* const k_scripts[] = {"agentgw.bash", "_agentgw", "agentgw.fish"};

// What regenerates completions/ from this build's agentgw.
std::string regenerate() {
    return "scripts/gen-completions --agentgw " + std::string(AGENTGW_CLI_PATH);
}

// The path of `name` on PATH, or "" when it is not there.
std::string find_program(const std::string& name) {
    const char* path = std::getenv("PATH");
    std::istringstream dirs(path != nullptr ? path : "/usr/bin:/bin");
    for (std::string dir; std::getline(dirs, dir, ':');) {
        const fs::path candidate = fs::path(dir.empty() ? "." : dir) / name;
        if (::access(candidate.c_str(), X_OK) == 0) {
            return candidate.string();
        }
    }
    return "";
}

// A program the test runs; the test fails when it is missing.
std::string program(const std::string& name) {
    const std::string path = find_program(name);
    INFO(name << " is not on PATH; scripts/install-deps installs it");
    REQUIRE(!path.empty());
    return path;
}

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> lines;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        lines.push_back(line);
    }
    return lines;
}

std::string joined(const Words& words, const std::string& separator = " ") {
    std::string out;
    for (const auto& w : words) {
        out += (out.empty() ? "" : separator) + w;
    }
    return out;
}

// `text` in single quotes for bash and zsh.
std::string sh_quoted(const std::string& text) {
    std::string out = "'";
    for (const char c : text) {
        out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    }
    return out + "'";
}

// `text` in single quotes for fish.
std::string fish_quoted(const std::string& text) {
    std::string out = "'";
    for (const char c : text) {
        if (c == '\'' || c == '\\') {
            out += '\\';
        }
        out += c;
    }
    return out + "'";
}

// True when `name` occurs in `text` as a whole word: not inside a longer name.
bool has_word(const std::string& text, const std::string& name) {
    const auto part_of_name = [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '_';
    };
    for (size_t pos = text.find(name); pos != std::string::npos; pos = text.find(name, pos + 1)) {
        const size_t end = pos + name.size();
        if ((pos == 0 || !part_of_name(text[pos - 1])) &&
            (end == text.size() || !part_of_name(text[end]))) {
            return true;
        }
    }
    return false;
}

// ---------------------------------------------------------------------------------------------
// The spec

const json& spec() {
    static const json doc = [] {
        const RunResult r = run({AGENTGW_CLI_PATH, "__spec"});
        INFO(r.err);
        REQUIRE(r.code == 0);
        return json::parse(r.out);
    }();
    return doc;
}

struct Command {
    Words path;  // empty for agentgw itself
    json doc;

    std::string name() const { return joined(path); }
    Words line() const {
        Words words = {"agentgw"};
        words.insert(words.end(), path.begin(), path.end());
        return words;
    }
    Matches subcommands() const {
        Matches names;
        for (const auto& sub : doc.at("commands")) {
            names.insert(sub.at("name").get<std::string>());
        }
        return names;
    }
    // The option named `name`, or null.
    json option(const std::string& name) const {
        for (const auto& opt : doc.at("options")) {
            const auto& names = opt.at("names");
            if (std::find(names.begin(), names.end(), name) != names.end()) {
                return opt;
            }
        }
        return nullptr;
    }
};

void collect(const json& doc, const Words& path, std::vector<Command>& out) {
    out.push_back({path, doc});
    for (const auto& sub : doc.at("commands")) {
        Words sub_path = path;
        sub_path.push_back(sub.at("name").get<std::string>());
        collect(sub, sub_path, out);
    }
}

// Every command, agentgw itself first, each before its subcommands.
std::vector<Command> commands() {
    std::vector<Command> out;
    collect(spec(), {}, out);
    return out;
}

Command command(const std::string& name) {
    for (auto& c : commands()) {
        if (c.name() == name) {
            return c;
        }
    }
    FAIL("no command \"" << name << "\" in agentgw __spec");
    return {};
}

Matches names_of(const json& options) {
    Matches names;
    for (const auto& opt : options) {
        for (const auto& name : opt.at("names")) {
            names.insert(name.get<std::string>());
        }
    }
    return names;
}

// The options a command accepts: its own, and below agentgw the global ones that fall
// through to it (SPEC §5: "agentgw audit --json"), less agentgw's --help and --version.
Matches options_at(const Command& c) {
    Matches names = names_of(c.doc.at("options"));
    if (!c.path.empty()) {
        for (const auto& opt : spec().at("options")) {
            const std::string role = opt.value("role", "");
            if (role != "help" && role != "version") {
                const Matches global = names_of(json::array({opt}));
                names.insert(global.begin(), global.end());
            }
        }
    }
    return names;
}

// ---------------------------------------------------------------------------------------------
// Completing in the shells: each runs every query in one process and answers, per query, the
// matches offered for its last word.

std::vector<Matches> split_answers(const std::string& out, size_t count) {
    std::vector<Matches> answers;
    for (const auto& line : lines_of(out)) {
        if (line.starts_with("<<<") && line.ends_with(">>>")) {
            answers.emplace_back();
        } else if (!answers.empty() && !line.empty()) {
            answers.back().insert(line);
        }
    }
    INFO(out);
    REQUIRE(answers.size() == count);
    return answers;
}

// bash: COMP_WORDS and COMP_CWORD set as bash sets them, then _agentgw; COMPREPLY is the answer.
std::vector<Matches> complete_bash(const std::vector<Words>& queries) {
    std::string script = "source " + sh_quoted((k_completions / "agentgw.bash").string()) +
                         "\n"
                         "q() { COMP_WORDS=(\"$@\"); COMP_CWORD=$(($# - 1)); COMPREPLY=(); "
                         "_agentgw; printf '%s\\n' \"${COMPREPLY[@]}\"; }\n";
    for (const auto& words : queries) {
        script += "echo '<<<>>>'; q";
        for (const auto& w : words) {
            script += " " + sh_quoted(w);
        }
        script += "\n";
    }
    const RunResult r = run({program("bash"), "--norc", "--noprofile", "-c", script});
    INFO(r.err);
    REQUIRE(r.code == 0);
    CHECK(r.err.empty());
    return split_answers(r.out, queries.size());
}

// fish: `complete -C` on the command line; its answer lines are "match<TAB>description".
std::vector<Matches> complete_fish(const std::vector<Words>& queries) {
    const TempDir home;
    // Only the script under test: no completions autoloaded from elsewhere.
    std::string script = "set fish_complete_path\nsource " +
                         fish_quoted((k_completions / "agentgw.fish").string()) + "\n";
    for (const auto& words : queries) {
        script += "echo '<<<>>>'; complete -C" + fish_quoted(joined(words)) + "\n";
    }
    const RunResult r = run({program("fish"), "--no-config", "-c", script},
                            {{"HOME", home.path().string()},
                             {"XDG_CONFIG_HOME", (home / "config").string()},
                             {"XDG_DATA_HOME", (home / "data").string()}});
    INFO(r.err);
    REQUIRE(r.code == 0);
    CHECK(r.err.empty());
    std::string matches;
    for (const auto& line : lines_of(r.out)) {
        matches += line.substr(0, line.find('\t')) + "\n";
    }
    return split_answers(matches, queries.size());
}

// zsh: an interactive zsh on a pseudo-terminal (zpty) types each line and a tab; compadd,
// wrapped, prints every match offered and nothing is inserted.
constexpr const char* k_zshrc = R"(PS1='' PROMPT='' RPROMPT=''
bindkey -e
fpath=("$COMPLETIONS_DIR" $fpath)
autoload -Uz compinit && compinit -u -D
compadd() {
    if (( ${@[(I)-[OAD]]} )); then  # internal calls that only collect or filter words
        builtin compadd "$@"
        return
    fi
    local -a matches
    builtin compadd -O matches "$@"
    print -rl -- "${matches[@]/#/match:}"
    builtin compadd "$@"
}
capture_begin() { print -r -- '<<<begin>>>'; }
capture_end() {
    compstate[insert]='' compstate[list]=''
    print -r -- '<<<end>>>'
    compprefuncs=(capture_begin) comppostfuncs=(capture_end)
}
compprefuncs=(capture_begin) comppostfuncs=(capture_end)
bindkey '^I' complete-word
print -r -- '<<<ready>>>'
)";

// zsh -f driver ZDOTDIR LINE...: prints "<<<>>>" then the matches for each line.
constexpr const char* k_zsh_driver = R"(zmodload zsh/zpty || exit 2
export ZDOTDIR=$1
shift
zpty comp zsh -i || exit 2
local line
while zpty -r comp line; do [[ $line == *'<<<ready>>>'* ]] && break; done
for typed in "$@"; do
    print -r -- '<<<>>>'
    zpty -w -n comp "$typed"$'\t'
    local collecting=0
    while zpty -r comp line; do
        line=${line//$'\r'/}; line=${line%$'\n'}
        [[ $line == *'<<<begin>>>'* ]] && { collecting=1; continue; }
        [[ $line == *'<<<end>>>'* ]] && break
        if (( collecting )); then
            if [[ $line == *match:* ]]; then
                print -r -- ${line#*match:}
            elif [[ $line == *[^[:space:]]* ]]; then
                print -ru2 -- $line  # an error message from a completion function
            fi
        fi
    done
    zpty -w -n comp $'\x15'
done
zpty -d comp
)";

std::vector<Matches> complete_zsh(const std::vector<Words>& queries) {
    const TempDir dir;
    write_file(dir / ".zshenv", "setopt no_global_rcs\n");
    write_file(dir / ".zshrc", k_zshrc);
    write_file(dir / "driver.zsh", k_zsh_driver);
    Words argv = {program("zsh"), "-f", (dir / "driver.zsh").string(), dir.path().string()};
    for (const auto& words : queries) {
        argv.push_back(joined(words));
    }
    const RunResult r = run(argv,
                            {{"COMPLETIONS_DIR", k_completions.string()},
                             {"HOME", dir.path().string()},
                             {"TERM", "dumb"}},
                            std::nullopt, 20s);
    INFO(r.err);
    REQUIRE(r.code == 0);
    CHECK(r.err.empty());  // no error from a completion function
    return split_answers(r.out, queries.size());
}

using Completer = std::vector<Matches> (*)(const std::vector<Words>&);

// Every command of the spec, completed in one shell: its subcommands after it, all of its
// options after "-", and each value choice after an option that has them.
void check_every_command(Completer complete) {
    struct Expected {
        Words query;
        Matches matches;
    };
    std::vector<Expected> expected;
    for (const auto& c : commands()) {
        Words line = c.line();
        if (!c.doc.at("commands").empty()) {
            line.push_back("");
            expected.push_back({line, c.subcommands()});
            line.pop_back();
        }
        line.push_back("-");
        expected.push_back({line, options_at(c)});
        line.pop_back();
        for (const auto& opt : c.doc.at("options")) {
            if (opt.contains("choices")) {
                Words query = line;
                query.push_back(opt.at("names").back().get<std::string>());
                query.push_back("");
                const auto choices = opt.at("choices").get<std::vector<std::string>>();
                expected.push_back({query, Matches(choices.begin(), choices.end())});
            }
        }
    }
    std::vector<Words> queries;
    for (const auto& e : expected) {
        queries.push_back(e.query);
    }
    const std::vector<Matches> answers = complete(queries);
    for (size_t i = 0; i < expected.size(); ++i) {
        INFO("completing \"" << joined(expected[i].query) << "\"");
        CHECK(answers[i] == expected[i].matches);
    }
}

bool any_ends_with(const Matches& matches, const std::string& suffix) {
    return std::any_of(matches.begin(), matches.end(),
                       [&](const std::string& m) { return m.ends_with(suffix); });
}

// ---------------------------------------------------------------------------------------------
// agentgw(1)

// The synopsis of each list item of the man page, its .It line or its .It Xo ... .Xc block,
// without the dots: "Cm agent grant Ar agent service Op Fl -method Ar method ...".
std::vector<std::string> man_item_heads(const std::vector<std::string>& lines) {
    std::vector<std::string> heads;
    for (size_t i = 0; i < lines.size(); ++i) {
        if (lines[i] == ".It Xo") {
            std::string head;
            for (++i; i < lines.size() && lines[i] != ".Xc"; ++i) {
                head +=
                    (head.empty() ? "" : " ") + lines[i].substr(lines[i].starts_with(".") ? 1 : 0);
            }
            heads.push_back(head);
        } else if (lines[i].starts_with(".It ")) {
            heads.push_back(lines[i].substr(4));
        }
    }
    return heads;
}

Words tokens_of(const std::string& text) {
    Words tokens;
    std::istringstream in(text);
    for (std::string t; in >> t;) {
        tokens.push_back(t);
    }
    return tokens;
}

// The item documenting command `c`: a head "Cm <its path>" followed by macros, not by a
// subcommand's name.
std::optional<Words> man_head_of(const std::vector<std::string>& heads, const Command& c) {
    for (const auto& head : heads) {
        const Words tokens = tokens_of(head);
        if (tokens.size() <= c.path.size() || tokens[0] != "Cm" ||
            !std::equal(c.path.begin(), c.path.end(), tokens.begin() + 1)) {
            continue;
        }
        const size_t next = c.path.size() + 1;
        if (next == tokens.size() || std::isupper(static_cast<unsigned char>(tokens[next][0]))) {
            return tokens;
        }
    }
    return std::nullopt;
}

// An option's name as mdoc writes it after Fl: "--json" is "Fl -json", "-h" is "Fl h".
std::string fl(const std::string& name) {
    return "Fl " + name.substr(1);
}

// The option names ("--name", "-h") and argument names that a synopsis's Fl and Ar macros give.
void man_names(const Words& tokens, Matches& options, Matches& arguments) {
    std::string macro;
    for (const auto& t : tokens) {
        if (std::isupper(static_cast<unsigned char>(t[0])) && t.size() <= 3) {
            macro = t;
        } else if (macro == "Fl") {
            options.insert("-" + t);
        } else if (macro == "Ar") {
            arguments.insert(t);
        }
    }
}

std::string lower(std::string text) {
    for (char& c : text) {
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    return text;
}

}  // namespace

TEST_CASE("agentgw __spec describes the commands and options, and is hidden") {
    const json& s = spec();
    CHECK(s.at("name") == "agentgw");
    CHECK(command("").subcommands() == Matches{"status", "user", "agent", "service", "credential",
                                               "connect", "publish", "retrieve", "audit"});
    for (const auto& c : commands()) {
        INFO(c.name());
        CHECK_FALSE(c.subcommands().contains("__spec"));
        CHECK(c.option("-h").is_object());
        CHECK(c.option("--help").is_object());
    }

    // The hints kept with the options: value choices, and file names.
    const json type = command("credential set").option("--type");
    REQUIRE(type.is_object());
    CHECK(type.at("choices") == json::array({"api_key", "basic", "oauth2", "client_secret"}));
    CHECK(type.at("only_choices") == true);
    const json method = command("agent grant").option("--method");
    REQUIRE(method.is_object());
    CHECK(method.at("choices").size() == 7);
    CHECK(method.at("only_choices") == false);  // any method token, or *, is accepted
    CHECK(method.at("repeatable") == true);
    const json socket = command("").option("--socket");
    REQUIRE(socket.is_object());
    CHECK(socket.at("file") == true);
    CHECK(socket.at("takes_value") == true);
    CHECK(socket.at("env") == "AGENTGW_SOCKET");
    CHECK(command("").option("--json").at("takes_value") == false);
    CHECK(command("").option("--version").at("role") == "version");
    CHECK(command("credential set").option("--user").at("excludes") == json::array({"--agent"}));
    CHECK(command("agent grant").doc.at("positionals") ==
          json::parse(R"([{"name":"AGENT","description":"Agent name or id","required":true,
                           "repeatable":false},
                          {"name":"SERVICE","description":"Service id","required":true,
                           "repeatable":false}])"));
    CHECK(command("retrieve").doc.at("positionals").at(0).at("required") == false);

    // The hints change neither parsing nor --help.
    const RunResult bad = run({AGENTGW_CLI_PATH, "--socket", "/nonexistent/agentgw.sock",
                               "credential", "set", "svc", "--type", "bogus"});
    CHECK(bad.code == 2);
    CHECK(bad.err.find("bogus not in {api_key,basic,oauth2,client_secret}") != std::string::npos);
    const RunResult help = run({AGENTGW_CLI_PATH, "credential", "set", "--help"});
    CHECK(help.code == 0);
    CHECK(help.out.find("--type TEXT:{api_key,basic,oauth2,client_secret}") != std::string::npos);
    const RunResult top = run({AGENTGW_CLI_PATH, "--help"});
    CHECK(top.code == 0);
    CHECK(top.out.find("__spec") == std::string::npos);
    CHECK(top.out.find("credential") != std::string::npos);
}

TEST_CASE("completions/ holds what scripts/gen-completions writes from agentgw __spec") {
    const std::string python = program("python3");
    const TempDir dir;
    const RunResult gen =
        run({python, k_generator.string(), "--agentgw", AGENTGW_CLI_PATH, "--out-dir", dir.path()});
    INFO(gen.err);
    REQUIRE(gen.code == 0);
    for (const char* name : k_scripts) {
        const std::string fresh = read_file(dir / name);
        const std::string committed = read_file(k_completions / name);
        if (fresh != committed) {
            const auto a = lines_of(fresh), b = lines_of(committed);
            size_t line = 0;
            while (line < a.size() && line < b.size() && a[line] == b[line]) {
                ++line;
            }
            FAIL_CHECK("completions/" << name << " is out of date (first difference at line "
                                      << line + 1 << "); regenerate with " << regenerate());
        }
        CHECK(fresh.find("Generated by scripts/gen-completions") != std::string::npos);
    }

    // --check, as CI may run it: quiet when up to date, else naming the stale file.
    const RunResult ok = run({python, k_generator.string(), "--agentgw", AGENTGW_CLI_PATH,
                              "--out-dir", dir.path(), "--check"});
    CHECK(ok.code == 0);
    CHECK(ok.err.empty());
    write_file(dir / "_agentgw", read_file(dir / "_agentgw") + "# edited by hand\n");
    const RunResult stale = run({python, k_generator.string(), "--agentgw", AGENTGW_CLI_PATH,
                                 "--out-dir", dir.path(), "--check"});
    CHECK(stale.code == 1);
    CHECK(stale.err.find("_agentgw is out of date") != std::string::npos);
    CHECK(stale.err.find("agentgw.bash") == std::string::npos);
}

TEST_CASE("every command and option of agentgw __spec is in each completion script") {
    for (const char* name : k_scripts) {
        const std::string script = read_file(k_completions / name);
        for (const auto& c : commands()) {
            for (const auto& part : c.path) {
                INFO(name << ": command " << c.name());
                CHECK(has_word(script, part));
            }
            for (const auto& option : names_of(c.doc.at("options"))) {
                // fish names options without their dashes: "-l socket", "-s h".
                const std::string bare = option.substr(option.find_first_not_of('-'));
                const std::string word = std::string(name) == "agentgw.fish"
                                             ? (option.starts_with("--") ? "-l " : "-s ") + bare
                                             : option;
                INFO(name << ": option " << option << " of \"" << c.name() << "\"");
                CHECK(has_word(script, word));
            }
            for (const auto& opt : c.doc.at("options")) {
                for (const auto& choice : opt.value("choices", json::array())) {
                    INFO(name << ": value " << choice << " of \"" << c.name() << "\"");
                    CHECK(has_word(script, choice.get<std::string>()));
                }
            }
        }
    }
}

TEST_CASE("agentgw(1) documents every command and option of agentgw __spec") {
    const std::vector<std::string> lines = lines_of(read_file(k_source / "man" / "agentgw.1"));
    const std::vector<std::string> heads = man_item_heads(lines);
    std::string page;
    for (const auto& line : lines) {
        page += line + "\n";
    }

    // agentgw's own options are in OPTIONS; -h/--help there covers every command's.
    for (const auto& option : names_of(spec().at("options"))) {
        INFO("global option " << option);
        CHECK(has_word(page, fl(option)));
    }
    for (const auto& c : commands()) {
        if (c.path.empty()) {
            continue;
        }
        INFO("command \"" << c.name() << "\"");
        CHECK(has_word(page, "Cm " + c.name()));
        const bool has_own =
            !c.doc.at("positionals").empty() || c.doc.at("options").size() > 1;  // beyond -h
        if (!has_own && !c.doc.at("commands").empty()) {
            continue;  // a group such as "agent": its subcommands have the items
        }
        // Its item's synopsis names its options and arguments, and no other option.
        const auto head = man_head_of(heads, c);
        REQUIRE(head.has_value());
        Matches options, arguments;
        man_names(*head, options, arguments);
        INFO("item: " << joined(*head));
        const Matches accepted = options_at(c);
        for (const auto& option : names_of(c.doc.at("options"))) {
            if (option != "-h" && option != "--help") {
                CHECK(options.contains(option));
            }
        }
        for (const auto& option : options) {
            INFO("documented option " << option);
            CHECK(accepted.contains(option));
        }
        for (const auto& positional : c.doc.at("positionals")) {
            CHECK(arguments.contains(lower(positional.at("name").get<std::string>())));
        }
    }
}

TEST_CASE("the completion scripts pass bash -n, zsh -n and fish --no-execute") {
    CHECK(run({program("bash"), "-n", (k_completions / "agentgw.bash").string()}).code == 0);
    CHECK(run({program("zsh"), "-n", (k_completions / "_agentgw").string()}).code == 0);
    const RunResult fish =
        run({program("fish"), "--no-execute", (k_completions / "agentgw.fish").string()});
    INFO(fish.err);
    CHECK(fish.code == 0);
}

TEST_CASE("bash completes commands, options and their values") {
    const TempDir dir;
    write_file(dir / "socket-file", "");
    const std::string socket_prefix = (dir / "sock").string();
    const auto a = complete_bash({
        {"agentgw", ""},
        {"agentgw", "cr"},
        {"agentgw", "agent", "r"},
        {"agentgw", "credential", "set", "--"},
        {"agentgw", "credential", "set", "svc", "--type", ""},
        {"agentgw", "credential", "set", "--type", "=", "o"},  // --type=o, as bash splits it
        {"agentgw", "credential", "set", "--type", "="},       // --type=
        {"agentgw", "--socket", "/run/x.sock", "user", ""},
        {"agentgw", "user", "list", "--j"},
        {"agentgw", "--socket", socket_prefix},
        {"agentgw", "agent", "grant", "bot", "github", "--method", "P"},
        {"agentgw", "agent", "show", ""},  // an agent's name: nothing to offer
        {"agentgw", "agent", "show", "bot", ""},
    });
    CHECK(a[0] == Matches{"status", "user", "agent", "service", "credential", "connect", "publish",
                          "retrieve", "audit"});
    CHECK(a[1] == Matches{"credential"});
    CHECK(a[2] == Matches{"rotate", "rm", "revoke"});
    CHECK(a[3] == Matches{"--help", "--user", "--agent", "--type", "--socket", "--json"});
    CHECK(a[4] == Matches{"api_key", "basic", "oauth2", "client_secret"});
    CHECK(a[5] == Matches{"oauth2"});
    CHECK(a[6] == Matches{"api_key", "basic", "oauth2", "client_secret"});
    CHECK(a[7] == Matches{"add", "list", "show", "rm"});
    CHECK(a[8] == Matches{"--json"});
    CHECK(a[9] == Matches{(dir / "socket-file").string()});
    CHECK(a[10] == Matches{"POST", "PUT", "PATCH"});
    CHECK(a[11].empty());
    CHECK(a[12] == Matches{"-h", "--help", "--socket", "--json"});

    check_every_command(complete_bash);
}

TEST_CASE("fish completes commands, options and their values") {
    const TempDir dir;
    write_file(dir / "socket-file", "");
    const auto a = complete_fish({
        {"agentgw", ""},
        {"agentgw", "ag"},
        {"agentgw", "credential", "s"},
        {"agentgw", "credential", "set", "--"},
        {"agentgw", "credential", "set", "svc", "--type", ""},
        {"agentgw", "credential", "set", "--type=b"},
        {"agentgw", "--json", "agent", "r"},
        {"agentgw", "--socket", (dir / "sock").string()},
        {"agentgw", "audit", "verify", "--"},
    });
    CHECK(a[0] == Matches{"status", "user", "agent", "service", "credential", "connect", "publish",
                          "retrieve", "audit"});
    CHECK(a[1] == Matches{"agent"});
    CHECK(a[2] == Matches{"set"});
    CHECK(a[3] == Matches{"--help", "--user", "--agent", "--type", "--socket", "--json"});
    CHECK(a[4] == Matches{"api_key", "basic", "oauth2", "client_secret"});
    CHECK(a[5] == Matches{"--type=basic"});
    CHECK(a[6] == Matches{"rotate", "rm", "revoke"});
    CHECK(a[7] == Matches{(dir / "socket-file").string()});
    CHECK(a[8] == Matches{"--help", "--socket", "--json"});  // audit's filters are not verify's

    check_every_command(complete_fish);
}

TEST_CASE("zsh completes commands, options and their values") {
    const TempDir dir;
    write_file(dir / "socket-file", "");
    const auto a = complete_zsh({
        {"agentgw", ""},
        {"agentgw", "se"},
        {"agentgw", "agent", "gr"},
        {"agentgw", "credential", "set", "--"},
        {"agentgw", "credential", "set", "svc", "--type", ""},
        {"agentgw", "credential", "set", "--type=c"},
        {"agentgw", "--socket", (dir / "sock").string()},
        {"agentgw", "agent", "grant", "bot", "github", "--method", "P"},
    });
    CHECK(a[0] == Matches{"status", "user", "agent", "service", "credential", "connect", "publish",
                          "retrieve", "audit"});
    CHECK(a[1] == Matches{"service"});
    CHECK(a[2] == Matches{"grant"});
    CHECK(a[3] == Matches{"--help", "--user", "--agent", "--type", "--socket", "--json"});
    CHECK(a[4] == Matches{"api_key", "basic", "oauth2", "client_secret"});
    CHECK(a[5] == Matches{"client_secret"});
    CHECK(any_ends_with(a[6], "socket-file"));
    CHECK(a[7] == Matches{"POST", "PUT", "PATCH"});

    check_every_command(complete_zsh);
}
