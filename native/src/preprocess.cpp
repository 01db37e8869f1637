#include "preprocess.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

#include <opencv2/imgproc.hpp>

namespace mc {
namespace {

// Python's round() for the non-negative products used here: ties go to the even integer
// (std::nearbyint under the default rounding mode does exactly that).
int py_round(double v) { return static_cast<int>(std::nearbyint(v)); }

// Bounding box of the non-zero pixels of `mask` (the whole grid when there are none), widened by
// round(margin * size) per side.
Box bbox_with_margin(const cv::Mat& mask, double margin) {
  const int h = mask.rows, w = mask.cols;
  const cv::Rect r = cv::boundingRect(mask);
  if (r.empty()) return {0, h, 0, w};
  const int my = py_round(margin * r.height), mx = py_round(margin * r.width);
  return {std::max(0, r.y - my), std::min(h, r.y + r.height + my), std::max(0, r.x - mx),
          std::min(w, r.x + r.width + mx)};
}

cv::Mat clahe_median(const cv::Mat& image8, const PreprocessConfig& c) {
  cv::Mat out;
  cv::createCLAHE(c.clahe_clip_limit, cv::Size(c.clahe_tile_grid, c.clahe_tile_grid))->apply(image8, out);
  if (c.median_ksize > 1) cv::medianBlur(out, out, c.median_ksize);
  return out;
}

// Adaptive CLAHE (runtime/preprocess.py adaptive_clahe): clip from the breast's contrast, the CLAHE
// result blended in through a feathered breast mask, min-max normalised, median filtered.
cv::Mat adaptive_clahe(const cv::Mat& image8, const cv::Mat& breast, const PreprocessConfig& c) {
  // Standard deviation of the breast's grey levels (of the whole image when the mask is empty).
  cv::Scalar mean, sd;
  cv::meanStdDev(image8, mean, sd, cv::countNonZero(breast) ? breast : cv::Mat());
  const double s = sd[0] / 255.0;
  const double clip = 1.0 + 3.0 * std::clamp(1.0 - s / 0.25, 0.0, 1.0);

  cv::Mat enhanced8, enhanced, original, feather;
  cv::createCLAHE(clip, cv::Size(c.clahe_tile_grid, c.clahe_tile_grid))->apply(image8, enhanced8);
  enhanced8.convertTo(enhanced, CV_32F);
  image8.convertTo(original, CV_32F);
  breast.convertTo(feather, CV_32F);
  const double sigma = std::max(1.0, 0.01 * std::min(image8.rows, image8.cols));
  cv::GaussianBlur(feather, feather, cv::Size(0, 0), sigma);
  cv::Mat blended(image8.size(), CV_32F);
  for (int y = 0; y < blended.rows; ++y) {
    const float *f = feather.ptr<float>(y), *e = enhanced.ptr<float>(y), *o = original.ptr<float>(y);
    float* b = blended.ptr<float>(y);
    for (int x = 0; x < blended.cols; ++x) {
      const float a = f[x] * e[x];
      const float rest = (1.0f - f[x]) * o[x];
      b[x] = a + rest;
    }
  }
  cv::normalize(blended, blended, 0, 255, cv::NORM_MINMAX);
  cv::Mat out(image8.size(), CV_8U);  // numpy astype(uint8): truncation, not rounding
  for (int y = 0; y < out.rows; ++y) {
    const float* b = blended.ptr<float>(y);
    uchar* d = out.ptr<uchar>(y);
    for (int x = 0; x < out.cols; ++x) d[x] = static_cast<uchar>(std::clamp(b[x], 0.0f, 255.0f));
  }
  if (c.median_ksize > 1) cv::medianBlur(out, out, c.median_ksize);
  return out;
}

}  // namespace

Box Geometry::box_to_original(const Box& b) const {
  Box o{b.y0 + bbox.y0, b.y1 + bbox.y0, b.x0 + bbox.x0, b.x1 + bbox.x0};
  if (flipped) {
    const int x0 = work_w - o.x1, x1 = work_w - o.x0;
    o.x0 = x0, o.x1 = x1;
  }
  if (!reduced()) return o;
  auto sy = [&](int y) { return static_cast<int>(static_cast<double>(y) * height / work_h + 0.5); };
  auto sx = [&](int x) { return static_cast<int>(static_cast<double>(x) * width / work_w + 0.5); };
  return {sy(o.y0), sy(o.y1), sx(o.x0), sx(o.x1)};
}

cv::Mat Geometry::forward(const cv::Mat& image) const {
  cv::Mat src = image;
  if (flipped) cv::flip(image, src, 1);
  return src(bbox.rect()).clone();
}

cv::Mat Geometry::to_original_crop(const cv::Mat& crop, int interpolation) const {
  const Box ob = original_bbox();
  cv::Mat out = crop;
  if (crop.size() != ob.rect().size()) cv::resize(crop, out, ob.rect().size(), 0, 0, interpolation);
  if (flipped) cv::flip(out, out, 1);
  return out;
}

cv::Mat Geometry::inverse(const cv::Mat& crop, const cv::Scalar& fill, int interpolation) const {
  cv::Mat out(height, width, crop.type(), fill);
  to_original_crop(crop, interpolation).copyTo(out(original_bbox().rect()));
  return out;
}

cv::Mat to_uint8(const cv::Mat& image) {
  if (image.empty()) throw std::invalid_argument("empty image");
  if (image.channels() != 1) throw std::invalid_argument("expected a grey image");
  if (image.depth() == CV_8U) return image;
  cv::Mat src = image;
  if (src.depth() != CV_16U && src.depth() != CV_16S && src.depth() != CV_32F && src.depth() != CV_64F)
    image.convertTo(src, CV_32F);
  double lo, hi;
  cv::minMaxLoc(src, &lo, &hi);
  if (!(hi > lo)) return cv::Mat::zeros(image.size(), CV_8U);  // also catches NaN
  // |v * scale - lo * scale| saturated to 0..255: round((v - lo) * 255 / (hi - lo)).
  const double scale = 255.0 / (hi - lo);
  cv::Mat out;
  cv::convertScaleAbs(src, out, scale, -lo * scale);
  return out;
}

namespace {

// The breast-mask algorithm at the image's own resolution: CV_8U 0/1, or empty when nothing is found.
cv::Mat breast_mask_at(const cv::Mat& image, bool smooth) {
  const int h = image.rows, w = image.cols;
  cv::Mat blur, binary;
  if (smooth) cv::GaussianBlur(image, blur, cv::Size(5, 5), 0);
  else blur = image;
  double thr = cv::threshold(blur, binary, 0, 255, cv::THRESH_BINARY | cv::THRESH_OTSU);
  // Otsu on fatty breasts can cut into the dim skin line; halve it but stay above noise.
  thr = std::max(std::min(thr * 0.5, 40.0), 5.0);
  cv::threshold(blur, binary, thr, 1, cv::THRESH_BINARY);  // blur > thr -> 1
  const int k = std::max(3, (std::min(h, w) / 100) | 1);
  cv::morphologyEx(binary, binary, cv::MORPH_OPEN, cv::getStructuringElement(cv::MORPH_ELLIPSE, cv::Size(k, k)));
  cv::Mat labels, stats, centroids;
  const int n = cv::connectedComponentsWithStats(binary, labels, stats, centroids, 8);
  if (n <= 1) return cv::Mat();
  int largest = 1;  // the first of the largest, as numpy's argmax
  for (int i = 2; i < n; ++i)
    if (stats.at<int>(i, cv::CC_STAT_AREA) > stats.at<int>(largest, cv::CC_STAT_AREA)) largest = i;
  cv::Mat mask = labels == largest;
  // Fill holes: draw the filled outer contour(s) of the component.
  std::vector<std::vector<cv::Point>> contours;
  cv::findContours(mask, contours, cv::RETR_EXTERNAL, cv::CHAIN_APPROX_SIMPLE);
  cv::Mat filled = cv::Mat::zeros(h, w, CV_8U);
  cv::drawContours(filled, contours, -1, cv::Scalar(1), cv::FILLED);
  return filled;
}

}  // namespace

cv::Mat breast_mask(const cv::Mat& image8, bool blur) {
  // Always at full resolution, as runtime/preprocess.py: a mask of a downscaled copy moves the
  // breast box enough to change the int8 models' answers (see breast_mask's docstring there).
  cv::Mat m = breast_mask_at(image8, blur);
  return m.empty() ? cv::Mat::ones(image8.rows, image8.cols, CV_8U) : m;
}

std::string chest_wall_side(const cv::Mat& mask) {
  const int w = mask.cols;
  const int left = cv::countNonZero(mask.colRange(0, w / 2));
  const int right = cv::countNonZero(mask.colRange(w - w / 2, w));
  return left >= right ? "left" : "right";
}

cv::Mat shrink(cv::Mat image, cv::Size size) {
  const int H0 = image.rows, W0 = image.cols;
  int H = H0, W = W0, k = 1;
  while (H / 2 >= size.height && W / 2 >= size.width) {
    H /= 2;
    W /= 2;
    k *= 2;
    cv::Mat half;
    cv::resize(image(cv::Rect(0, 0, 2 * W, 2 * H)), half, cv::Size(W, H), 0, 0, cv::INTER_AREA);
    image = half;
  }
  const double sx = static_cast<double>(W0) / (size.width * k), sy = static_cast<double>(H0) / (size.height * k);
  const cv::Matx23d m(sx, 0.0, 0.5 * sx - 0.5, 0.0, sy, 0.5 * sy - 0.5);
  cv::Mat out;
  cv::warpAffine(image, out, m, size, cv::INTER_LINEAR | cv::WARP_INVERSE_MAP, cv::BORDER_REPLICATE);
  return out;
}

cv::Mat work_image(const cv::Mat& image8, int max_side) {
  const int H = image8.rows, W = image8.cols;
  if (max_side <= 0 || std::max(H, W) <= max_side) return image8;
  const double s = static_cast<double>(max_side) / std::max(H, W);
  const int w = std::max(1, static_cast<int>(W * s + 0.5)), h = std::max(1, static_cast<int>(H * s + 0.5));
  return shrink(image8, cv::Size(w, h));
}

Prepared prepare(const cv::Mat& image, const PreprocessConfig& config, const std::string& chest_wall,
                 const std::string& orientation_source) {
  const cv::Mat image8 = to_uint8(image);
  const cv::Mat work = work_image(image8, config.work_max_side);
  const bool reduced = work.size() != image8.size();
  cv::Mat mask = breast_mask(work, !reduced);
  Prepared p;
  Geometry& g = p.geometry;
  g.height = image8.rows;
  g.width = image8.cols;
  g.work_h = work.rows;
  g.work_w = work.cols;
  const std::string side = chest_wall.empty() ? chest_wall_side(mask) : chest_wall;
  if (side != "left" && side != "right") throw std::invalid_argument("chest wall must be left or right, got " + side);
  g.flipped = side != "left";  // models are trained with the chest wall on the left
  g.orientation_source = chest_wall.empty() ? "image" : orientation_source;
  if (g.flipped) cv::flip(mask, mask, 1);
  g.bbox = bbox_with_margin(mask, config.breast_margin);
  const cv::Mat crop = g.forward(work);
  p.breast = mask(g.bbox.rect()).clone();
  p.image = config.adaptive_clahe ? adaptive_clahe(crop, p.breast, config) : clahe_median(crop, config);
  return p;
}

cv::Mat to_model_input(const cv::Mat& image8, int h, int w) {
  cv::Mat resized;
  cv::resize(image8, resized, cv::Size(w, h), 0, 0, cv::INTER_AREA);
  const int shape[4] = {1, 1, h, w};
  cv::Mat blob(4, shape, CV_32F);
  float* d = blob.ptr<float>();
  const float scale = static_cast<float>(1.0 / 255.0);  // numpy: float32 array * (1.0 / 255.0)
  for (int y = 0; y < h; ++y) {
    const uchar* s = resized.ptr<uchar>(y);
    for (int x = 0; x < w; ++x) *d++ = static_cast<float>(s[x]) * scale;
  }
  return blob;
}

}  // namespace mc
