#include "hash.h"

#include <cstdio>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <vector>

#include <openssl/evp.h>

namespace mc {
namespace {

using Ctx = std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)>;

Ctx start(const EVP_MD* md) {
  Ctx ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), md, nullptr) != 1) throw std::runtime_error("OpenSSL digest init failed");
  return ctx;
}

std::string finish(EVP_MD_CTX* ctx) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (EVP_DigestFinal_ex(ctx, digest, &n) != 1) throw std::runtime_error("OpenSSL digest failed");
  std::string hex(2 * n, '0');
  for (unsigned int i = 0; i < n; ++i) std::snprintf(&hex[2 * i], 3, "%02x", digest[i]);
  return hex;
}

std::string digest(const EVP_MD* md, const std::string& data) {
  Ctx ctx = start(md);
  EVP_DigestUpdate(ctx.get(), data.data(), data.size());
  return finish(ctx.get());
}

}  // namespace

std::string sha256_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(path + ": cannot open for reading");
  Ctx ctx = start(EVP_sha256());
  std::vector<char> buf(1 << 20);
  while (f) {
    f.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    EVP_DigestUpdate(ctx.get(), buf.data(), static_cast<size_t>(f.gcount()));
  }
  if (f.bad()) throw std::runtime_error(path + ": read error");
  return finish(ctx.get());
}

std::string sha256_hex(const std::string& data) { return digest(EVP_sha256(), data); }
std::string sha1_hex(const std::string& data) { return digest(EVP_sha1(), data); }

}  // namespace mc
