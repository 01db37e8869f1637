#include "model.h"

#include <sstream>
#include <stdexcept>
#include <vector>

#include <opencv2/core/utils/logger.hpp>
#include <opencv2/core/version.hpp>

#include "bundle.h"
#include "qdq.h"

namespace mc {
namespace {

// OpenCV's message on one line: the "> ..." detail lines when there are any, whitespace collapsed.
std::string one_line(const std::string& what) {
  std::stringstream lines(what);
  std::string line, detail;
  while (std::getline(lines, line)) {
    if (line.rfind("> ", 0) != 0) continue;
    while (line.rfind("> ", 0) == 0) line = line.substr(2);
    detail += line + " ";
  }
  std::stringstream words(detail.empty() ? what : detail);
  std::string word, out;
  while (words >> word) out += (out.empty() ? "" : " ") + word;
  return out;
}

// What usually goes wrong with OpenCV 4.x's ONNX importer on exports of this project.
std::string hint(const std::string& msg) {
  if (msg.find("Resize") != std::string::npos && msg.find("HCHW layout") != std::string::npos)
    return " (the Resize sizes come from a Shape node with start/end attributes, which OpenCV 4.6 "
           "reads as the whole shape; export the model with those Shape nodes rewritten as Shape + Slice)";
  if (msg.find("QLinear") != std::string::npos || msg.find("Integer") != std::string::npos)
    return " (OpenCV " CV_VERSION " dnn cannot run operator-style int8 models; export the bundle in QDQ format)";
  return "";
}

}  // namespace

Target parse_target(const std::string& name) {
  if (name == "cpu") return Target::Cpu;
  if (name == "cuda") return Target::Cuda;
  throw std::invalid_argument("--target must be cpu or cuda, got '" + name + "'");
}

Model::Model(const std::string& path, Target target) : path_(path) {
  const auto level = cv::utils::logging::getLogLevel();
  cv::utils::logging::setLogLevel(cv::utils::logging::LOG_LEVEL_SILENT);  // the exception says it all
  std::vector<unsigned char> onnx;
  try {
    onnx = opencv_ready_onnx(path);  // int8 QDQ -> the same arithmetic in float ops; the file is not changed
  } catch (const std::runtime_error& e) {
    cv::utils::logging::setLogLevel(level);
    throw BundleError(e.what());
  }
  try {
    net_ = cv::dnn::readNetFromONNX(onnx);
  } catch (const cv::Exception& e) {
    cv::utils::logging::setLogLevel(level);
    const std::string msg = one_line(e.what());
    throw BundleError(path + ": OpenCV " CV_VERSION " dnn cannot load this ONNX model: " + msg + hint(msg));
  }
  cv::utils::logging::setLogLevel(level);
  if (net_.empty()) throw BundleError(path + ": OpenCV dnn read an empty network");
  if (target == Target::Cuda) {
    const auto targets = cv::dnn::getAvailableTargets(cv::dnn::DNN_BACKEND_CUDA);
    if (targets.empty())
      throw BundleError("--target cuda: this OpenCV (" CV_VERSION ") was built without the CUDA dnn backend");
    net_.setPreferableBackend(cv::dnn::DNN_BACKEND_CUDA);
    net_.setPreferableTarget(cv::dnn::DNN_TARGET_CUDA);
  } else {
    net_.setPreferableBackend(cv::dnn::DNN_BACKEND_OPENCV);
    net_.setPreferableTarget(cv::dnn::DNN_TARGET_CPU);
  }
}

cv::Mat Model::run(const cv::Mat& input) {
  net_.setInput(input);
  cv::Mat out = net_.forward();
  if (out.dims != 4 || out.size[0] != 1 || out.size[2] != input.size[2] || out.size[3] != input.size[3])
    throw std::runtime_error(path_ + ": unexpected output shape (expected (1, C, " + std::to_string(input.size[2]) +
                             ", " + std::to_string(input.size[3]) + "))");
  return out.clone();  // the net reuses its output buffer on the next forward()
}

}  // namespace mc
