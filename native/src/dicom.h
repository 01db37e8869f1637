// DICOM mammograms through DCMTK, the native counterpart of runtime/dicom.py: stored values -> Modality LUT
// (rescale) -> VOI (window LINEAR / LINEAR_EXACT / SIGMOID, or VOI LUT Sequence) -> MONOCHROME1 inverted
// (PS3.3 C.11, C.7.6.3.1.2); orientation and pixel spacing from the tags with the same rules.
// RLE, JPEG (baseline, extended, lossless) and JPEG-LS decode through DCMTK's codecs; JPEG 2000 has no
// decoder in DCMTK and is refused with a per-file error naming the transfer syntax.
// No patient data (name, ID, birth date) ever reaches a message.
#pragma once

#include <optional>
#include <string>
#include <utility>

#include <opencv2/core.hpp>

namespace mc {

struct DicomImage {
  cv::Mat pixels;           // CV_8U after a VOI step, else the modality values: CV_16U/CV_16S, or CV_32F after a rescale
  std::string laterality;   // "L", "R" or ""
  std::string view;         // e.g. "MLO", "CC" or ""
  std::string chest_wall;   // "left", "right" or "" (estimated from the image)
  std::string grey_transform = "none";  // e.g. "modality+window LINEAR+inverted"
  std::optional<std::pair<double, double>> spacing_mm;  // (row, column) at the breast
};

// Reads and decodes one DICOM file. Throws InputError (io.h) with the Python runtime's reasons.
DicomImage read_dicom(const std::string& path, long long max_pixels);

}  // namespace mc
