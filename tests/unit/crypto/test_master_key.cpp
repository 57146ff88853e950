#include <catch2/catch.hpp>

#include "daemon/crypto/encoding.hpp"
#include "daemon/crypto/key_envelope.hpp"
#include "daemon/crypto/master_key.hpp"
#include "tests/support/temp_dir.hpp"

using namespace agentgw;
using agentgw::test::TempDir;
namespace fs = std::filesystem;

TEST_CASE("key files hold 32 raw bytes or 64 hex characters", "[crypto]") {
    TempDir dir;
    const std::string raw(32, '\x5a');
    test::write_file(dir / "raw.key", raw);
    test::write_file(dir / "hex.key", std::string(64, 'a') + "\n");
    auto a = load_key_file(dir / "raw.key");
    REQUIRE(a);
    CHECK(a->secret.view() == raw);
    auto b = load_key_file(dir / "hex.key");
    REQUIRE(b);
    CHECK(b->secret.view() == std::string(32, '\xaa'));

    test::write_file(dir / "short.key", std::string(31, 'x'));
    test::write_file(dir / "long.key", std::string(33, 'x'));
    test::write_file(dir / "badhex.key", std::string(63, 'a') + "g");
    for (const char* name : {"short.key", "long.key", "badhex.key"}) {
        auto r = load_key_file(dir / name);
        REQUIRE_FALSE(r);
        CHECK(r.error().code == Code::invalid_argument);
    }
}

TEST_CASE("key files readable by others are refused", "[crypto]") {
    TempDir dir;
    test::write_file(dir / "open.key", std::string(32, 'k'), 0644);
    auto r = load_key_file(dir / "open.key");
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Code::permission_denied);
    CHECK(r.error().message.find("0644") != std::string::npos);
    CHECK(load_key_file(dir / "absent.key").error().code == Code::not_found);
}

TEST_CASE("a generated key file is private and loads back", "[crypto]") {
    TempDir dir;
    auto made = generate_key_file(dir / "master.key");
    REQUIRE(made);
    CHECK(test::mode_of(dir / "master.key") == 0600);
    auto loaded = load_key_file(dir / "master.key");
    REQUIRE(loaded);
    CHECK(loaded->secret.view() == made->secret.view());
    CHECK_FALSE(generate_key_file(dir / "master.key"));  // never overwrites a key
    CHECK(load_key_file(dir / "master.key")->secret.view() == made->secret.view());
    CHECK_FALSE(fs::exists(dir / ".master.key.new"));
}

TEST_CASE("a key file is written aside and a staging file left behind is replaced", "[crypto]") {
    // A start cut short while writing leaves its staging file, never a short master.key.
    TempDir dir;
    test::write_file(dir / ".master.key.new", "0123");
    auto made = generate_key_file(dir / "master.key");
    REQUIRE(made);
    CHECK(fs::file_size(dir / "master.key") == 32);
    CHECK(load_key_file(dir / "master.key")->secret.view() == made->secret.view());
    CHECK_FALSE(fs::exists(dir / ".master.key.new"));
}

TEST_CASE("passphrase files give their first line", "[crypto]") {
    TempDir dir;
    test::write_file(dir / "pass", "correct horse\nsecond line\n");
    auto p = load_passphrase_file(dir / "pass");
    REQUIRE(p);
    CHECK(p->kind == MasterKind::passphrase);
    CHECK(p->secret.view() == "correct horse");
    test::write_file(dir / "empty", "\n");
    CHECK(load_passphrase_file(dir / "empty").error().code == Code::invalid_argument);
}

TEST_CASE("the data key envelope opens only with its master secret", "[crypto]") {
    const auto dek = SecureBuffer::random(32);
    MasterSecret key{MasterKind::key, SecureBuffer::random(32), "test key", {}};
    MasterSecret wrong{MasterKind::key, SecureBuffer::random(32), "wrong key", {}};

    auto env = wrap_data_key(dek, 7, key, PwhashParams::interactive());
    REQUIRE(env);
    auto parsed = KeyEnvelope::from_json(env->to_json());
    REQUIRE(parsed);
    CHECK(parsed->key_id == 7);

    auto opened = unwrap_data_key(*parsed, key);
    REQUIRE(opened);
    CHECK(opened->view() == dek.view());

    auto refused = unwrap_data_key(*parsed, wrong);
    REQUIRE_FALSE(refused);
    CHECK(refused.error().code == Code::unauthenticated);
    CHECK(refused.error().message.find("wrong key") != std::string::npos);

    auto pass = passphrase_from("hunter2", "test passphrase");
    REQUIRE(pass);
    CHECK(unwrap_data_key(*parsed, *pass).error().code == Code::unauthenticated);
}

