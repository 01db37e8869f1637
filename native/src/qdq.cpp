#include "qdq.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <stdexcept>

#include <onnx/onnx_pb.h>

namespace mc {
namespace {

using onnx::NodeProto;
using onnx::TensorProto;

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Element values of an integer or float initializer as double (exact for every type used here).
std::vector<double> values(const TensorProto& t) {
  int64_t n = 1;
  for (auto d : t.dims()) n *= d;
  std::vector<double> out;
  out.reserve(static_cast<size_t>(n));
  const std::string& raw = t.raw_data();
  auto from_raw = [&](auto sample) {
    using T = decltype(sample);
    if (raw.size() != static_cast<size_t>(n) * sizeof(T))
      throw Error("initializer " + t.name() + ": raw data of " + std::to_string(raw.size()) + " bytes for " +
                  std::to_string(n) + " elements");
    for (int64_t i = 0; i < n; ++i) {
      T v;
      std::memcpy(&v, raw.data() + i * sizeof(T), sizeof(T));  // ONNX raw data is little-endian, as x86/arm
      out.push_back(static_cast<double>(v));
    }
  };
  switch (t.data_type()) {
    case TensorProto::FLOAT:
      if (!raw.empty()) from_raw(float{});
      else out.assign(t.float_data().begin(), t.float_data().end());
      break;
    case TensorProto::UINT8:
      if (!raw.empty()) from_raw(uint8_t{});
      else out.assign(t.int32_data().begin(), t.int32_data().end());
      break;
    case TensorProto::INT8:
      if (!raw.empty()) from_raw(int8_t{});
      else out.assign(t.int32_data().begin(), t.int32_data().end());
      break;
    case TensorProto::INT32:
      if (!raw.empty()) from_raw(int32_t{});
      else out.assign(t.int32_data().begin(), t.int32_data().end());
      break;
    default:
      throw Error("initializer " + t.name() + ": data type " + std::to_string(t.data_type()) +
                  " is not a quantisation type (uint8, int8, int32, float)");
  }
  if (static_cast<int64_t>(out.size()) != n)
    throw Error("initializer " + t.name() + ": " + std::to_string(out.size()) + " values for " + std::to_string(n) +
                " elements");
  return out;
}

// Integer range of a quantised type (ONNX QuantizeLinear saturates to it).
std::pair<double, double> int_range(int data_type) {
  if (data_type == TensorProto::UINT8) return {0, 255};
  if (data_type == TensorProto::INT8) return {-128, 127};
  throw Error("activation zero point of data type " + std::to_string(data_type) + " (uint8 or int8 expected)");
}

TensorProto float_tensor(const std::string& name, const std::vector<int64_t>& dims, const std::vector<float>& v) {
  TensorProto t;
  t.set_name(name);
  t.set_data_type(TensorProto::FLOAT);
  for (auto d : dims) t.add_dims(d);
  t.set_raw_data(std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float)));
  return t;
}

TensorProto int64_tensor(const std::string& name, int64_t v) {
  TensorProto t;
  t.set_name(name);
  t.set_data_type(TensorProto::INT64);
  t.add_dims(1);
  t.set_raw_data(std::string(reinterpret_cast<const char*>(&v), sizeof v));
  return t;
}

NodeProto node(const std::string& op, std::vector<std::string> in, const std::string& out, const std::string& name) {
  NodeProto n;
  n.set_op_type(op);
  n.set_name(name);
  for (auto& i : in) n.add_input(i);
  n.add_output(out);
  return n;
}

const onnx::AttributeProto* attr(const NodeProto& n, const std::string& name) {
  for (const auto& a : n.attribute())
    if (a.name() == name) return &a;
  return nullptr;
}

// w = (float32(q) - float32(zp)) * scale in float32, per channel along `axis` when scale has several values
// (export/graph_fixes.py _dequantize; ONNX DequantizeLinear).
std::vector<float> dequantize(const TensorProto& q, const TensorProto& scale, const TensorProto* zp, int64_t axis) {
  const auto qv = values(q), sv = values(scale);
  const auto zv = zp ? values(*zp) : std::vector<double>(sv.size(), 0.0);
  if (zv.size() != sv.size()) throw Error("initializer " + q.name() + ": scale and zero point sizes differ");
  int64_t inner = 1, channels = 1;
  if (sv.size() > 1) {
    const int rank = q.dims_size();
    if (axis < 0) axis += rank;
    if (axis < 0 || axis >= rank || q.dims(static_cast<int>(axis)) != static_cast<int64_t>(sv.size()))
      throw Error("initializer " + q.name() + ": per-channel scale does not match axis " + std::to_string(axis));
    channels = static_cast<int64_t>(sv.size());
    for (int d = static_cast<int>(axis) + 1; d < rank; ++d) inner *= q.dims(d);
  }
  std::vector<float> out(qv.size());
  for (size_t i = 0; i < qv.size(); ++i) {
    const size_t c = channels > 1 ? static_cast<size_t>((static_cast<int64_t>(i) / inner) % channels) : 0;
    out[i] = (static_cast<float>(qv[i]) - static_cast<float>(zv[c])) * static_cast<float>(sv[c]);
  }
  return out;
}

}  // namespace

