#!/usr/bin/env bash
# Builds both images with no registry at all, as OCI archives, from the same files the
# multi-stage Dockerfiles use:
#   target/images/flink-agent.oci.tar     image flink-agent:<version>
#   target/images/flink-webhook.oci.tar   image flink-webhook:<version>
#   target/images/<name>.cdx.json         CycloneDX SBOM of what is inside (README: Images)
#   target/images/<name>.revision         the git revision packed (the image's label)
# How: the binary is (re)built by scripts/build-static.sh (cargo rebuilds whatever is older than
# its sources), docker/rootfs.sh makes the root, and buildah builds the Dockerfile's `runtime`
# stage, text unchanged but for its one `COPY --from=build /rootfs/ /`, which takes that root
# from a local directory instead of the build stage. Storage is private (vfs) under
# target/images/, so nothing of the machine's container storage is read or changed.
#   scripts/build-images.sh [flink-agent] [flink-webhook]     (default: both)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CYCLONEDX_VERSION=0.5.9
OUT="${CARGO_TARGET_DIR:-$ROOT/target}/images"
case "$OUT" in /*) ;; *) OUT="$ROOT/$OUT" ;; esac
images=("$@")
[ "${#images[@]}" -gt 0 ] || images=(flink-agent flink-webhook)
for name in "${images[@]}"; do
  case "$name" in
    flink-agent | flink-webhook) ;;
    *) echo "build-images: unknown image '$name' (flink-agent or flink-webhook)" >&2; exit 2 ;;
  esac
done

# --- tools: buildah (Debian), readelf, the CA bundle, jq; cargo-cyclonedx (crates.io, pinned)
need_apt=()
command -v buildah >/dev/null || need_apt+=(buildah)
command -v readelf >/dev/null || need_apt+=(binutils)
command -v jq >/dev/null || need_apt+=(jq)
[ -s /etc/ssl/certs/ca-certificates.crt ] || need_apt+=(ca-certificates)
if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "build-images: installing Debian packages: ${need_apt[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "build-images: missing ${need_apt[*]}; on Debian or Ubuntu: sudo apt-get install ${need_apt[*]}" >&2
    exit 1
  fi
fi
CYCLONEDX="$ROOT/.tools/bin/cargo-cyclonedx"
if ! "$CYCLONEDX" --help >/dev/null 2>&1 \
  || [ "$(cat "$ROOT/.tools/cargo-cyclonedx.version" 2>/dev/null)" != "$CYCLONEDX_VERSION" ]; then
  echo "build-images: installing cargo-cyclonedx $CYCLONEDX_VERSION from crates.io (~3 min)" >&2
  cargo install -q --locked --root "$ROOT/.tools" "cargo-cyclonedx@$CYCLONEDX_VERSION"
  echo "$CYCLONEDX_VERSION" >"$ROOT/.tools/cargo-cyclonedx.version"
fi

version="$(cargo metadata --no-deps --format-version 1 --locked \
  | jq -r '.packages[] | select(.name == "flink-agent") | .version')"
source_url="$(cargo metadata --no-deps --format-version 1 --locked \
  | jq -r '.packages[] | select(.name == "flink-agent") | .repository // empty')"
[ -n "$source_url" ] || { echo "build-images: no repository in Cargo.toml (the source label)" >&2; exit 1; }
# What the binaries embed (build/revision.rs): the same rule, so the check below compares like
# with like.
revision="${FLINK_INJECTOR_REVISION:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"

STORE=(--root "$OUT/.storage" --runroot "$OUT/.runroot" --storage-driver vfs)
mkdir -p "$OUT"
host="$(rustc -vV | sed -n 's/^host: //p')"

for name in "${images[@]}"; do
  echo "build-images: $name" >&2
  bin="$(scripts/build-static.sh "$name")"
  case "$bin" in /*) ;; *) bin="$ROOT/$bin" ;; esac
  # Never pack a stale binary: what it says it was built from must be what is checked out.
  says="$("$bin" --version)"
  case "$says" in
    *"(revision $revision)") ;;
    *) echo "build-images: $bin says '$says', the tree is at $revision: not packing it" >&2; exit 1 ;;
  esac

  ctx="$OUT/$name.context"
  docker/rootfs.sh "$bin" "$ctx/rootfs"
  dockerfile="docker/${name#flink-}.Dockerfile"
  from_line='FROM scratch AS runtime'
  copy_line='COPY --from=build /rootfs/ /'
  [ "$(grep -cxF "$from_line" "$dockerfile")" = 1 ] && [ "$(grep -cxF "$copy_line" "$dockerfile")" = 1 ] || {
    echo "build-images: $dockerfile must have exactly one '$from_line' and one '$copy_line'" >&2
    exit 1
  }
  sed -n "/^$from_line\$/,\$p" "$dockerfile" | sed "s#^$copy_line\$#COPY rootfs/ /#" >"$ctx/Containerfile"

  tag="localhost/$name:$version"
  buildah "${STORE[@]}" rmi -f "$tag" >/dev/null 2>&1 || true
  buildah "${STORE[@]}" bud -q --layers=false --format oci \
    --build-arg "VERSION=$version" --build-arg "REVISION=$revision" --build-arg "SOURCE=$source_url" \
    -f "$ctx/Containerfile" -t "$tag" "$ctx" >/dev/null
  rm -f "$OUT/$name.oci.tar"
  buildah "${STORE[@]}" push -q "$tag" "oci-archive:$OUT/$name.oci.tar:$name:$version"
  buildah "${STORE[@]}" rmi -f "$tag" >/dev/null
  echo "$revision" >"$OUT/$name.revision"

  # SBOM: the crates of this binary for this target (no dev or build dependencies), plus the
  # Debian static libraries linked into it, which no Cargo.lock lists.
  "$CYCLONEDX" cyclonedx -q --manifest-path "$ROOT/${name#flink-}/Cargo.toml" -f json \
    --spec-version 1.5 --no-build-deps --target "$host" --override-filename "$name.cdx"
  debs=(libc6-dev)
  [ "$name" = flink-agent ] && debs+=(libssl-dev zlib1g-dev)
  native='[]'
  for deb in "${debs[@]}"; do
    v="$(dpkg-query -W -f '${Version}' "$deb")"
    a="$(dpkg-query -W -f '${Architecture}' "$deb")"
    native="$(jq -c --arg n "$deb" --arg v "$v" --arg a "$a" \
      '. + [{type: "library", "bom-ref": ("pkg:deb/debian/" + $n + "@" + $v + "?arch=" + $a),
             name: $n, version: $v, scope: "required",
             description: "statically linked from the build machine'"'"'s Debian package",
             purl: ("pkg:deb/debian/" + $n + "@" + $v + "?arch=" + $a)}]' <<<"$native")"
  done
  jq --argjson native "$native" '.components += $native' \
    "$ROOT/${name#flink-}/$name.cdx.json" >"$OUT/$name.cdx.json"
  # cargo-cyclonedx writes one file beside every workspace member's Cargo.toml (logs/ too).
  rm -f "$ROOT"/*/"$name.cdx.json"

  # The archive holds the layer gzip-compressed, as a registry stores and sends it; unpacked it
  # is the root's size.
  size="$(stat -c %s "$OUT/$name.oci.tar")"
  unpacked="$(du -sb "$ctx/rootfs" | cut -f1)"
  printf 'build-images: %s: %s (%s bytes compressed, %s unpacked), SBOM %s (%s components)\n' \
    "$name:$version" "$OUT/$name.oci.tar" "$size" "$unpacked" "$OUT/$name.cdx.json" \
    "$(jq '.components | length' "$OUT/$name.cdx.json")" >&2
done
rm -rf "$OUT/.storage" "$OUT/.runroot"
