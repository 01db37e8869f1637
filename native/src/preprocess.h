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

// Mapping between the original image grid, its work grid (a reduced copy, runtime/preprocess.py
// work_image) and the canonical breast crop. `bbox` is in the *flipped work* grid; `flipped` says the
// image was mirrored to put the chest wall left. Work -> original: Y = int(y * H / h + 0.5), X likewise.
struct Geometry {
  int height = 0, width = 0;     // original grid
  int work_h = 0, work_w = 0;    // work grid (the original grid when not reduced)
  bool flipped = false;
  Box bbox;
  std::string orientation_source = "image";

  bool reduced() const { return work_h != height || work_w != width; }
  // A box of the canonical crop -> the same pixels' box on the original, un-flipped grid.
  Box box_to_original(const Box& b) const;
  Box original_bbox() const { return box_to_original({0, bbox.y1 - bbox.y0, 0, bbox.x1 - bbox.x0}); }
  cv::Mat forward(const cv::Mat& work_image) const;  // work grid -> canonical crop
  // Canonical crop (work grid) -> original grid: resized to the crop's original size with `interpolation`
  // when reduced, un-flipped, placed at original_bbox(); `fill` outside.
  cv::Mat inverse(const cv::Mat& crop, const cv::Scalar& fill, int interpolation = 0 /* INTER_NEAREST */) const;
  // The same without the placing: the crop in original pixels and orientation.
  cv::Mat to_original_crop(const cv::Mat& crop, int interpolation = 0) const;
};

// A canonicalised, enhanced mammogram: `image` CV_8U enhanced crop (work grid), `breast` CV_8U 0/1 mask on it.
struct Prepared {
  cv::Mat image;
  cv::Mat breast;
  Geometry geometry;
};

// Any grey image (CV_8U passes through; others are min-max scaled, round((v - lo) * 255 / (hi - lo))) -> CV_8U.
cv::Mat to_uint8(const cv::Mat& image);

// Breast region of a CV_8U mammogram -> CV_8U 0/1 mask (all ones when nothing is found): Otsu on a
// Gaussian-smoothed image, opening, largest 8-connected component, holes filled.
// `blur` false on a reduced work grid (area averaging already suppressed the noise; runtime/breast.py).
cv::Mat breast_mask(const cv::Mat& image8, bool blur = true);

// Downscale to `size`: 2 x 2 block averages (INTER_AREA at factor 2) while the result stays at least
// `size`, then bilinear sampling at the whole image's resize positions (runtime.preprocess.shrink).
cv::Mat shrink(cv::Mat image, cv::Size size);

// The work grid's copy of a CV_8U image: s = max_side / max(H, W), w = max(1, int(W * s + 0.5)),
// h likewise, by shrink(); `image8` itself when max(H, W) <= max_side or max_side <= 0.
cv::Mat work_image(const cv::Mat& image8, int max_side);

// "left" or "right": the half of the mask holding more breast pixels holds the chest wall.
std::string chest_wall_side(const cv::Mat& mask);

// Full preprocessing of one grey image (any supported depth). `chest_wall` "left"/"right" (e.g. from DICOM
// tags, recorded as `orientation_source`) overrides the image-based side; "" estimates it.
// Throws std::invalid_argument for an empty image.
Prepared prepare(const cv::Mat& image, const PreprocessConfig& config, const std::string& chest_wall = "",
                 const std::string& orientation_source = "image");

// CV_8U (H, W) -> CV_32F 4-D blob (1, 1, h, w) in [0, 1], resized with area averaging.
cv::Mat to_model_input(const cv::Mat& image8, int h, int w);

}  // namespace mc
