// cascade-infer: the native counterpart of `runtime infer` (see README.md, "Native runner").
//
//   cascade-infer --bundle DIR --image-dir DIR --out DIR [options]
//
// For each image: read -> cascade -> five PNGs (atomic) -> a summary row; summary.csv / summary.json are
// rewritten after every image. One bad file never stops the batch (its reason goes to stderr and to the
// summary); the exit status is 1 when any failed, 2 for a usage, bundle or folder error, 0 otherwise.
#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <sys/stat.h>

#include <opencv2/core.hpp>

#include "bundle.h"
#include "cascade.h"
#include "dicom.h"
#include "io.h"
#include "outputs.h"
#include "views.h"

namespace {

const char* kUsage =
    "usage: cascade-infer [--bundle DIR] --image-dir DIR --out DIR [options]\n"
    "\n"
    "Run the mammo-cascade bundle (manifest.json + tissue.onnx + lesion.onnx) on every PNG/JPEG/TIFF/DICOM\n"
    "mammogram of a folder; writes <stem>_tissue_seg.png, _fgt_mask.png, _cancer_prob.png,\n"
    "_lesion_mask.png, _visualization.png and summary.csv / summary.json, as `runtime infer` does.\n"
    "\n"
    "options:\n"
    "  --bundle DIR        the bundle (default: " MC_DEFAULT_BUNDLE ")\n"
    "  --recursive         also process sub-folders\n"
    "  --threshold P       lesion score threshold (default: the bundle's operating point)\n"
    "  --adaptive-clahe    adaptive CLAHE instead of CLAHE + median (default: the bundle's choice)\n"
    "  --max-pixels N      refuse images larger than N pixels (default 80000000)\n"
    "  --threads N         OpenCV threads (default: all cores)\n"
    "  --target cpu|cuda   OpenCV dnn target (cuda needs an OpenCV built with CUDA; default cpu)\n"
    "  --no-progress       no per-image progress lines\n"
    "  -h, --help          this help\n"
    "\n"
    "DICOM files (.dcm, .dicom, or the DICM signature) are read with DCMTK: RLE, JPEG and JPEG-LS decode;\n"
    "the window / VOI LUT, MONOCHROME1, laterality and pixel spacing tags are applied as in `runtime infer`.\n";

struct Args {
  std::string bundle, image_dir, out;
  bool recursive = false, adaptive_clahe = false, progress = true;
  std::optional<double> threshold;  // default: the bundle's
  long long max_pixels = mc::kDefaultMaxPixels;
  int threads = -1;
  std::string target = "cpu";
};

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

Args parse_args(int argc, char** argv) {
  Args a;
  auto value = [&](int& i) -> std::string {
    if (i + 1 >= argc) throw UsageError(std::string(argv[i]) + " needs a value");
    return argv[++i];
  };
  auto number = [&](int& i, auto parse) {
    const std::string flag = argv[i], v = value(i);
    try {
      size_t used = 0;
      auto n = parse(v, &used);
      if (used == v.size()) return n;
    } catch (const std::exception&) {
    }
    throw UsageError(flag + ": not a number: '" + v + "'");
  };
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    if (f == "-h" || f == "--help") {
      std::cout << kUsage;
      std::exit(0);
    } else if (f == "--bundle") a.bundle = value(i);
    else if (f == "--image-dir") a.image_dir = value(i);
    else if (f == "--out") a.out = value(i);
    else if (f == "--recursive") a.recursive = true;
    else if (f == "--adaptive-clahe") a.adaptive_clahe = true;
    else if (f == "--no-progress") a.progress = false;
    else if (f == "--threshold") a.threshold = number(i, [](const std::string& s, size_t* n) { return std::stod(s, n); });
    else if (f == "--max-pixels") a.max_pixels = number(i, [](const std::string& s, size_t* n) { return std::stoll(s, n); });
    else if (f == "--threads") a.threads = number(i, [](const std::string& s, size_t* n) { return std::stoi(s, n); });
    else if (f == "--target") a.target = value(i);
    else throw UsageError("unknown argument: " + f);
  }
  if (a.bundle.empty()) a.bundle = MC_DEFAULT_BUNDLE;  // the packaged bundle
  if (a.image_dir.empty() || a.out.empty()) throw UsageError("--image-dir and --out are required");
  if (a.max_pixels < 1) throw UsageError("--max-pixels must be positive");
  if (a.threads == 0 || a.threads < -1) throw UsageError("--threads must be positive");
  return a;
}

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

// " ".join(text.split())[:300], as the Python runtime shows an exception in the summary.
std::string short_message(const std::string& text) {
  std::stringstream in(text);
  std::string word, out;
  while (in >> word) out += (out.empty() ? "" : " ") + word;
  return out.substr(0, 300);
}

