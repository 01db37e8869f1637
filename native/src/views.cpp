#include "views.h"

#include <cctype>
#include <set>

namespace mc {

namespace {

const std::set<std::string> kNameViews = {"CC", "MLO", "ML", "LM", "LMO", "XCCL", "XCCM"};
const std::set<std::string> kCcViews = {"CC", "XCCL", "XCCM", "FB", "CV"};

std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

std::string view_from_name(const std::string& path) {
  // the last path component; an extension is one more token (no view term is an image extension)
  const std::string stem = path.substr(path.find_last_of('/') == std::string::npos ? 0 : path.find_last_of('/') + 1);
  std::set<std::string> found;
  std::string tok;
  auto take = [&]() {
    if (kNameViews.count(tok)) found.insert(tok);
    else if (tok.size() > 2 && (tok[0] == 'L' || tok[0] == 'R') && kNameViews.count(tok.substr(1)))
      found.insert(tok.substr(1));
    tok.clear();
  };
  for (char c : upper(stem)) {
    if (std::isalnum(static_cast<unsigned char>(c))) tok += c;
    else take();
  }
  take();
  return found.size() == 1 ? *found.begin() : "";
}

bool is_cc_view(const std::string& view) {
  std::string v = view;
  const auto b = v.find_first_not_of(" \t"), e = v.find_last_not_of(" \t");
  v = b == std::string::npos ? "" : v.substr(b, e - b + 1);
  return kCcViews.count(upper(v)) > 0;
}

}  // namespace mc
