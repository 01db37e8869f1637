#include "io.h"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <regex>
#include <sstream>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "hash.h"

namespace fs = std::filesystem;

namespace mc {

const std::vector<std::string> kImageSuffixes = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".dicom"};

namespace {

constexpr int kMinSide = 32;
constexpr size_t kHeadBytes = 64 * 1024;
const std::string kPngSig("\x89PNG\r\n\x1a\n", 8);
const std::string kPngIend("IEND\xae\x42\x60\x82", 8);
const std::vector<std::string> kOutputSuffixes = {"_tissue_seg.png", "_fgt_mask.png", "_cancer_prob.png",
                                                  "_lesion_mask.png", "_visualization.png"};

// A malformed header (the Python runtime's ValueError / struct.error in declared_size).
struct HeaderError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string one_line(const std::string& s) {  // " ".join(s.split())
  std::stringstream in(s);
  std::string word, out;
  while (in >> word) out += (out.empty() ? "" : " ") + word;
  return out;
}

// pathlib's suffix and stem of a file name: "a.b.png" -> (".png", "a.b"); ".png" -> ("", ".png").
std::string py_suffix(const std::string& name) {
  const size_t i = name.rfind('.');
  return (i != std::string::npos && i > 0 && i + 1 < name.size()) ? name.substr(i) : "";
}
std::string py_stem(const std::string& name) { return name.substr(0, name.size() - py_suffix(name).size()); }

std::vector<std::string> split(const std::string& path) {
  std::vector<std::string> parts;
  std::stringstream ss(path);
  for (std::string p; std::getline(ss, p, '/');)
    if (!p.empty() && p != ".") parts.push_back(p);
  return parts;
}

std::string basename(const std::string& path) {
  const auto parts = split(path);
  return parts.empty() ? "" : parts.back();
}

bool has_image_suffix(const std::string& name) {
  const std::string s = lower(py_suffix(name));
  return std::find(kImageSuffixes.begin(), kImageSuffixes.end(), s) != kImageSuffixes.end();
}

// 'png', 'jpeg', 'tiff', 'bigtiff', 'dicom' or "" from the first bytes of a file.
std::string sniff_format(const std::string& head) {
  if (head.compare(0, 8, kPngSig) == 0) return "png";
  if (head.compare(0, 3, "\xff\xd8\xff") == 0) return "jpeg";
  const std::string h4 = head.substr(0, 4);
  if (h4 == std::string("II*\0", 4) || h4 == std::string("MM\0*", 4)) return "tiff";
  if (h4 == std::string("II+\0", 4) || h4 == std::string("MM\0+", 4)) return "bigtiff";
  if (head.size() >= 132 && head.compare(128, 4, "DICM") == 0) return "dicom";
  return "";
}

std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

// Big- or little-endian unsigned integer of `n` bytes at `p`.
uint64_t uint_at(const std::string& s, size_t p, int n, bool big_endian) {
  if (p + n > s.size()) throw HeaderError("truncated header");
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) {
    const uint64_t byte = static_cast<unsigned char>(s[p + (big_endian ? i : n - 1 - i)]);
    v = (v << 8) | byte;
  }
  return v;
}

std::pair<uint64_t, uint64_t> png_size(const std::string& data) {
  if (data.size() < 24 || data.compare(12, 4, "IHDR") != 0) throw HeaderError("PNG without an IHDR header");
  return {uint_at(data, 16, 4, true), uint_at(data, 20, 4, true)};
}

// SOF markers carrying the frame size (ITU T.81 Table B.1).
bool is_sof(int m) { return m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC; }

// (width, height, offset of the first SOS marker), walking the marker segments (ITU T.81 B.1).
std::tuple<uint64_t, uint64_t, size_t> jpeg_size(const std::string& d) {
  size_t p = 2;
  std::optional<std::pair<uint64_t, uint64_t>> size;
  auto byte = [&](const char* what) -> int {
    if (p >= d.size()) throw HeaderError(what);
    return static_cast<unsigned char>(d[p++]);
  };
  while (true) {
    if (byte("JPEG ends before its first scan") != 0xFF) throw HeaderError("JPEG marker expected");
    int m = byte("JPEG ends before its first scan");
    while (m == 0xFF) m = byte("JPEG ends before its first scan");  // fill bytes
    if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) continue;            // standalone markers
    if (p + 2 > d.size()) throw HeaderError("JPEG segment truncated");
    const size_t n = uint_at(d, p, 2, true);
    p += 2;
    if (m == 0xDA) {
      if (!size) throw HeaderError("JPEG scan before any frame header");
      return {size->first, size->second, p - 4};
    }
    if (is_sof(m)) {
      if (p + 5 > d.size()) throw HeaderError("JPEG frame header truncated");
      size = std::make_pair(uint_at(d, p + 3, 2, true), uint_at(d, p + 1, 2, true));
    }
    if (n < 2) throw HeaderError("JPEG segment truncated");
    p += n - 2;
  }
}

