// The cascade (runtime/cascade.py + runtime/stages.py + runtime/crop.py):
// preprocess -> stage 1 (tissue) -> FGT crop -> stage 2 (lesion) -> paste-back to the original grid.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "bundle.h"
#include "model.h"
#include "preprocess.h"

namespace mc {

// Tissue class indices (ddsm-tissue README: label values 64, 128, 192, 255 in that order).
constexpr int kFgt = 2;
constexpr unsigned char kLabelValues[4] = {64, 128, 192, 255};

struct Lesion {
  int area_px = 0;
  cv::Rect bbox;
  float max_prob = 0;
};

// Outputs on the ORIGINAL pixel grid and orientation of the input.
struct CascadeResult {
  cv::Mat tissue;       // CV_8U class indices 0..3 (background, adipose, FGT, pectoral)
  cv::Mat lesion_prob;  // CV_32F in [0, 1]
  cv::Mat lesion_mask;  // CV_8U 0/1, prob >= threshold
  cv::Mat breast;       // CV_8U 0/1
  Box fgt_box;          // the stage-2 crop in original pixels (after un-flipping)
  Geometry geometry;
  double threshold = 0.5;
  std::map<std::string, double> timings_ms;  // preprocess, tissue, lesion, pasteback

  double fgt_fraction() const;                         // FGT pixels / breast pixels
  std::vector<Lesion> lesions(int min_area_px = 16) const;  // 8-connected lesion components
};

class Cascade {
 public:
  Cascade(const Bundle& bundle, Target target, const PreprocessConfig& config, double threshold);

  // One grey image (CV_8U, CV_16U or CV_32F) -> result. Throws std::invalid_argument for an empty image.
  CascadeResult run(const cv::Mat& pixels);

 private:
  Bundle bundle_;
  PreprocessConfig config_;
  double threshold_;
  std::unique_ptr<Model> tissue_, lesion_;
};

// Padded bounding box of the FGT class of a tissue map (the whole grid when FGT is under min_fgt_frac).
Box fgt_box(const cv::Mat& tissue, double pad_frac, double min_fgt_frac = 0.002);

}  // namespace mc
