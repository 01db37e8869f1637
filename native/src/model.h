// One stage's ONNX model, run by OpenCV's dnn module (CPU, or CUDA when OpenCV was built with it).
#pragma once

#include <string>

#include <opencv2/dnn.hpp>

namespace mc {

enum class Target { Cpu, Cuda };

class Model {
 public:
  // Loads the ONNX file (int8 QDQ graphs through opencv_ready_onnx, qdq.h). Throws BundleError (file + reason + hint) when OpenCV cannot read it,
  // or when the CUDA target is asked for and this OpenCV has no CUDA backend.
  Model(const std::string& path, Target target);

  // (1, 1, h, w) float32 blob -> logits (1, C, h, w) float32.
  cv::Mat run(const cv::Mat& input);

 private:
  std::string path_;
  cv::dnn::Net net_;
};

// "cpu" / "cuda" -> Target; throws std::invalid_argument otherwise.
Target parse_target(const std::string& name);

}  // namespace mc
