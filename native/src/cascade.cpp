#include "cascade.h"

#include <chrono>
#include <algorithm>
#include <cmath>

#include <opencv2/imgproc.hpp>

#include "views.h"

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

// [a0, a1) grown about its centre to at least frac of [b0, b1), kept inside it (runtime/crop.py _grow).
void grow(int& a0, int& a1, int b0, int b1, double frac) {
  const int need = static_cast<int>(std::nearbyint(frac * (b1 - b0)));
  if (a1 - a0 >= need) return;
  a0 = static_cast<int>(std::nearbyint((a0 + a1 - need) / 2.0));
  a0 = std::min(std::max(a0, b0), b1 - need);
  a1 = a0 + need;
}

}  // namespace

Box fgt_box(const cv::Mat& tissue, double pad_frac, double min_fgt_frac, double min_breast_frac,
            bool with_pectoral) {
  const int h = tissue.rows, w = tissue.cols;
  const cv::Mat fgt = with_pectoral ? cv::Mat((tissue == kFgt) | (tissue == kPectoral)) : cv::Mat(tissue == kFgt);
  if (cv::countNonZero(fgt) < min_fgt_frac * h * w) return {0, h, 0, w};
  const cv::Rect r = cv::boundingRect(fgt);
  const int y0 = r.y, y1 = r.y + r.height, x0 = r.x, x1 = r.x + r.width;
  // Python's round(): ties to even.
  const int py = static_cast<int>(std::nearbyint(pad_frac * (y1 - y0)));
  const int px = static_cast<int>(std::nearbyint(pad_frac * (x1 - x0)));
  Box box{std::max(0, y0 - py), std::min(h, y1 + py), std::max(0, x0 - px), std::min(w, x1 + px)};
  if (min_breast_frac > 0.0) {  // the floor of runtime/crop.py fgt_box: a fraction of the breast's box per side
    const cv::Rect b = cv::boundingRect(tissue != 0);
    if (b.width > 0 && b.height > 0) {
      grow(box.y0, box.y1, b.y, b.y + b.height, min_breast_frac);
      grow(box.x0, box.x1, b.x, b.x + b.width, min_breast_frac);
    }
  }
  return box;
}

double CascadeResult::fgt_fraction() const {
  int breast_px = cv::countNonZero(tissue != 0);
  if (!breast_px) breast_px = cv::countNonZero(breast);
  return breast_px ? static_cast<double>(cv::countNonZero(tissue == kFgt)) / breast_px : 0.0;
}

std::vector<Lesion> find_marks(const cv::Mat& prob, const OperatingPoint& op, double image_area_px, cv::Mat& labels) {
  labels = cv::Mat::zeros(prob.size(), CV_32S);
  std::vector<Lesion> marks;
  if (prob.empty()) return marks;
  cv::Mat cand = op.pixel_threshold > 0 ? cv::Mat(prob >= static_cast<float>(op.pixel_threshold)) / 255
                                        : cv::Mat::ones(prob.size(), CV_8U);  // numpy compares in float32
  const cv::Rect r = cv::boundingRect(cand);
  if (r.width == 0) return marks;
  cv::Mat lab, stats, centroids;
  const int n = cv::connectedComponentsWithStats(cand(r), lab, stats, centroids, 8);
  const double min_area = op.min_area_frac * image_area_px;
  std::vector<int> label_of;
  for (int i = 1; i < n; ++i) {
    const int area = stats.at<int>(i, cv::CC_STAT_AREA);
    if (area < min_area || area == 0) continue;
    const cv::Rect b(stats.at<int>(i, cv::CC_STAT_LEFT), stats.at<int>(i, cv::CC_STAT_TOP),
                     stats.at<int>(i, cv::CC_STAT_WIDTH), stats.at<int>(i, cv::CC_STAT_HEIGHT));
    double mx;
    cv::minMaxLoc(prob(r)(b), nullptr, &mx, nullptr, nullptr, lab(b) == i);
    if (mx < op.score_threshold) continue;
    Lesion l;
    l.rank = i;  // the component's label until ranked
    l.area_px = area;
    l.bbox = cv::Rect(b.x + r.x, b.y + r.y, b.width, b.height);
    l.max_prob = static_cast<float>(mx);
    marks.push_back(l);
  }
  // Python's stable sort on -score.
  std::stable_sort(marks.begin(), marks.end(), [](const Lesion& a, const Lesion& b) { return a.max_prob > b.max_prob; });
  if (op.max_marks > 0 && static_cast<int>(marks.size()) > op.max_marks) marks.resize(op.max_marks);
  std::vector<int> keep(n, 0);
  for (size_t k = 0; k < marks.size(); ++k) keep[marks[k].rank] = static_cast<int>(k) + 1, marks[k].rank = static_cast<int>(k) + 1;
  cv::Mat sub = labels(r);
  for (int y = 0; y < r.height; ++y) {
    const int* s = lab.ptr<int>(y);
    int* d = sub.ptr<int>(y);
    for (int x = 0; x < r.width; ++x) d[x] = keep[s[x]];
  }
  return marks;
}

