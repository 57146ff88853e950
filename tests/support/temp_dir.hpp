// TempDir: a private (0700) directory for one test, removed with everything in it on
// destruction. Not thread-safe.
#pragma once

#include <filesystem>
#include <map>
#include <string>

namespace agentgw::test {

class TempDir {
  public:
    TempDir();
    ~TempDir();
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;

    const std::filesystem::path& path() const { return path_; }
    std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

  private:
    std::filesystem::path path_;
};

// Writes `bytes` to `path` with `mode`.
void write_file(const std::filesystem::path& path, const std::string& bytes, unsigned mode = 0600);

// Creates `path` (and its parents) and returns it.
std::filesystem::path make_dir(const std::filesystem::path& path);

// Reads a whole file.
std::string read_file(const std::filesystem::path& path);

// BLAKE2b of every regular file under `dir`, by relative path: equal maps mean byte-identical
// trees.
std::map<std::string, std::string> hash_tree(const std::filesystem::path& dir);

// The mode bits (07777) of `path`.
unsigned mode_of(const std::filesystem::path& path);

}  // namespace agentgw::test