// (width, height) of the first IFD: tags 256 ImageWidth, 257 ImageLength (TIFF 6.0 section 8).
std::pair<uint64_t, uint64_t> tiff_size(const std::string& d, bool big) {
  const bool be = d.compare(0, 2, "MM") == 0;
  size_t offset, entry;
  uint64_t count;
  if (big) {
    offset = uint_at(d, 8, 8, be);
    count = uint_at(d, offset, 8, be);
    offset += 8, entry = 20;
  } else {
    offset = uint_at(d, 4, 4, be);
    count = uint_at(d, offset, 2, be);
    offset += 2, entry = 12;
  }
  if (count > 4096) throw HeaderError("TIFF directory with " + std::to_string(count) + " entries");
  std::map<int, uint64_t> vals;
  for (uint64_t i = 0; i < count; ++i) {
    const size_t e = offset + i * entry;
    if (e + entry > d.size()) throw HeaderError("TIFF directory truncated");
    const int tag = static_cast<int>(uint_at(d, e, 2, be)), type = static_cast<int>(uint_at(d, e + 2, 2, be));
    if (tag != 256 && tag != 257) continue;
    const size_t v = e + 4 + (big ? 8 : 4);
    if (type == 3) vals[tag] = uint_at(d, v, 2, be);        // SHORT
    else if (type == 4) vals[tag] = uint_at(d, v, 4, be);   // LONG
    else if (type == 16) vals[tag] = uint_at(d, v, 8, be);  // LONG8 (BigTIFF)
  }
  if (!vals.count(256) || !vals.count(257)) throw HeaderError("TIFF without ImageWidth/ImageLength");
  return {vals[256], vals[257]};
}

void check_size(const std::string& path, int h, int w, int64_t max_pixels) {
  if (h < kMinSide || w < kMinSide)
    throw InputError(path, "image too small (" + std::to_string(w) + "x" + std::to_string(h) + " px; at least " +
                               std::to_string(kMinSide) + "x" + std::to_string(kMinSide) + " needed)");
  if (static_cast<int64_t>(h) * w > max_pixels)
    throw InputError(path, "image too large (" + std::to_string(w) + "x" + std::to_string(h) + " px > limit of " +
                               std::to_string(max_pixels) + " px)");
}

// Up to `limit` bytes of the file at `path`.
std::string read_prefix(const std::string& path, uintmax_t limit) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw InputError(path, std::string("cannot read file (") + std::strerror(errno) + ")");
  std::string data;
  std::vector<char> buf(1 << 20);
  while (data.size() < limit && f) {
    f.read(buf.data(), static_cast<std::streamsize>(std::min<uintmax_t>(buf.size(), limit - data.size())));
    data.append(buf.data(), static_cast<size_t>(f.gcount()));
  }
  if (f.bad()) throw InputError(path, "cannot read file (read error)");
  return data;
}