Cascade::Cascade(const Bundle& bundle, Target target, const PreprocessConfig& config, const OperatingPoint& op)
    : bundle_(bundle), config_(config), op_(op) {
  tissue_ = std::make_unique<Model>(bundle.tissue.path, target);
  lesion_ = std::make_unique<Model>(bundle.lesion.path, target);
}

CascadeResult Cascade::run(const cv::Mat& pixels, const std::string& chest_wall, const std::string& orientation_source,
                           const std::string& view) {
  const auto t0 = Clock::now();
  const Prepared prep = prepare(pixels, config_, chest_wall, orientation_source);
  const auto t1 = Clock::now();
  const Geometry& g = prep.geometry;

  // Stage 1: tissue classes on the canonical crop (work grid).
  const cv::Mat logits1 = tissue_->run(to_model_input(prep.image, bundle_.tissue.input_h, bundle_.tissue.input_w));
  const cv::Mat tissue_c = tissue_from_logits(logits1, prep.image.size());
  const auto t2 = Clock::now();

  // Stage 2: lesion probability inside the padded FGT box, resized straight to the box's original pixels.
  // runtime/crop.py CropRule: on a CC view a pectoral label is misread dense tissue, so the box covers it.
  const bool with_pectoral = bundle_.crop_cc_pectoral_as_fgt && is_cc_view(view);
  const Box box = fgt_box(tissue_c, bundle_.crop_pad, 0.002, bundle_.crop_min_breast_frac, with_pectoral);
  const cv::Mat crop = prep.image(box.rect()).clone();
  const cv::Mat prob = sigmoid(lesion_->run(to_model_input(crop, bundle_.lesion.input_h, bundle_.lesion.input_w)));
  const auto t3 = Clock::now();
  CascadeResult r;
  r.fgt_box = g.box_to_original(box);
  cv::Mat prob_box;
  cv::resize(prob, prob_box, r.fgt_box.rect().size(), 0, 0, cv::INTER_LINEAR);
  if (g.flipped) cv::flip(prob_box, prob_box, 1);  // the box, mirrored back with the image

  // Tissue on the original grid: on a reduced work grid the logits are resized to the crop's original size.
  r.tissue = g.inverse(g.reduced() ? tissue_from_logits(logits1, g.original_bbox().rect().size()) : tissue_c,
                       cv::Scalar(0));
  r.breast = g.inverse(prep.breast, cv::Scalar(0));
  r.lesion_prob = cv::Mat::zeros(g.height, g.width, CV_32F);
  prob_box.copyTo(r.lesion_prob(r.fgt_box.rect()));
  cv::minMaxLoc(prob_box, nullptr, &r.max_prob);
  cv::Mat labels;
  r.marks = find_marks(prob_box, op_, static_cast<double>(g.height) * g.width, labels);
  for (auto& m : r.marks) m.bbox += r.fgt_box.rect().tl();
  r.lesion_mask = cv::Mat::zeros(g.height, g.width, CV_8U);
  cv::Mat(labels > 0).convertTo(r.lesion_mask(r.fgt_box.rect()), CV_8U, 1.0 / 255);
  const auto t4 = Clock::now();
  r.geometry = g;
  r.op = op_;
  r.threshold = op_.score_threshold;
  r.timings_ms = {{"preprocess", ms(t0, t1)}, {"tissue", ms(t1, t2)}, {"lesion", ms(t2, t3)}, {"pasteback", ms(t3, t4)}};
  return r;
}

}  // namespace mc
