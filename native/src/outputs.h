// Per-image output PNGs, the visualisation and the batch summary (runtime/outputs.py, runtime/batch.py).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>

#include "cascade.h"

namespace mc {

// Columns of summary.csv, exactly runtime/batch.py's SUMMARY_FIELDS.
extern const std::vector<std::string> kSummaryFields;

// One summary row; keys in insertion order, as the Python runtime's dict.
using Row = nlohmann::ordered_json;

// <stem>_tissue_seg.png (64/128/192/255), _fgt_mask.png (0/255), _cancer_prob.png (round(p x 255)),
// _lesion_mask.png (0/255), _visualization.png; each written atomically. Returns (file name, sha256)
// of each, for summary.json. Throws WriteError.
std::vector<std::pair<std::string, std::string>> write_outputs(const std::string& out_dir, const std::string& stem,
                                                              const cv::Mat& pixels, const CascadeResult& result);

// The radiologist-facing overview (BGR): contours, FGT box, lesions, legend.
cv::Mat visualization(const cv::Mat& pixels, const CascadeResult& result, const std::string& title);

// summary.csv and summary.json (same rows), each written atomically.
void write_summary(const std::string& out_dir, const std::vector<Row>& rows);

// A float as the Python runtime writes it in summary.csv: repr(round(v, 3)).
std::string py_round3(double v);

}  // namespace mc
