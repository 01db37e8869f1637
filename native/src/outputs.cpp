#include "outputs.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "hash.h"
#include "io.h"

namespace mc {

const std::vector<std::string> kSummaryFields = {
    "file", "stem", "status", "error", "height", "width", "orientation", "orientation_source",
    "laterality", "view", "view_source", "grey_transform", "pixel_spacing_mm", "fgt_fraction", "lesion_count",
    "lesion_area_px", "lesion_area_mm2", "max_lesion_prob", "preprocess_ms", "tissue_ms", "lesion_ms",
    "write_ms", "total_ms"};

namespace {

constexpr int kVisMaxSide = 1200;  // long side of the visualisation

// Overlay colours (BGR) per tissue class; background is not drawn.
const std::vector<std::pair<int, cv::Scalar>> kTissueColours = {
    {1, {80, 200, 255}}, {2, {60, 220, 60}}, {3, {230, 120, 40}}};
const cv::Scalar kLesionColour(0, 0, 255), kBoxColour(0, 255, 255), kWhite(255, 255, 255);

// zlib level 1 with the RLE strategy, as the Python runtime (fast on long runs of equal bytes).
const std::vector<int> kPngParams = {cv::IMWRITE_PNG_COMPRESSION, 1, cv::IMWRITE_PNG_STRATEGY,
                                     cv::IMWRITE_PNG_STRATEGY_RLE};

// Encodes, writes atomically, returns the sha256 of the file's bytes.
std::string write_png(const std::string& path, const cv::Mat& image) {
  std::vector<uchar> buf;
  if (!cv::imencode(".png", image, buf, kPngParams)) throw WriteError(path + ": PNG encoding failed");
  const std::string bytes(buf.begin(), buf.end());
  atomic_write_bytes(path, bytes);
  return sha256_hex(bytes);
}

int py_round(double v) { return static_cast<int>(std::nearbyint(v)); }  // ties to even, as Python

void draw_outlines(cv::Mat& img, const cv::Mat& mask, const cv::Scalar& colour, int thickness) {
  std::vector<std::vector<cv::Point>> contours;
  cv::findContours(mask, contours, cv::RETR_EXTERNAL, cv::CHAIN_APPROX_SIMPLE);
  cv::drawContours(img, contours, -1, colour, thickness);
}

cv::Mat legend(const cv::Mat& img, const std::string& title, double threshold) {
  char lesion_text[64];
  std::snprintf(lesion_text, sizeof lesion_text, "lesion (p >= %.2f)", threshold);
  const std::vector<std::pair<cv::Scalar, std::string>> entries = {
      {kTissueColours[0].second, "adipose"}, {kTissueColours[1].second, "FGT"}, {kTissueColours[2].second, "pectoral"},
      {kBoxColour, "FGT crop"}, {kLesionColour, lesion_text}};
  const double fs = std::max(0.4, img.cols / 1400.0);
  const int lh = static_cast<int>(22 * fs / 0.5);
  cv::Mat panel = cv::Mat::zeros(lh * static_cast<int>(entries.size() + 2), img.cols, CV_8UC3);
  // title[:80], counted in UTF-8 code points
  size_t cut = 0;
  for (int n = 0; cut < title.size() && n < 80; ++n)
    do ++cut; while (cut < title.size() && (static_cast<unsigned char>(title[cut]) & 0xC0) == 0x80);
  cv::putText(panel, title.substr(0, cut), {8, lh - 6}, cv::FONT_HERSHEY_SIMPLEX, fs, kWhite, 1, cv::LINE_AA);
  for (size_t i = 1; i <= entries.size(); ++i) {
    const int y = lh * static_cast<int>(i + 1) - 6;
    cv::rectangle(panel, {8, y - lh / 2}, {8 + lh / 2, y}, entries[i - 1].first, -1);
    cv::putText(panel, entries[i - 1].second, {16 + lh / 2, y}, cv::FONT_HERSHEY_SIMPLEX, fs, kWhite, 1, cv::LINE_AA);
  }
  cv::Mat out;
  cv::vconcat(img, panel, out);
  return out;
}

// The CSV cell of a JSON value: floats as repr(round(v, 3)), quoted when needed (csv.QUOTE_MINIMAL).
std::string csv_cell(const Row& row, const std::string& key) {
  if (!row.contains(key)) return "";
  const auto& v = row[key];
  std::string s = v.is_number_float() ? py_round3(v.get<double>()) : v.is_string() ? v.get<std::string>() : v.dump();
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

}  // namespace

std::string py_round3(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3f", v);  // correctly rounded, ties to even: Python's round(v, 3)
  std::string s(buf);
  while (s.back() == '0') s.pop_back();
  if (s.back() == '.') s += '0';
  return s;
}

cv::Mat visualization(const cv::Mat& pixels, const CascadeResult& result, const std::string& title) {
  cv::Mat grey = to_uint8(pixels), base;
  const int h = grey.rows, w = grey.cols;
  const double scale = std::min(1.0, static_cast<double>(kVisMaxSide) / std::max(h, w));
  cv::Mat tissue = result.tissue, lesion = result.lesion_mask;
  if (scale < 1.0) {
    const cv::Size size(std::max(1, static_cast<int>(w * scale)), std::max(1, static_cast<int>(h * scale)));
    grey = shrink(grey, size);
    cv::resize(result.tissue, tissue, size, 0, 0, cv::INTER_NEAREST);
    cv::resize(result.lesion_mask, lesion, size, 0, 0, cv::INTER_NEAREST);
  }
  cv::cvtColor(grey, base, cv::COLOR_GRAY2BGR);
  const int thick = std::max(1, py_round(2.0 * std::max(base.rows, base.cols) / 1000));
  for (const auto& [cls, colour] : kTissueColours) draw_outlines(base, tissue == cls, colour, thick);
  const Box& b = result.fgt_box;
  const int y0 = py_round(b.y0 * scale), y1 = py_round(b.y1 * scale);
  const int x0 = py_round(b.x0 * scale), x1 = py_round(b.x1 * scale);
  cv::rectangle(base, {x0, y0}, {x1 - 1, y1 - 1}, kBoxColour, thick);
  draw_outlines(base, lesion.clone(), kLesionColour, thick + 1);
  return legend(base, title, result.threshold);
}

std::vector<std::pair<std::string, std::string>> write_outputs(const std::string& out_dir, const std::string& stem,
                                                              const cv::Mat& pixels, const CascadeResult& r) {
  const std::string base = out_dir + "/" + stem;
  cv::Mat labels(r.tissue.size(), CV_8U);
  for (int y = 0; y < labels.rows; ++y)
    for (int x = 0; x < labels.cols; ++x) labels.at<uchar>(y, x) = kLabelValues[r.tissue.at<uchar>(y, x)];
  cv::Mat prob(r.lesion_prob.size(), CV_8U);  // numpy: clip(p * 255 + 0.5, 0, 255).astype(uint8), float32
  for (int y = 0; y < prob.rows; ++y)
    for (int x = 0; x < prob.cols; ++x)
      prob.at<uchar>(y, x) = static_cast<uchar>(std::clamp(r.lesion_prob.at<float>(y, x) * 255.0f + 0.5f, 0.0f, 255.0f));
  const std::vector<std::pair<std::string, cv::Mat>> images = {
      {"_tissue_seg.png", labels}, {"_fgt_mask.png", r.tissue == kFgt}, {"_cancer_prob.png", prob},
      {"_lesion_mask.png", r.lesion_mask * 255}, {"_visualization.png", visualization(pixels, r, stem)}};
  std::vector<std::pair<std::string, std::string>> written;
  for (const auto& [suffix, image] : images) written.emplace_back(stem + suffix, write_png(base + suffix, image));
  return written;
}

void write_summary(const std::string& out_dir, const std::vector<Row>& rows) {
  std::string csv;
  for (size_t i = 0; i < kSummaryFields.size(); ++i) csv += (i ? "," : "") + kSummaryFields[i];
  csv += "\r\n";
  for (const auto& row : rows) {
    for (size_t i = 0; i < kSummaryFields.size(); ++i) csv += (i ? "," : "") + csv_cell(row, kSummaryFields[i]);
    csv += "\r\n";
  }
  atomic_write_bytes(out_dir + "/summary.csv", csv);
  atomic_write_bytes(out_dir + "/summary.json", Row(rows).dump(1, ' ', true));
}

}  // namespace mc