TEST_CASE("passphrase envelopes round-trip through Argon2id", "[crypto]") {
    const auto dek = SecureBuffer::random(32);
    auto pass = passphrase_from("correct horse battery staple", "test");
    REQUIRE(pass);
    auto env = wrap_data_key(dek, 1, *pass, PwhashParams::interactive());
    REQUIRE(env);
    auto parsed = KeyEnvelope::from_json(env->to_json());
    REQUIRE(parsed);
    CHECK(parsed->kind == MasterKind::passphrase);
    CHECK(parsed->salt.size() == crypto_pwhash_SALTBYTES);
    CHECK(parsed->opslimit == crypto_pwhash_OPSLIMIT_INTERACTIVE);

    auto opened = unwrap_data_key(*parsed, *pass);
    REQUIRE(opened);
    CHECK(opened->view() == dek.view());
    auto wrong = passphrase_from("correct horse battery stapler", "test");
    CHECK(unwrap_data_key(*parsed, *wrong).error().code == Code::unauthenticated);

    // Tampered parameters derive another key-encryption key, so the envelope fails to open.
    KeyEnvelope tampered = *parsed;
    tampered.opslimit += 1;
    CHECK_FALSE(unwrap_data_key(tampered, *pass));
}

TEST_CASE("malformed envelopes are reported as corrupt", "[crypto]") {
    const std::string wrapped(base64url_encode(std::string(72, 'w')));
    const std::string good_key =
        R"({"format":1,"kind":"key","key_id":1,"wrapped_data_key":")" + wrapped + R"("})";
    REQUIRE(KeyEnvelope::from_json(good_key));
    const std::string kdf_prefix =
        R"({"format":1,"kind":"passphrase","key_id":1,"wrapped_data_key":")" + wrapped +
        R"(","kdf":{"alg":"argon2id13","salt":"AAAAAAAAAAAAAAAAAAAAAA",)";
    REQUIRE(KeyEnvelope::from_json(kdf_prefix + R"("opslimit":2,"memlimit":67108864}})"));
    for (const std::string& text : std::vector<std::string>{
             "", "{}", "[1]", R"({"format":1,"kind":"key"})",
             R"({"format":2,"kind":"key","key_id":1,"wrapped_data_key":"AA"})",
             R"({"format":"1","kind":"key","key_id":1})", R"({"format":1,"kind":1})",
             R"({"format":1,"kind":"key","key_id":4294967296,"wrapped_data_key":")" + wrapped +
                 R"("})",
             R"({"format":1,"kind":"key","key_id":1,"wrapped_data_key":7})",
             R"({"format":1,"kind":"passphrase","key_id":1,"wrapped_data_key":")" + wrapped +
                 R"(","kdf":5})",
             kdf_prefix + R"("opslimit":"2","memlimit":67108864}})",
             kdf_prefix + R"("opslimit":4294967295,"memlimit":67108864}})",
             kdf_prefix + R"("opslimit":2,"memlimit":4398046511104}})"}) {
        INFO(text);
        auto r = KeyEnvelope::from_json(text);
        REQUIRE_FALSE(r);
        CHECK(r.error().code == Code::corrupt);
    }
}

TEST_CASE("base64url decoding is strict about its alphabet", "[crypto]") {
    CHECK(base64url_decode("AAAA") == std::string(3, '\0'));
    CHECK(base64url_decode("_-_-").has_value());
    for (const std::string& bad : std::vector<std::string>{"AAA=", "AA AA", "AA+A", "AA/A",
                                                           "AA\xff"
                                                           "A"}) {
        INFO(bad);
        CHECK_FALSE(base64url_decode(bad).has_value());
    }
}