// One file -> summary row with status "ok" (runtime/batch.py process_one). Throws on failure.
mc::Row process_one(mc::Cascade& cascade, const std::string& path, const std::string& stem, const std::string& out,
                    long long max_pixels) {
  const auto t0 = Clock::now();
  mc::DicomImage dicom;  // tags stay empty for raster files
  const bool is_dicom = mc::is_dicom(path);
  if (is_dicom) {
    mc::check_readable(path);
    dicom = mc::read_dicom(path, max_pixels);
  }
  const cv::Mat pixels = is_dicom ? dicom.pixels : mc::read_image(path, max_pixels);
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw mc::InputError(path, "file not found");
  // The view from the tags, else from the file name (runtime/io read_image).
  const std::string view = dicom.view.empty() ? mc::view_from_name(path) : dicom.view;
  const std::string view_source = !dicom.view.empty() ? "tags" : view.empty() ? "" : "file name";
  const mc::CascadeResult res =
      cascade.run(pixels, dicom.chest_wall, dicom.chest_wall.empty() ? "image" : "tags", view);
  const auto t1 = Clock::now();
  const auto written = mc::write_outputs(out, stem, pixels, res);
  const double write_ms = ms_since(t1), total_ms = ms_since(t0);
  int area_px = 0;
  const auto lesions = res.lesions();
  for (const auto& l : lesions) area_px += l.area_px;
  const double max_prob = res.max_prob;
  mc::Row row, outputs = mc::Row::object();
  for (const auto& [name, sha] : written) outputs[name] = sha;
  row["stem"] = stem;
  row["status"] = "ok";
  row["error"] = "";
  row["height"] = pixels.rows;
  row["width"] = pixels.cols;
  row["orientation"] = res.geometry.flipped ? "flipped" : "as-is";
  row["orientation_source"] = res.geometry.orientation_source;
  row["laterality"] = dicom.laterality;
  row["view"] = view;
  row["view_source"] = view_source;
  row["grey_transform"] = dicom.grey_transform;
  const auto& sp = dicom.spacing_mm;
  char spacing[64] = "";
  if (sp) std::snprintf(spacing, sizeof spacing, "%.4fx%.4f", sp->first, sp->second);
  row["pixel_spacing_mm"] = std::string(spacing);
  row["fgt_fraction"] = res.fgt_fraction();
  row["lesion_count"] = lesions.size();
  row["lesion_area_px"] = area_px;
  if (sp) row["lesion_area_mm2"] = area_px * sp->first * sp->second;
  else row["lesion_area_mm2"] = "";
  row["max_lesion_prob"] = max_prob;
  row["preprocess_ms"] = res.timings_ms.at("preprocess");
  row["tissue_ms"] = res.timings_ms.at("tissue");
  row["lesion_ms"] = res.timings_ms.at("lesion");
  row["write_ms"] = write_ms;
  row["total_ms"] = total_ms;
  row["outputs"] = outputs;
  row["input_size"] = static_cast<long long>(st.st_size);
  row["input_mtime_ns"] = static_cast<long long>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
  return row;
}

int run(const Args& a) {
  const std::string out = mc::py_path(a.out);
  const std::vector<std::string> files = mc::find_images(a.image_dir, a.recursive, out);
  if (files.empty()) {
    std::cerr << "no images found in " << mc::py_path(a.image_dir) << "\n";
    return 2;
  }
  const mc::Bundle bundle = mc::load_bundle(a.bundle);
  mc::PreprocessConfig config = bundle.preprocess;
  if (a.adaptive_clahe) config.adaptive_clahe = true;
  if (a.threads > 0) cv::setNumThreads(a.threads);
  mc::OperatingPoint op = bundle.op;
  if (a.threshold) {
    try {
      op = op.with_threshold(*a.threshold);
    } catch (const std::invalid_argument& e) {
      throw UsageError(e.what());
    }
  }
  mc::Cascade cascade(bundle, mc::parse_target(a.target), config, op);

  std::error_code ec;
  std::filesystem::create_directories(out, ec);
  if (!std::filesystem::is_directory(out)) throw mc::WriteError(out + ": cannot create the output folder");
  const mc::OutputLock lock(out);
  mc::remove_temp_files(out);
  const auto stems = mc::unique_stems(files, a.image_dir);
  std::vector<mc::Row> rows;
  int failed = 0;
  for (size_t i = 0; i < files.size(); ++i) {
    const std::string& path = files[i];
    const std::string& stem = stems.at(path);
    mc::Row row;
    try {
      row = process_one(cascade, path, stem, out, a.max_pixels);
    } catch (const mc::InputError& e) {
      row = {{"stem", stem}, {"status", "error"}, {"error", e.reason}};
    } catch (const mc::WriteError& e) {
      row = {{"stem", stem}, {"status", "error"}, {"error", "OSError: " + short_message(e.what())}};
    } catch (const std::bad_alloc&) {
      row = {{"stem", stem}, {"status", "error"}, {"error", "MemoryError: out of memory"}};
    } catch (const std::exception& e) {  // cv::Exception included
      row = {{"stem", stem}, {"status", "error"}, {"error", "RuntimeError: " + short_message(e.what())}};
    }
    row["file"] = path;
    row["relpath"] = mc::relpath(path, a.image_dir);
    if (row["status"] == "error") {
      ++failed;
      std::cerr << "ERROR " << path << ": " << row["error"].get<std::string>() << std::endl;
    } else if (a.progress) {
      std::cerr << "[" << i + 1 << "/" << files.size() << "] " << path << " -> " << stem << ": "
                << mc::py_round3(row["total_ms"].get<double>()) << " ms" << std::endl;
    }
    rows.push_back(row);
    mc::write_summary(out, rows);
  }
  std::cout << rows.size() - failed << " of " << rows.size() << " images done; " << failed
            << " failed (reasons in the log above and in summary.csv); outputs in " << out << std::endl;
  return failed ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  try {
    args = parse_args(argc, argv);
  } catch (const UsageError& e) {
    std::cerr << kUsage << "\ncascade-infer: error: " << e.what() << "\n";
    return 2;
  }
  try {
    return run(args);
  } catch (const UsageError& e) {
    std::cerr << kUsage << "\ncascade-infer: error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {  // bundle, model, folder and output-folder errors
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  }
}
