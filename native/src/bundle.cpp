#include "bundle.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <algorithm>

#include <nlohmann/json.hpp>

#include "hash.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace mc {
namespace {

constexpr int kFormatVersion = 1;

// A JSON value the way Python's repr() would show it in an error message.
std::string py_repr(const json& v) {
  if (v.is_null()) return "None";
  if (v.is_boolean()) return v.get<bool>() ? "True" : "False";
  if (v.is_string()) return "'" + v.get<std::string>() + "'";
  return v.dump();
}

StageInfo read_stage(const json& manifest, const std::string& name, const fs::path& root, const std::string& mpath) {
  auto incomplete = [&](const std::string& why) {
    return BundleError(mpath + ": models." + name + " is incomplete (" + why + ")");
  };
  if (!manifest.contains("models") || !manifest["models"].is_object()) throw incomplete("missing 'models'");
  const json& models = manifest["models"];
  if (!models.contains(name)) throw incomplete("missing '" + name + "'");
  const json& e = models[name];
  if (!e.is_object()) throw incomplete("not an object");
  for (const char* key : {"file", "input_hw", "sha256"})
    if (!e.contains(key)) throw incomplete(std::string("missing '") + key + "'");
  const json& hw = e["input_hw"];
  if (!e["file"].is_string() || !e["sha256"].is_string() || !hw.is_array() || hw.size() != 2 ||
      !hw[0].is_number_integer() || !hw[1].is_number_integer() || hw[0].get<int>() <= 0 || hw[1].get<int>() <= 0)
    throw incomplete("'file' and 'sha256' must be strings and 'input_hw' two positive integers");
  StageInfo s;
  s.name = name;
  s.path = (root / e["file"].get<std::string>()).string();
  s.input_h = hw[0].get<int>();
  s.input_w = hw[1].get<int>();
  s.sha256 = e["sha256"].get<std::string>();
  s.precision = e.value("precision", std::string("fp32"));
  return s;
}

template <typename T>
T field(const json& obj, const char* key, T fallback, const std::string& where) {
  if (!obj.contains(key)) return fallback;
  try {
    return obj[key].get<T>();
  } catch (const json::exception&) {
    throw BundleError(where + "." + key + " has the wrong type (" + obj[key].dump() + ")");
  }
}

const json& section(const json& manifest, const char* key, const std::string& mpath) {
  if (!manifest.contains(key) || !manifest[key].is_object())
    throw BundleError(mpath + ": '" + key + "' section is missing or not an object");
  return manifest[key];
}

}  // namespace

OperatingPoint OperatingPoint::with_threshold(double t) const {
  if (!(t >= 0.0 && t <= 1.0))
    throw std::invalid_argument("--threshold must be a probability in [0, 1], got " + std::to_string(t));
  OperatingPoint o = *this;
  o.score_threshold = t;
  o.pixel_threshold = std::min(pixel_threshold, t);
  return o;
}