// PNG / JPEG / TIFF -> grey CV_8U, CV_16U or CV_32F (runtime/io.py read_raster).
cv::Mat read_raster(const std::string& path, int64_t max_pixels) {
  std::error_code ec;
  const uintmax_t size = fs::file_size(path, ec);
  const uintmax_t max_bytes = 8 * static_cast<uintmax_t>(max_pixels) + (64u << 20);  // 16-bit RGBA + 64 MiB
  // The whole file, unless it is absurdly large: then only its head, enough to report its declared size.
  const std::string data = read_prefix(path, size <= max_bytes ? UINTMAX_MAX : kHeadBytes);
  if (data.empty()) throw InputError(path, "empty file (0 bytes)");
  const std::string fmt = sniff_format(data.substr(0, 132));
  if (fmt.empty() || fmt == "dicom")
    throw InputError(path, "not a decodable image (the content is not PNG, JPEG or TIFF)");
  uint64_t w = 0, h = 0;
  size_t sos = 0;
  try {
    if (fmt == "png") std::tie(w, h) = png_size(data);
    else if (fmt == "jpeg") std::tie(w, h, sos) = jpeg_size(data);
    else std::tie(w, h) = tiff_size(data, fmt == "bigtiff");
  } catch (const HeaderError& e) {
    throw InputError(path, "not a decodable image (corrupt " + upper(fmt) + " header: " + e.what() + ")");
  }
  if (w * h > static_cast<uint64_t>(max_pixels))
    throw InputError(path, "declared image size " + std::to_string(w) + "x" + std::to_string(h) +
                               " px exceeds the limit of " + std::to_string(max_pixels) +
                               " px (raise --max-pixels to accept it)");
  if (size > max_bytes)
    throw InputError(path, "file of " + std::to_string(size) + " bytes is too large for a " + std::to_string(w) +
                               "x" + std::to_string(h) + " image");
  if (fmt == "png" && data.rfind(kPngIend) == std::string::npos)
    throw InputError(path, "truncated PNG (no IEND chunk; the file was cut short)");
  if (fmt == "jpeg") {
    const size_t eoi = data.rfind("\xff\xd9");
    if (eoi == std::string::npos || eoi <= sos)
      throw InputError(path, "truncated JPEG (no end-of-image marker; the file was cut short)");
  }
  cv::Mat img;
  try {
    const cv::Mat buf(1, static_cast<int>(data.size()), CV_8U, const_cast<char*>(data.data()));
    img = cv::imdecode(buf, cv::IMREAD_UNCHANGED);
  } catch (const cv::Exception&) {
    img.release();
  }
  if (img.empty()) throw InputError(path, "not a decodable image (" + upper(fmt) + " data is corrupt or truncated)");
  if (img.channels() == 3 || img.channels() == 4) {
    cv::Mat grey;
    cv::cvtColor(img, grey, img.channels() == 4 ? cv::COLOR_BGRA2GRAY : cv::COLOR_BGR2GRAY);
    img = grey;
  } else if (img.channels() != 1) {
    throw InputError(path, "not a decodable image (" + std::to_string(img.channels()) + " channels)");
  }
  if (img.depth() != CV_8U && img.depth() != CV_16U) {
    img.convertTo(img, CV_32F);
    if (!cv::checkRange(img)) throw InputError(path, "image holds NaN or infinite values");
  }
  check_size(path, img.rows, img.cols, max_pixels);
  return img;
}

}  // namespace

InputError::InputError(const std::string& path, const std::string& r)
    : std::runtime_error(path + ": " + one_line(r)), reason(one_line(r)) {}

bool is_dicom(const std::string& path) {
  const std::string suffix = lower(py_suffix(basename(path)));
  const bool dicom_suffix = suffix == ".dcm" || suffix == ".dicom";
  std::ifstream f(path, std::ios::binary);
  if (!f) return dicom_suffix;
  std::string head(132, '\0');
  f.read(head.data(), 132);
  head.resize(static_cast<size_t>(f.gcount()));
  const std::string fmt = sniff_format(head);
  return fmt == "dicom" || (fmt.empty() && dicom_suffix);
}

void check_readable(const std::string& path) {
  std::error_code ec;
  const auto link = fs::symlink_status(path, ec);
  const auto st = fs::status(path, ec);
  if (fs::is_symlink(link) && !fs::exists(st)) throw InputError(path, "broken symbolic link (its target does not exist)");
  if (!fs::exists(st)) throw InputError(path, "file not found");
  if (fs::is_directory(st)) throw InputError(path, "is a directory");
  if (!fs::is_regular_file(st)) throw InputError(path, "not a regular file");
  if (access(path.c_str(), R_OK) != 0) throw InputError(path, "permission denied (file not readable)");
}

cv::Mat read_image(const std::string& path, int64_t max_pixels) {
  check_readable(path);
  if (is_dicom(path))
    throw InputError(path, "DICOM: read it with read_dicom (dicom.h)");
  return read_raster(path, max_pixels);
}

std::string py_path(const std::string& path) {
  std::string out = (!path.empty() && path[0] == '/') ? "/" : "";
  for (const auto& p : split(path)) out += (out.empty() || out == "/" ? "" : "/") + p;
  return out.empty() ? "." : out;
}

