#include "dicom.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <vector>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcrledrg.h>
#include <dcmtk/dcmdata/dctk.h>
#include <dcmtk/dcmjpeg/djdecode.h>
#include <dcmtk/dcmjpls/djdecode.h>
#include <dcmtk/oflog/oflog.h>

#include "io.h"

namespace mc {
namespace {

constexpr int kMinSide = 32;

// Decoders registered once per process; DCMTK's own log silenced (it can quote element values).
struct Codecs {
  Codecs() {
    OFLog::configure(OFLogger::OFF_LOG_LEVEL);
    DcmRLEDecoderRegistration::registerCodecs();
    DJDecoderRegistration::registerCodecs();
    DJLSDecoderRegistration::registerCodecs();
  }
};

std::string upper_trim(std::string s) {
  s.erase(0, s.find_first_not_of(" \t\r\n\0"));
  s.erase(s.find_last_not_of(std::string(" \t\r\n\0", 5)) + 1);
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

std::string str(DcmDataset* ds, const DcmTagKey& tag, long pos = -1) {
  OFString v;
  const OFCondition c = pos < 0 ? ds->findAndGetOFStringArray(tag, v) : ds->findAndGetOFString(tag, v, pos);
  return c.good() ? upper_trim(v.c_str()) : "";
}

std::optional<double> number(DcmDataset* ds, const DcmTagKey& tag, unsigned long pos = 0) {
  Float64 v;
  if (ds->findAndGetFloat64(tag, v, pos).good() && std::isfinite(v)) return v;
  return std::nullopt;
}

long integer(DcmDataset* ds, const DcmTagKey& tag, long fallback) {
  Uint16 u;
  if (ds->findAndGetUint16(tag, u).good()) return u;
  Sint32 s;
  if (ds->findAndGetSint32(tag, s).good()) return s;
  const std::string t = str(ds, tag, 0);
  try {
    return t.empty() ? fallback : std::stol(t);
  } catch (const std::exception&) {
    return fallback;
  }
}

// Number of values of a multi-valued string element (0 when absent).
unsigned long vm(DcmDataset* ds, const DcmTagKey& tag) {
  DcmElement* e = nullptr;
  return ds->findAndGetElement(tag, e).good() && e ? e->getVM() : 0;
}

// runtime/dicom.py pixel_spacing_mm: Pixel Spacing, else Imager Pixel Spacing / magnification.
std::optional<std::pair<double, double>> spacing(DcmDataset* ds) {
  for (const DcmTagKey& tag : {DCM_PixelSpacing, DCM_ImagerPixelSpacing}) {
    if (vm(ds, tag) != 2) continue;
    auto r = number(ds, tag, 0), c = number(ds, tag, 1);
    if (!r || !c) continue;
    double row = *r, col = *c;
    if (tag == DCM_ImagerPixelSpacing) {
      const double mag = number(ds, DCM_EstimatedRadiographicMagnificationFactor).value_or(1.0);
      if (mag > 0) row /= mag, col /= mag;
    }
    if (row > 0 && col > 0) return std::make_pair(row, col);
  }
  return std::nullopt;
}

const std::vector<std::pair<std::string, std::string>> kViewMeanings = {
    {"medio-lateral oblique", "MLO"}, {"latero-medial oblique", "LMO"}, {"cranio-caudal", "CC"},
    {"medio-lateral", "ML"}, {"latero-medial", "LM"}};
const std::vector<std::string> kViewTerms = {"CC", "MLO", "ML", "LM", "LMO", "XCCL", "XCCM",
                                             "FB", "SIO", "ISO", "CV", "AT", "SPOT", "MAG"};

std::string view_of(DcmDataset* ds) {
  const std::string v = str(ds, DCM_ViewPosition);
  if (!v.empty()) return v;
  DcmItem* item = nullptr;
  if (ds->findAndGetSequenceItem(DCM_ViewCodeSequence, item, 0).good() && item) {
    OFString m;
    if (item->findAndGetOFString(DCM_CodeMeaning, m).good()) {
      std::string meaning = m.c_str();
      for (char& c : meaning) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      for (const auto& [text, term] : kViewMeanings)
        if (meaning.find(text) != std::string::npos) return term;
    }
  }
  if (vm(ds, DCM_PatientOrientation) == 1) {  // CBIS-DDSM writes the view into Patient Orientation
    const std::string po = str(ds, DCM_PatientOrientation, 0);
    if (std::find(kViewTerms.begin(), kViewTerms.end(), po) != kViewTerms.end()) return po;
  }
  return "";
}

// runtime/dicom.py chest_wall_from_tags: Patient Orientation's row direction first (A: chest wall left,
// P: right), else laterality (R: right, L: left; Field Of View Horizontal Flip YES swaps it).
std::string chest_wall(DcmDataset* ds, const std::string& lat) {
  if (vm(ds, DCM_PatientOrientation) == 2) {
    const std::string row = str(ds, DCM_PatientOrientation, 0), col = str(ds, DCM_PatientOrientation, 1);
    const auto valid = [](const std::string& v) {
      return !v.empty() && v.find_first_not_of("APRLHF") == std::string::npos;
    };
    if (valid(row) && valid(col)) return row[0] == 'A' ? "left" : row[0] == 'P' ? "right" : "";
  }
  if (lat.empty()) return "";
  std::string side = lat == "R" ? "right" : "left";
  if (str(ds, DCM_FieldOfViewHorizontalFlip) == "YES") side = side == "right" ? "left" : "right";
  return side;
}

std::string condition(const OFCondition& c) {
  std::stringstream words(c.text());
  std::string w, out;
  while (words >> w) out += (out.empty() ? "" : " ") + w;
  return out;
}

// VOI window (PS3.3 C.11.2.1.2 / C.11.2.1.3) -> unit range [0, 1], as pydicom's apply_windowing normalised
// by its own output range.
double window_unit(double x, double c, double w, const std::string& func) {
  if (func == "LINEAR_EXACT") {
    if (x <= c - w / 2) return 0;
    if (x > c + w / 2) return 1;
    return (x - c) / w + 0.5;
  }
  if (func == "SIGMOID") return 1.0 / (1.0 + std::exp(-4.0 * (x - c) / w));
  if (x <= c - 0.5 - (w - 1) / 2) return 0;
  if (x > c - 0.5 + (w - 1) / 2) return 1;
  return (x - (c - 0.5)) / (w - 1) + 0.5;
}

}  // namespace

DicomImage read_dicom(const std::string& path, long long max_pixels) {
  static const Codecs codecs;
  DcmFileFormat ff;
  const OFCondition loaded = ff.loadFile(path.c_str(), EXS_Unknown, EGL_noChange, DCM_MaxReadLength, ERM_autoDetect);
  if (loaded.bad()) throw InputError(path, "not a readable DICOM file (" + condition(loaded) + ")");
  DcmDataset* ds = ff.getDataset();
  if (!ds->tagExists(DCM_PixelData)) {
    if (ds->tagExists(DCM_FloatPixelData) || ds->tagExists(DCM_DoubleFloatPixelData))
      throw InputError(path, "DICOM float pixel data is not supported (integer Pixel Data needed)");
    throw InputError(path, "DICOM file has no pixel data (no Pixel Data (7FE0,0010) element)");
  }
  const std::string modality = str(ds, DCM_Modality);
  if (modality != "MG")
    throw InputError(path, "not a mammogram: " + (modality.empty() ? std::string("no Modality (0008,0060)")
                                                                     : "modality " + modality) +
                               "; only MG (digital mammography) is accepted");
  const long frames = integer(ds, DCM_NumberOfFrames, 1);
  if (frames > 1)
    throw InputError(path, "multi-frame DICOM (" + std::to_string(frames) +
                               " frames, e.g. tomosynthesis) is not a 2-D mammogram; only single-frame images are accepted");
  const long spp = integer(ds, DCM_SamplesPerPixel, 1);
  const std::string photometric = str(ds, DCM_PhotometricInterpretation);
  if (spp != 1 || (photometric != "MONOCHROME1" && photometric != "MONOCHROME2"))
    throw InputError(path, "photometric interpretation " + (photometric.empty() ? "?" : photometric) + " with " +
                               std::to_string(spp) + " samples per pixel: a grey (MONOCHROME1/2) mammogram is needed");
  const long rows = integer(ds, DCM_Rows, 0), cols = integer(ds, DCM_Columns, 0);
  if (!rows || !cols) throw InputError(path, "DICOM file without Rows/Columns");
  if (rows < kMinSide || cols < kMinSide)
    throw InputError(path, "image too small (" + std::to_string(cols) + "x" + std::to_string(rows) + " px; at least " +
                               std::to_string(kMinSide) + "x" + std::to_string(kMinSide) + " needed)");
  if (static_cast<long long>(rows) * cols > max_pixels)
    throw InputError(path, "image too large (" + std::to_string(cols) + "x" + std::to_string(rows) +
                               " px > limit of " + std::to_string(max_pixels) + " px)");
  const long bits_alloc = integer(ds, DCM_BitsAllocated, 16), bits_stored = integer(ds, DCM_BitsStored, 16);
  if ((bits_alloc != 8 && bits_alloc != 16) || bits_stored < 1 || bits_stored > 16)
    throw InputError(path, std::to_string(bits_stored) + " bits stored in " + std::to_string(bits_alloc) +
                               " allocated: only 8 to 16-bit integer mammograms are supported");
  if (str(ds, DCM_PresentationIntentType) == "FOR PROCESSING")
    throw InputError(path, "'For Processing' image (raw detector data, not meant for display): the native runner "
                           "reads 'For Presentation' images only; use the Python runtime (runtime infer)");

  const DcmXfer xfer(ds->getOriginalXfer());
  const std::string ts = std::string("'") + xfer.getXferName() + "' (" + xfer.getXferID() + ")";
  const OFCondition dec = ds->chooseRepresentation(EXS_LittleEndianExplicit, nullptr);
  if (dec.bad() || !ds->canWriteXfer(EXS_LittleEndianExplicit))
    throw InputError(path, "cannot decode pixel data: no decoder in this build supports transfer syntax " + ts +
                               (dec.bad() ? " (" + condition(dec) + ")" : std::string()));
  const bool is_signed = integer(ds, DCM_PixelRepresentation, 0) == 1;
  cv::Mat stored(static_cast<int>(rows), static_cast<int>(cols), bits_alloc == 8 ? CV_8U : (is_signed ? CV_16S : CV_16U));
  const size_t n = static_cast<size_t>(rows) * cols;
  unsigned long count = 0;
  if (bits_alloc == 8) {
    const Uint8* p = nullptr;
    if (ds->findAndGetUint8Array(DCM_PixelData, p, &count).bad() || !p || count < n)
      throw InputError(path, "cannot decode pixel data with transfer syntax " + ts + ": pixel data too short");
    std::copy(p, p + n, stored.ptr<Uint8>());
  } else {
    const Uint16* p = nullptr;
    if (ds->findAndGetUint16Array(DCM_PixelData, p, &count).bad() || !p || count < n)
      throw InputError(path, "cannot decode pixel data with transfer syntax " + ts + ": pixel data too short");
    // Only the stored bits count (PS3.5 8.1.1); signed values are sign-extended from the top stored bit.
    const uint32_t mask = bits_stored >= 16 ? 0xFFFFu : ((1u << bits_stored) - 1);
    auto* d = stored.ptr<Uint16>();
    for (size_t i = 0; i < n; ++i) {
      uint32_t v = p[i] & mask;
      if (is_signed && bits_stored < 16 && (v >> (bits_stored - 1)) & 1u) v |= ~mask & 0xFFFFu;
      d[i] = static_cast<Uint16>(v);
    }
  }
  if (bits_alloc == 8 && stored.depth() == CV_8U && is_signed) stored.convertTo(stored, CV_16S);  // int8 -> int16 values kept

  DicomImage out;
  std::vector<std::string> steps;
  // Modality LUT: rescale slope / intercept (float). The Modality LUT Sequence is not read here.
  if (ds->tagExists(DCM_ModalityLUTSequence))
    throw InputError(path, "Modality LUT Sequence is not supported by the native runner; use the Python runtime");
  cv::Mat values = stored;
  if (ds->tagExists(DCM_RescaleSlope)) {
    const double slope = number(ds, DCM_RescaleSlope).value_or(1.0), icpt = number(ds, DCM_RescaleIntercept).value_or(0.0);
    stored.convertTo(values, CV_64F, slope, icpt);
    steps.push_back("modality");
  }
  const std::string lut_explain = "VOILUTSequence";
  DcmItem* lut_item = nullptr;
  const bool has_lut = ds->findAndGetSequenceItem(DCM_VOILUTSequence, lut_item, 0).good() && lut_item &&
                       lut_item->tagExists(DCM_LUTData);
  const auto wc = number(ds, DCM_WindowCenter), ww = number(ds, DCM_WindowWidth);
  if (has_lut || (wc && ww)) {
    cv::Mat v64;
    values.convertTo(v64, CV_64F);
    cv::Mat unit(v64.size(), CV_64F);
    if (has_lut) {
      Uint16 desc_n = 0, desc_bits = 0;
      Sint32 first = 0;
      Uint16 uf = 0;
      lut_item->findAndGetUint16(DCM_LUTDescriptor, desc_n, 0);
      if (lut_item->findAndGetUint16(DCM_LUTDescriptor, uf, 1).good()) first = uf;
      lut_item->findAndGetUint16(DCM_LUTDescriptor, desc_bits, 2);
      const long entries = desc_n ? desc_n : 65536;
      const Uint16* lut = nullptr;
      unsigned long lut_count = 0;
      if (lut_item->findAndGetUint16Array(DCM_LUTData, lut, &lut_count).bad() || !lut || lut_count < 1)
        throw InputError(path, "invalid DICOM attributes (VOI LUT Data unreadable)");
      const long m = std::min<long>(entries, static_cast<long>(lut_count));
      const auto [lo_it, hi_it] = std::minmax_element(lut, lut + m);
      const double lo = *lo_it, hi = *hi_it;
      if (!(hi > lo)) throw InputError(path, "invalid DICOM attributes (ValueError: VOI LUT is constant)");
      for (int y = 0; y < v64.rows; ++y)
        for (int x = 0; x < v64.cols; ++x) {
          const long i = std::clamp<long>(std::lrint(v64.at<double>(y, x)) - first, 0, m - 1);
          unit.at<double>(y, x) = (lut[i] - lo) / (hi - lo);
        }
      steps.push_back("VOI LUT");
    } else {
      std::string func = str(ds, DCM_VOILUTFunction);
      if (func.empty()) func = "LINEAR";
      if (*ww <= 0 || (func == "LINEAR" && *ww < 1))
        throw InputError(path, "invalid DICOM attributes (ValueError: Window Width must be positive)");
      for (int y = 0; y < v64.rows; ++y)
        for (int x = 0; x < v64.cols; ++x) unit.at<double>(y, x) = window_unit(v64.at<double>(y, x), *wc, *ww, func);
      steps.push_back("window " + func);
    }
    unit.convertTo(out.pixels, CV_8U, 255.0, 0.5);  // clip(unit * 255 + 0.5) truncated: values are >= 0.5
    if (photometric == "MONOCHROME1") out.pixels = 255 - out.pixels;
  } else {
    out.pixels = values.depth() == CV_64F ? cv::Mat() : values;
    if (values.depth() == CV_64F) values.convertTo(out.pixels, CV_32F);
    if (photometric == "MONOCHROME1") {
      double lo, hi;
      cv::minMaxLoc(out.pixels, &lo, &hi);
      cv::Mat inv;
      out.pixels.convertTo(inv, out.pixels.depth() == CV_8U ? CV_8U : out.pixels.type(), -1.0, hi + lo);
      out.pixels = inv;
    }
  }
  if (photometric == "MONOCHROME1") steps.push_back("inverted");
  for (size_t i = 0; i < steps.size(); ++i) out.grey_transform = (i ? out.grey_transform + "+" : "") + steps[i];
  if (steps.empty()) out.grey_transform = "none";
  (void)lut_explain;

  for (const DcmTagKey& tag : {DCM_ImageLaterality, DCM_Laterality}) {
    const std::string v = str(ds, tag);
    if (v == "L" || v == "R") {
      out.laterality = v;
      break;
    }
  }
  out.view = view_of(ds);
  out.chest_wall = chest_wall(ds, out.laterality);
  out.spacing_mm = spacing(ds);
  return out;
}

}  // namespace mc
