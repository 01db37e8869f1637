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
constexpr int kPectoral = 3;
constexpr unsigned char kLabelValues[4] = {64, 128, 192, 255};

// One kept lesion mark (runtime/lesions.py Mark), on the original grid.
struct Lesion {
  int rank = 0;  // 1 = highest score
  int area_px = 0;
  cv::Rect bbox;
  float max_prob = 0;  // the score
};

// Marks of a probability map CV_32F (h, w): see OperatingPoint (bundle.h). `image_area_px` is the whole
// image's pixel count (min_area_frac is relative to it). Returns the ranked marks (bbox on the map's grid)
// and, in `labels` (CV_32S (h, w)), each kept mark's rank inside it, 0 elsewhere.
std::vector<Lesion> find_marks(const cv::Mat& prob, const OperatingPoint& op, double image_area_px, cv::Mat& labels);

// Outputs on the ORIGINAL pixel grid and orientation of the input.
struct CascadeResult {
  cv::Mat tissue;       // CV_8U class indices 0..3 (background, adipose, FGT, pectoral)
  cv::Mat lesion_prob;  // CV_32F in [0, 1], 0 outside fgt_box
  cv::Mat lesion_mask;  // CV_8U 0/1: the union of the kept marks
  cv::Mat breast;       // CV_8U 0/1
  Box fgt_box;          // the stage-2 crop in original pixels (after un-flipping)
  Geometry geometry;
  OperatingPoint op;    // with the run's threshold
  double threshold = 0.5;  // op.score_threshold
  std::vector<Lesion> marks;  // ranked, bbox on the original grid
  double max_prob = 0;
  std::map<std::string, double> timings_ms;  // preprocess, tissue, lesion, pasteback

  double fgt_fraction() const;  // FGT pixels / breast pixels
  const std::vector<Lesion>& lesions() const { return marks; }
};

class Cascade {
 public:
  Cascade(const Bundle& bundle, Target target, const PreprocessConfig& config, const OperatingPoint& op);

  // One grey image (CV_8U, CV_16U or CV_32F) -> result; `chest_wall` / `orientation_source` as prepare();
  // `view` (e.g. "CC", "" unknown) for the bundle's CC-view crop rule. Throws std::invalid_argument for an
  // empty image.
  CascadeResult run(const cv::Mat& pixels, const std::string& chest_wall = "",
                    const std::string& orientation_source = "image", const std::string& view = "");

 private:
  Bundle bundle_;
  PreprocessConfig config_;
  OperatingPoint op_;
  std::unique_ptr<Model> tissue_, lesion_;
};

// Padded bounding box of the FGT class (with `with_pectoral`, FGT and pectoral) of a tissue map (the whole
// grid when those classes cover under min_fgt_frac); runtime/crop.py fgt_box.
Box fgt_box(const cv::Mat& tissue, double pad_frac, double min_fgt_frac = 0.002, double min_breast_frac = 0.0,
            bool with_pectoral = false);

}  // namespace mc
