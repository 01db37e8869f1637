// Mammogram preprocessing, a line-by-line port of runtime/preprocess.py:
// to_uint8 -> breast mask -> orientation (chest wall left) + breast crop -> CLAHE (+ median) -> model input.
#pragma once

#include <string>

#include <opencv2/core.hpp>

#include "bundle.h"

namespace mc {

// Half-open box (y0, y1, x0, x1) in pixels.
struct Box {
  int y0 = 0, y1 = 0, x0 = 0, x1 = 0;
  cv::Rect rect() const { return cv::Rect(x0, y0, x1 - x0, y1 - y0); }
};

// Mapping between the original image grid and its canonical breast crop. `bbox` is in the
// *flipped* original grid; `flipped` says the image was mirrored to put the chest wall left.
struct Geometry {
  int height = 0, width = 0;
  bool flipped = false;
  Box bbox;
  std::string orientation_source = "image";

  cv::Mat forward(const cv::Mat& image) const;                      // original -> canonical crop
  cv::Mat inverse(const cv::Mat& crop, const cv::Scalar& fill) const;  // canonical crop -> original grid
};

// A canonicalised, enhanced mammogram: `image` CV_8U enhanced crop, `breast` CV_8U 0/1 mask on it.
struct Prepared {
  cv::Mat image;
  cv::Mat breast;
  Geometry geometry;
};

// Any grey image (CV_8U passes through; others are min-max scaled, round((v - lo) * 255 / (hi - lo))) -> CV_8U.
cv::Mat to_uint8(const cv::Mat& image);

// Breast region of a CV_8U mammogram -> CV_8U 0/1 mask (all ones when nothing is found): Otsu on a
// Gaussian-smoothed image, opening, largest 8-connected component, holes filled.
cv::Mat breast_mask(const cv::Mat& image8);

// "left" or "right": the half of the mask holding more breast pixels holds the chest wall.
std::string chest_wall_side(const cv::Mat& mask);

// Full preprocessing of one grey image (any supported depth). Throws std::invalid_argument for an empty image.
Prepared prepare(const cv::Mat& image, const PreprocessConfig& config);

// CV_8U (H, W) -> CV_32F 4-D blob (1, 1, h, w) in [0, 1], resized with area averaging.
cv::Mat to_model_input(const cv::Mat& image8, int h, int w);

}  // namespace mc
