#!/usr/bin/env bash
# Installs, idempotently, every Debian package onboard builds, tests and demos with.
# Safe to run repeatedly; does nothing when everything is present.
set -euo pipefail
pkgs=(
  build-essential cmake pkg-config git
  libyaml-cpp-dev libssh2-1-dev libcurl4-openssl-dev libssl-dev zlib1g-dev
  libcli11-dev nlohmann-json3-dev libboost-dev libboost-graph-dev
  libgtest-dev libgmock-dev libvalijson-dev libcpp-httplib-dev
  openssh-server openssh-client
  docker.io busybox-static
  clang-14 libclang-rt-14-dev
  procps iproute2 ca-certificates jq curl
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# A real kubectl: the image may have one; otherwise Debian's kubernetes-client.
if ! command -v kubectl >/dev/null 2>&1 || ! kubectl version --client >/dev/null 2>&1; then
  missing+=(kubernetes-client)
fi
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "setup: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
