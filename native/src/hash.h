// Hashes (OpenSSL libcrypto): sha256 for the bundle's integrity check and the outputs recorded in
// summary.json, sha1 for the suffix that tells colliding output names apart (as runtime/batch.py).
#pragma once

#include <string>

namespace mc {

// Lower-case hex SHA-256 of the file at `path`. Throws std::runtime_error when it cannot be read.
std::string sha256_file(const std::string& path);

// Lower-case hex SHA-256 / SHA-1 of a byte string.
std::string sha256_hex(const std::string& data);
std::string sha1_hex(const std::string& data);

}  // namespace mc
