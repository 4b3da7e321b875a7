#!/usr/bin/env bash
# napari's GUI tests need an X server (Xvfb, started by pytest-xvfb) and Qt's X11 libraries.
# Install them from Debian when missing and we are allowed to (root, or passwordless sudo).
set -euo pipefail
packages=(xvfb xauth libxcb-icccm4 libxcb-keysyms1 libgl1 libegl1 libgl1-mesa-dri libglx-mesa0
  libxkbcommon-x11-0 libxcb-cursor0 libxcb-image0 libxcb-randr0 libxcb-render-util0 libxcb-shape0
  libxcb-xfixes0 libxcb-xkb1 libxcb-glx0 libxcb-sync1 libxcb-shm0 libx11-xcb1 libdbus-1-3 libfontconfig1)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; else
  echo "missing Debian packages for the GUI tests: ${missing[*]}" >&2
  echo "install them with: sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
