// Cascade bundles: manifest.json + tissue.onnx + lesion.onnx (see runtime/bundle.py).
#pragma once

#include <stdexcept>
#include <string>

namespace mc {

// A bundle that is missing, malformed or fails its integrity check. what() names the file.
struct BundleError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Enhancement parameters, the manifest's "preprocessing" (runtime/preprocess.py PreprocessConfig).
struct PreprocessConfig {
  double clahe_clip_limit = 2.0;
  int clahe_tile_grid = 8;
  int median_ksize = 3;
  bool adaptive_clahe = false;
  double breast_margin = 0.02;  // fraction of the breast bounding box kept around the crop
  int work_max_side = 1024;     // longest side of the work grid (0: the original grid)
};

// How lesion marks are cut from the probability map (runtime/lesions.py OperatingPoint): components of
// prob >= pixel_threshold, smaller than min_area_frac of the image dropped, score = max prob inside,
// below score_threshold dropped, ranked by score, at most max_marks kept (0: no limit).
struct OperatingPoint {
  double score_threshold = 0.5, pixel_threshold = 0.5, min_area_frac = 0.0;
  int max_marks = 0;
  // --threshold t: score threshold t, pixel threshold min(pixel, t). Throws std::invalid_argument outside [0, 1].
  OperatingPoint with_threshold(double t) const;
};

struct StageInfo {
  std::string name;   // "tissue" or "lesion"
  std::string path;   // model file
  int input_h = 0, input_w = 0;
  std::string sha256;
  std::string precision;  // "fp32", "int8", ... as recorded (informational)
};

struct Bundle {
  std::string root;
  StageInfo tissue, lesion;
  PreprocessConfig preprocess;
  double crop_pad = 0.1;         // crop.pad_frac
  double crop_min_breast_frac = 0.0;  // crop.min_breast_frac (absent: 0, no floor)
  bool crop_cc_pectoral_as_fgt = false;  // crop.cc_pectoral_as_fgt: on CC views the box covers pectoral too
  double lesion_threshold = 0.5;  // thresholds.lesion
  OperatingPoint op;              // lesion_postprocess (else thresholds.lesion)
};

// Reads root/manifest.json and, when `verify`, checks each model's sha256.
// Throws BundleError with the same messages as the Python runtime's load_bundle.
Bundle load_bundle(const std::string& root, bool verify = true);

}  // namespace mc
