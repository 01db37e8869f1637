#!/usr/bin/env bash
# Debian packages the test suite needs beyond Python: a virtual display for the viewer test
# (xvfb, xdotool), the native runner's build dependencies (OpenCV 4.6 with dnn, nlohmann-json, the ONNX protobuf
# classes, DCMTK's libraries; dpkg-dev and file for its .deb), and the
# DICOM counterparts of the node's tests: Orthanc (a PACS), DCMTK (echoscu/storescu), dicom3tools (dciodvfy), openssl (a test certificate).
# Installs only what is missing; needs root (CI runs as root) or passwordless sudo.
set -euo pipefail
PKGS=(xvfb xdotool libgl1 libglib2.0-0 libopencv-dev nlohmann-json3-dev libssl-dev libonnx-dev libprotobuf-dev libdcmtk-dev cmake g++ make dpkg-dev file orthanc dcmtk dicom3tools openssl)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo -n"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