std::vector<unsigned char> opencv_ready_onnx(const std::string& path, RewriteStats* stats_out) {
  RewriteStats stats;
  onnx::ModelProto model;
  {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw std::runtime_error(path + ": cannot read the ONNX model");
    if (!model.ParseFromIstream(&f)) throw std::runtime_error(path + ": not a valid ONNX model (protobuf parse failed)");
  }
  try {
    onnx::GraphProto& g = *model.mutable_graph();
    std::map<std::string, const TensorProto*> inits;
    for (const auto& t : g.initializer()) inits[t.name()] = &t;
    std::map<std::string, const NodeProto*> quantizers;  // QuantizeLinear by output name
    for (const auto& n : g.node())
      if (n.op_type() == "QuantizeLinear") quantizers[n.output(0)] = &n;

    std::vector<NodeProto> nodes;
    std::vector<TensorProto> added;
    for (const auto& n : g.node()) {
      const std::string& op = n.op_type();
      if (op == "DequantizeLinear" && inits.count(n.input(0))) {  // quantised weight or bias
        const auto* a = attr(n, "axis");
        const TensorProto* zp = n.input_size() > 2 && !n.input(2).empty() ? inits.at(n.input(2)) : nullptr;
        const TensorProto& q = *inits.at(n.input(0));
        const std::vector<int64_t> dims(q.dims().begin(), q.dims().end());
        added.push_back(float_tensor(n.output(0), dims, dequantize(q, *inits.at(n.input(1)), zp, a ? a->i() : 1)));
        ++stats.weights_folded;
      } else if (op == "QuantizeLinear") {
        // x -> clip(round(x / s), qmin - zp, qmax - zp): the quantised value minus its zero point, as float.
        if (n.input_size() < 3 || !inits.count(n.input(1)) || !inits.count(n.input(2)))
          throw Error("QuantizeLinear " + n.name() + " needs constant scale and zero point");
        const auto s = values(*inits.at(n.input(1))), z = values(*inits.at(n.input(2)));
        if (s.size() != 1 || z.size() != 1) throw Error("QuantizeLinear " + n.name() + ": per-channel activations");
        const auto [qmin, qmax] = int_range(inits.at(n.input(2))->data_type());
        const std::string q = n.output(0), inv = q + "__inv_scale", scaled = q + "__scaled", rounded = q + "__round";
        added.push_back(float_tensor(inv, {1}, {1.0f / static_cast<float>(s[0])}));
        nodes.push_back(node("Mul", {n.input(0), inv}, scaled, n.name() + "__scale"));
        nodes.push_back(node("Round", {scaled}, rounded, n.name() + "__round"));  // half to even, as ONNX
        NodeProto clip = node("Clip", {rounded}, q, n.name() + "__clip");  // attribute style: OpenCV 4.6 reads it
        for (auto [k, v] : {std::pair<const char*, double>{"min", qmin - z[0]}, {"max", qmax - z[0]}}) {
          auto* at = clip.add_attribute();
          at->set_name(k);
          at->set_type(onnx::AttributeProto::FLOAT);
          at->set_f(static_cast<float>(v));
        }
        nodes.push_back(clip);
        ++stats.activations_emulated;
      } else if (op == "DequantizeLinear") {  // on a QuantizeLinear's output: (q - zp) * s
        const auto qit = quantizers.find(n.input(0));
        if (qit == quantizers.end() || n.input_size() < 3 || !inits.count(n.input(1)) || !inits.count(n.input(2)))
          throw Error("DequantizeLinear " + n.name() + " fits no known QDQ pattern");
        const auto s = values(*inits.at(n.input(1))), z = values(*inits.at(n.input(2)));
        const auto zq = values(*inits.at(qit->second->input(2)));
        if (s.size() != 1 || z != zq)
          throw Error("DequantizeLinear " + n.name() + ": zero point differs from its QuantizeLinear's");
        const std::string sc = n.output(0) + "__scale";
        added.push_back(float_tensor(sc, {1}, {static_cast<float>(s[0])}));
        nodes.push_back(node("Mul", {n.input(0), sc}, n.output(0), n.name() + "__dq"));
      } else if (op == "Shape" && (attr(n, "start") || attr(n, "end"))) {
        const std::string out = n.output(0);
        const auto* st = attr(n, "start");
        const auto* en = attr(n, "end");
        added.push_back(int64_tensor(out + "__starts", st ? st->i() : 0));
        added.push_back(int64_tensor(out + "__ends", en ? en->i() : std::numeric_limits<int64_t>::max()));
        added.push_back(int64_tensor(out + "__axes", 0));
        nodes.push_back(node("Shape", {n.input(0)}, out + "__full", n.name() + "__full"));
        nodes.push_back(
            node("Slice", {out + "__full", out + "__starts", out + "__ends", out + "__axes"}, out, n.name() + "__slice"));
        ++stats.shapes_split;
      } else {
        nodes.push_back(n);
      }
    }
    // Keep only the initializers the new graph reads (the quantised tensors are gone).
    std::set<std::string> used;
    for (const auto& n : nodes)
      for (const auto& i : n.input()) used.insert(i);
    std::vector<TensorProto> kept;
    for (const auto& t : g.initializer())
      if (used.count(t.name())) kept.push_back(t);
    for (auto& t : added)
      if (used.count(t.name())) kept.push_back(std::move(t));
    g.clear_node();
    for (auto& n : nodes) *g.add_node() = std::move(n);
    g.clear_initializer();
    for (auto& t : kept) *g.add_initializer() = std::move(t);
    g.clear_value_info();
  } catch (const Error& e) {
    throw std::runtime_error(path + ": cannot convert the int8 (QDQ) graph: " + e.what());
  }
  std::vector<unsigned char> out(model.ByteSizeLong());
  if (!model.SerializeToArray(out.data(), static_cast<int>(out.size())))
    throw std::runtime_error(path + ": cannot serialise the rewritten ONNX model");
  if (stats_out) *stats_out = stats;
  return out;
}

}  // namespace mc
