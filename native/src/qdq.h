// ONNX graphs for OpenCV 4.6 dnn, rewritten in memory at load time (the bundle on disk is untouched):
// int8 QDQ models become plain float graphs that compute what ONNX Runtime computes, and Shape
// nodes with start/end attributes become Shape + Slice (see export/graph_fixes.py).
#pragma once

#include <string>
#include <vector>

namespace mc {

// What the rewrite did, for messages and tests.
struct RewriteStats {
  int weights_folded = 0;       // constant DequantizeLinear -> float initializer
  int activations_emulated = 0;  // QuantizeLinear -> DequantizeLinear pairs -> Mul/Round/Clip/Mul
  int shapes_split = 0;          // Shape(start, end) -> Shape + Slice
};

// Reads the ONNX file at `path` and returns the serialised model OpenCV 4.6 dnn can read:
//  - a constant DequantizeLinear (quantised weight or bias) becomes the float32 initializer
//    w = (float(q) - float(zero_point)) * scale, per channel along `axis` (ONNX DequantizeLinear);
//  - an activation QuantizeLinear -> DequantizeLinear pair becomes the same fake quantisation in
//    float ops: s * clip(round(x / s), qmin - zp, qmax - zp) (ONNX QuantizeLinear: round half to
//    even, saturate to the integer type), so the graph computes the int8 model's values, not an
//    unquantised approximation;
//  - Shape nodes with start/end become Shape + Slice (OpenCV 4.6 ignores the attributes).
// Float models pass through the Shape rewrite only. Throws std::runtime_error (file + reason) for an
// unreadable file or a Q/DQ node that fits none of these patterns.
std::vector<unsigned char> opencv_ready_onnx(const std::string& path, RewriteStats* stats = nullptr);

}  // namespace mc
