#include "cascade.h"

#include <chrono>
#include <cmath>

#include <opencv2/imgproc.hpp>

namespace mc {
namespace {

using Clock = std::chrono::steady_clock;
double ms(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double, std::milli>(b - a).count(); }

// Logits (1, C, h, w) -> class map CV_8U (H, W): bilinear resize of the channels, then argmax
// (the first channel wins ties, as numpy's argmax).
cv::Mat tissue_from_logits(const cv::Mat& logits, cv::Size size) {
  const int c = logits.size[1], h = logits.size[2], w = logits.size[3];
  std::vector<cv::Mat> planes;
  for (int i = 0; i < c; ++i) planes.emplace_back(h, w, CV_32F, const_cast<float*>(logits.ptr<float>(0, i)));
  cv::Mat hwc, up;
  cv::merge(planes, hwc);
  cv::resize(hwc, up, size, 0, 0, cv::INTER_LINEAR);
  cv::Mat out(size, CV_8U);
  for (int y = 0; y < size.height; ++y) {
    const float* p = up.ptr<float>(y);
    uchar* d = out.ptr<uchar>(y);
    for (int x = 0; x < size.width; ++x, p += c) {
      int best = 0;
      for (int k = 1; k < c; ++k)
        if (p[k] > p[best]) best = k;
      d[x] = static_cast<uchar>(best);
    }
  }
  return out;
}

// Overflow-free logistic, as runtime/stages.py: 0.5 * (1 + tanh(0.5 x)) in float32.
cv::Mat sigmoid(const cv::Mat& logits) {
  const int h = logits.size[2], w = logits.size[3];
  cv::Mat out(h, w, CV_32F);
  const float* s = logits.ptr<float>();
  float* d = out.ptr<float>();
  for (int i = 0; i < h * w; ++i) d[i] = 0.5f * (1.0f + std::tanh(0.5f * s[i]));
  return out;
}

Box box_to_original(const Box& b, const Geometry& g) {
  Box o{b.y0 + g.bbox.y0, b.y1 + g.bbox.y0, b.x0 + g.bbox.x0, b.x1 + g.bbox.x0};
  if (g.flipped) {
    const int x0 = g.width - o.x1, x1 = g.width - o.x0;
    o.x0 = x0, o.x1 = x1;
  }
  return o;
}

}  // namespace

Box fgt_box(const cv::Mat& tissue, double pad_frac, double min_fgt_frac) {
  const int h = tissue.rows, w = tissue.cols;
  const cv::Mat fgt = tissue == kFgt;
  if (cv::countNonZero(fgt) < min_fgt_frac * h * w) return {0, h, 0, w};
  const cv::Rect r = cv::boundingRect(fgt);
  const int y0 = r.y, y1 = r.y + r.height, x0 = r.x, x1 = r.x + r.width;
  // Python's round(): ties to even.
  const int py = static_cast<int>(std::nearbyint(pad_frac * (y1 - y0)));
  const int px = static_cast<int>(std::nearbyint(pad_frac * (x1 - x0)));
  return {std::max(0, y0 - py), std::min(h, y1 + py), std::max(0, x0 - px), std::min(w, x1 + px)};
}

double CascadeResult::fgt_fraction() const {
  int breast_px = cv::countNonZero(tissue != 0);
  if (!breast_px) breast_px = cv::countNonZero(breast);
  return breast_px ? static_cast<double>(cv::countNonZero(tissue == kFgt)) / breast_px : 0.0;
}

std::vector<Lesion> CascadeResult::lesions(int min_area_px) const {
  cv::Mat labels, stats, centroids;
  const int n = cv::connectedComponentsWithStats(lesion_mask, labels, stats, centroids, 8);
  std::vector<Lesion> out;
  for (int i = 1; i < n; ++i) {
    const int area = stats.at<int>(i, cv::CC_STAT_AREA);
    if (area < min_area_px) continue;
    Lesion l;
    l.area_px = area;
    l.bbox = cv::Rect(stats.at<int>(i, cv::CC_STAT_LEFT), stats.at<int>(i, cv::CC_STAT_TOP),
                      stats.at<int>(i, cv::CC_STAT_WIDTH), stats.at<int>(i, cv::CC_STAT_HEIGHT));
    double mx;
    cv::minMaxLoc(lesion_prob, nullptr, &mx, nullptr, nullptr, labels == i);
    l.max_prob = static_cast<float>(mx);
    out.push_back(l);
  }
  return out;
}

Cascade::Cascade(const Bundle& bundle, Target target, const PreprocessConfig& config, double threshold)
    : bundle_(bundle), config_(config), threshold_(threshold) {
  tissue_ = std::make_unique<Model>(bundle.tissue.path, target);
  lesion_ = std::make_unique<Model>(bundle.lesion.path, target);
}

CascadeResult Cascade::run(const cv::Mat& pixels) {
  const auto t0 = Clock::now();
  const Prepared prep = prepare(pixels, config_);
  const auto t1 = Clock::now();

  // Stage 1: tissue classes on the canonical crop.
  const cv::Mat logits1 = tissue_->run(to_model_input(prep.image, bundle_.tissue.input_h, bundle_.tissue.input_w));
  const cv::Mat tissue_c = tissue_from_logits(logits1, prep.image.size());
  const auto t2 = Clock::now();

  // Stage 2: lesion probability inside the padded FGT box, pasted back onto the canonical grid.
  const Box box = fgt_box(tissue_c, bundle_.crop_pad);
  const cv::Mat crop = prep.image(box.rect()).clone();
  const cv::Mat prob_box = sigmoid(lesion_->run(to_model_input(crop, bundle_.lesion.input_h, bundle_.lesion.input_w)));
  cv::Mat prob_c = cv::Mat::zeros(prep.image.size(), CV_32F), pasted;
  cv::resize(prob_box, pasted, box.rect().size(), 0, 0, cv::INTER_LINEAR);
  pasted.copyTo(prob_c(box.rect()));
  const auto t3 = Clock::now();

  const Geometry& g = prep.geometry;
  CascadeResult r;
  r.tissue = g.inverse(tissue_c, cv::Scalar(0));
  r.lesion_prob = g.inverse(prob_c, cv::Scalar(0.0));
  r.breast = g.inverse(prep.breast, cv::Scalar(0));
  r.lesion_mask = r.lesion_prob >= static_cast<float>(threshold_);  // numpy compares in float32
  r.lesion_mask /= 255;
  const auto t4 = Clock::now();
  r.fgt_box = box_to_original(box, g);
  r.geometry = g;
  r.threshold = threshold_;
  r.timings_ms = {{"preprocess", ms(t0, t1)}, {"tissue", ms(t1, t2)}, {"lesion", ms(t2, t3)}, {"pasteback", ms(t3, t4)}};
  return r;
}

}  // namespace mc
