#include "daemon/util/strict_json.hpp"

#include <utility>
#include <vector>

namespace agentgw {

namespace {

using json = nlohmann::json;

// Builds a json value from SAX events like nlohmann's own DOM parser, but stops at the first
// key an object already holds. Pointers into the tree stay valid: an object's members are
// map nodes, and an array only grows while it is the innermost open container.
class StrictJsonBuilder final : public nlohmann::json_sax<json> {
  public:
    json& root() noexcept { return root_; }
    bool duplicate_key() const noexcept { return duplicate_key_; }

    bool null() override { return put(nullptr); }
    bool boolean(bool val) override { return put(val); }
    bool number_integer(number_integer_t val) override { return put(val); }
    bool number_unsigned(number_unsigned_t val) override { return put(val); }
    bool number_float(number_float_t val, const string_t&) override { return put(val); }
    bool string(string_t& val) override { return put(std::move(val)); }
    bool binary(binary_t&) override { return false; }  // not produced by JSON text

    bool start_object(std::size_t) override {
        json* object = slot();
        *object = json::object();
        open_.push_back(object);
        return true;
    }
    bool key(string_t& val) override {
        json& object = *open_.back();
        if (object.contains(val)) {
            duplicate_key_ = true;
            return false;  // aborts the parse
        }
        member_ = &object[std::move(val)];
        return true;
    }
    bool end_object() override {
        open_.pop_back();
        return true;
    }
    bool start_array(std::size_t) override {
        json* array = slot();
        *array = json::array();
        open_.push_back(array);
        return true;
    }
    bool end_array() override {
        open_.pop_back();
        return true;
    }
    bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override {
        return false;
    }

  private:
    // Where the next value goes: the root, the next array element, or the member just keyed.
    json* slot() {
        if (open_.empty()) {
            return &root_;
        }
        json& container = *open_.back();
        if (container.is_array()) {
            container.emplace_back();
            return &container.back();
        }
        return std::exchange(member_, nullptr);
    }
    template <typename V>
    bool put(V&& value) {
        *slot() = json(std::forward<V>(value));
        return true;
    }

    json root_;
    std::vector<json*> open_;
    json* member_ = nullptr;
    bool duplicate_key_ = false;
};

}  // namespace

Result<nlohmann::json> parse_json_object_strict(std::string_view text) {
    StrictJsonBuilder builder;
    const bool parsed = json::sax_parse(text, &builder);
    if (builder.duplicate_key()) {
        return make_error(Code::invalid_argument, "duplicate key in JSON object");
    }
    if (!parsed) {
        return make_error(Code::invalid_argument, "malformed JSON");
    }
    if (!builder.root().is_object()) {
        return make_error(Code::invalid_argument, "JSON value is not an object");
    }
    return std::move(builder.root());
}

}  // namespace agentgw
