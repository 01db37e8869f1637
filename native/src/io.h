// Files: reading mammograms (PNG / JPEG / TIFF through OpenCV, with the header checks of
// runtime/io.py), finding them in a folder and naming their outputs (runtime/batch.py), atomic
// writes, the output folder's lock and the clean-up of an interrupted run's temp files.
#pragma once

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

namespace mc {

// Suffixes a batch run picks up (case-insensitive); extension-less files are probed for DICOM.
extern const std::vector<std::string> kImageSuffixes;
constexpr int64_t kDefaultMaxPixels = 80000000;

// A file that cannot be used as a mammogram; `reason` (one line) is the summary's error column.
struct InputError : std::runtime_error {
  InputError(const std::string& path, const std::string& reason);
  std::string reason;
};

// An output that could not be written (the Python runtime's OSError).
struct WriteError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// True for the 'DICM' magic at byte 128, or a .dcm/.dicom suffix on a file with no raster signature.
bool is_dicom(const std::string& path);

// Grey pixels, CV_8U, CV_16U or CV_32F (H, W). DICOM is refused (OpenCV cannot decode it).
// The declared size is checked against `max_pixels` before decoding; truncated PNG/JPEG are refused.
// Throws InputError with the Python runtime's reasons.
cv::Mat read_image(const std::string& path, int64_t max_pixels = kDefaultMaxPixels);

// The file checks read_image makes before decoding (exists, not a folder, readable; broken links named).
// Throws InputError.
void check_readable(const std::string& path);

// A path the way Python's pathlib prints it ("a//b/./c/" -> "a/b/c").
std::string py_path(const std::string& path);

// Image files under `root`, sorted as Python sorts paths; broken symbolic links with an image (or no)
// suffix included so that they are reported. Recursive walks skip `exclude` (the output folder) and
// do not follow links to folders. Throws std::invalid_argument("ROOT: not a folder").
std::vector<std::string> find_images(const std::string& root, bool recursive, const std::string& exclude = "");

// `file` relative to `root`, '/'-separated (the summary's relpath).
std::string relpath(const std::string& file, const std::string& root);

// Output name per file: its stem; names that collide (case-insensitively) get "__" and the first
// 8 hex digits of the sha1 of the relative path appended.
std::map<std::string, std::string> unique_stems(const std::vector<std::string>& files, const std::string& root);

// Temp file '.<name>.<random>.tmp' in the same folder, fsync, rename over `path`. Throws WriteError.
void atomic_write_bytes(const std::string& path, const std::string& data);

// Removes an interrupted run's '.<output name>.<random>.tmp' files from `out_dir`; returns how many.
int remove_temp_files(const std::string& out_dir);

// Exclusive flock on out_dir/.runtime.lock for the object's lifetime (the same lock as the Python
// runtime). Throws std::runtime_error when another batch holds it.
class OutputLock {
 public:
  explicit OutputLock(const std::string& out_dir);
  ~OutputLock();
  OutputLock(const OutputLock&) = delete;
  OutputLock& operator=(const OutputLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace mc