Bundle load_bundle(const std::string& root_dir, bool verify) {
  const fs::path root(root_dir);
  const std::string mpath = (root / "manifest.json").string();
  std::error_code ec;
  if (!fs::is_regular_file(root / "manifest.json", ec))
    throw BundleError(mpath + ": no bundle manifest (is " + root_dir + " a cascade bundle?)");
  json manifest;
  {
    std::ifstream f(mpath, std::ios::binary);
    std::stringstream text;
    text << f.rdbuf();
    try {
      manifest = json::parse(text.str());
    } catch (const json::exception& e) {
      throw BundleError(mpath + ": not valid JSON (" + e.what() + ")");
    }
  }
  if (!manifest.is_object()) throw BundleError(mpath + ": not valid JSON (expected an object)");
  const json version = manifest.contains("format_version") ? manifest["format_version"] : json();
  if (!version.is_number() || version.get<double>() != kFormatVersion)
    throw BundleError(mpath + ": format_version " + py_repr(version) + ", this runtime reads " +
                      std::to_string(kFormatVersion));

  Bundle b;
  b.root = root_dir;
  b.tissue = read_stage(manifest, "tissue", root, mpath);
  b.lesion = read_stage(manifest, "lesion", root, mpath);
  for (const StageInfo* s : {&b.tissue, &b.lesion}) {
    if (!fs::is_regular_file(s->path, ec))
      throw BundleError(s->path + ": model file listed in the manifest is missing");
    if (verify) {
      const std::string actual = sha256_file(s->path);
      if (actual != s->sha256)
        throw BundleError(s->path + ": sha256 " + actual + " does not match the manifest's " + s->sha256 +
                          "; the file was altered or corrupted; re-export the bundle");
    }
  }

  const json& pre = section(manifest, "preprocessing", mpath);
  const std::string w = mpath + ": preprocessing";
  PreprocessConfig& c = b.preprocess;
  c.clahe_clip_limit = field<double>(pre, "clahe_clip_limit", c.clahe_clip_limit, w);
  c.clahe_tile_grid = field<int>(pre, "clahe_tile_grid", c.clahe_tile_grid, w);
  c.median_ksize = field<int>(pre, "median_ksize", c.median_ksize, w);
  c.adaptive_clahe = field<bool>(pre, "adaptive_clahe", c.adaptive_clahe, w);
  c.breast_margin = field<double>(pre, "breast_margin", c.breast_margin, w);
  c.work_max_side = field<int>(pre, "work_max_side", c.work_max_side, w);
  if (c.clahe_tile_grid < 1 || (c.median_ksize > 1 && c.median_ksize % 2 == 0))
    throw BundleError(w + ": clahe_tile_grid must be >= 1 and median_ksize odd");

  const json& crop = section(manifest, "crop", mpath);
  if (!crop.contains("pad_frac")) throw BundleError(mpath + ": crop.pad_frac is missing");
  b.crop_pad = field<double>(crop, "pad_frac", 0.0, mpath + ": crop");
  b.crop_min_breast_frac = field<double>(crop, "min_breast_frac", 0.0, mpath + ": crop");
  if (b.crop_min_breast_frac < 0.0 || b.crop_min_breast_frac > 1.0)
    throw BundleError(mpath + ": crop.min_breast_frac must be in [0, 1]");
  b.crop_cc_pectoral_as_fgt = field<bool>(crop, "cc_pectoral_as_fgt", false, mpath + ": crop");
  const json& thr = section(manifest, "thresholds", mpath);
  if (!thr.contains("lesion")) throw BundleError(mpath + ": thresholds.lesion is missing");
  b.lesion_threshold = field<double>(thr, "lesion", 0.0, mpath + ": thresholds");
  OperatingPoint& op = b.op;
  op.score_threshold = op.pixel_threshold = b.lesion_threshold;
  if (manifest.contains("lesion_postprocess") && manifest["lesion_postprocess"].is_object() &&
      !manifest["lesion_postprocess"].empty()) {
    const json& pp = manifest["lesion_postprocess"];
    const std::string where = mpath + ": lesion_postprocess";
    op.score_threshold = field<double>(pp, "score_threshold", b.lesion_threshold, where);
    op.pixel_threshold = field<double>(pp, "pixel_threshold", b.lesion_threshold, where);
    op.min_area_frac = field<double>(pp, "min_area_frac", 0.0, where);
    op.max_marks = field<int>(pp, "max_marks", 0, where);
  }
  if (!(op.score_threshold >= 0 && op.score_threshold <= 1 && op.pixel_threshold >= 0 && op.pixel_threshold <= 1 &&
        op.min_area_frac >= 0 && op.min_area_frac < 1 && op.max_marks >= 0))
    throw BundleError(mpath + ": lesion_postprocess out of range (thresholds in [0, 1], min_area_frac in [0, 1), "
                              "max_marks >= 0)");
  return b;
}

}  // namespace mc