std::vector<std::string> find_images(const std::string& root_arg, bool recursive, const std::string& exclude) {
  const std::string root = py_path(root_arg);
  std::error_code ec;
  if (!fs::is_directory(root, ec)) throw std::invalid_argument(root + ": not a folder");
  auto join = [](const std::string& dir, const std::string& name) {
    return dir == "." ? name : (dir == "/" ? "/" + name : dir + "/" + name);
  };
  std::vector<std::string> out;
  auto consider = [&](const std::string& p) {
    std::error_code e2;
    const std::string name = basename(p);
    if (fs::is_symlink(fs::symlink_status(p, e2)) && !fs::exists(p, e2)) {
      if (has_image_suffix(name) || py_suffix(name).empty()) out.push_back(p);
    } else if (fs::is_regular_file(p, e2) && (has_image_suffix(name) || (py_suffix(name).empty() && is_dicom(p)))) {
      out.push_back(p);
    }
  };
  if (!recursive) {
    for (const auto& e : fs::directory_iterator(root, ec)) {
      const std::string p = join(root, e.path().filename().string());
      std::error_code e2;
      if (!fs::is_directory(p, e2) || fs::is_symlink(fs::symlink_status(p, e2))) consider(p);
    }
  } else {
    const fs::path skip = exclude.empty() ? fs::path() : fs::weakly_canonical(exclude, ec);
    std::vector<std::string> stack = {root};  // os.walk, top-down, links to folders not followed
    while (!stack.empty()) {
      const std::string d = stack.back();
      stack.pop_back();
      std::error_code e2;
      if (!skip.empty() && fs::weakly_canonical(d, e2) == skip) continue;
      std::vector<std::string> dirs;
      for (const auto& e : fs::directory_iterator(d, e2)) {
        const std::string p = join(d, e.path().filename().string());
        std::error_code e3;
        if (fs::is_directory(fs::symlink_status(p, e3))) dirs.push_back(p);
        else if (!fs::is_directory(p, e3)) consider(p);  // links to folders are neither walked nor files
      }
      if (e2) std::cerr << "WARNING cannot list folder " << d << ": " << e2.message() << "\n";
      stack.insert(stack.end(), dirs.begin(), dirs.end());
    }
  }
  // pathlib orders paths by their parts, not by the joined string.
  std::sort(out.begin(), out.end(), [](const std::string& a, const std::string& b) { return split(a) < split(b); });
  return out;
}

std::string relpath(const std::string& file, const std::string& root) {
  const auto f = split(file), r = split(py_path(root));
  const bool under = (file[0] == '/') == (py_path(root)[0] == '/') && r.size() < f.size() &&
                     std::equal(r.begin(), r.end(), f.begin());
  std::string out;
  for (size_t i = under ? r.size() : 0; i < f.size(); ++i) out += (out.empty() ? "" : "/") + f[i];
  return (!under && file[0] == '/') ? "/" + out : out;
}

std::map<std::string, std::string> unique_stems(const std::vector<std::string>& files, const std::string& root) {
  std::map<std::string, int> counts;
  for (const auto& f : files) ++counts[lower(py_stem(basename(f)))];
  std::map<std::string, std::string> out;
  for (const auto& f : files) {
    const std::string stem = py_stem(basename(f));
    out[f] = counts[lower(stem)] == 1 ? stem : stem + "__" + sha1_hex(relpath(f, root)).substr(0, 8);
  }
  return out;
}

void atomic_write_bytes(const std::string& path_arg, const std::string& data) {
  const fs::path path(path_arg);
  const fs::path dir = path.parent_path().empty() ? fs::path(".") : path.parent_path();
  std::error_code ec;
  fs::create_directories(dir, ec);
  std::string tmp = (dir / ("." + path.filename().string() + ".XXXXXX.tmp")).string();
  const int fd = mkstemps(tmp.data(), 4);  // fills in the X's
  if (fd < 0) throw WriteError(path_arg + ": cannot create a temporary file (" + std::strerror(errno) + ")");
  const char* failed = nullptr;
  int err = 0;
  for (size_t done = 0; done < data.size() && !failed;) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n > 0) done += static_cast<size_t>(n);
    else if (errno != EINTR) failed = "write", err = errno;
  }
  if (!failed && ::fsync(fd) != 0) failed = "fsync", err = errno;
  if (::close(fd) != 0 && !failed) failed = "close", err = errno;
  if (!failed && std::rename(tmp.c_str(), path_arg.c_str()) != 0) failed = "rename", err = errno;
  if (failed) {
    ::unlink(tmp.c_str());
    throw WriteError(path_arg + ": " + failed + " failed (" + std::strerror(err) + ")");
  }
}

int remove_temp_files(const std::string& out_dir) {
  static const std::regex temp_name(R"(^\.(.+)\.[A-Za-z0-9_]+\.tmp$)");
  int removed = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(out_dir, ec)) {
    std::smatch m;
    const std::string name = e.path().filename().string();
    if (!std::regex_match(name, m, temp_name) || !e.is_regular_file(ec)) continue;
    const std::string target = m[1];
    bool ours = target == "summary.csv" || target == "summary.json";
    for (const auto& s : kOutputSuffixes)
      ours = ours || (target.size() >= s.size() && target.compare(target.size() - s.size(), s.size(), s) == 0);
    if (ours && fs::remove(e.path(), ec)) ++removed;
  }
  return removed;
}

OutputLock::OutputLock(const std::string& out_dir) {
  fd_ = ::open((out_dir + "/.runtime.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw WriteError(out_dir + "/.runtime.lock: " + std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd_);
    throw std::runtime_error(out_dir + ": another batch is writing to this output folder");
  }
}

OutputLock::~OutputLock() {
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace mc
