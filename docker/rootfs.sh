#!/usr/bin/env bash
# The one definition of what an image's root filesystem holds, used by the multi-stage
# Dockerfiles (their build stage) and by scripts/build-images.sh (no registry): a root made from
# scratch around one statically linked binary.
#   docker/rootfs.sh BINARY OUT_DIR
# OUT_DIR is replaced. It gets:
#   /usr/local/bin/<binary>            the static executable (scripts/build-static.sh)
#   /etc/passwd, /etc/group            root and nonroot (65532), as distroless has them, so the
#                                      user the images run as has a name
#   /etc/nsswitch.conf                 hosts: files first, so the pod's /etc/hosts (hostAliases,
#                                      which the webhook injects) wins over DNS; static glibc
#                                      otherwise asks DNS first and stops at its NXDOMAIN
#   /etc/ssl/certs/ca-certificates.crt Debian's CA bundle, for TLS to Kafka (SSL_CERT_FILE in the
#                                      Dockerfiles points OpenSSL there)
#   /tmp (1777)                        empty, for runs without a read-only root
# Nothing else: no shell, no loader, no shared library (both binaries are static; checked here).
set -euo pipefail
bin="${1:?usage: docker/rootfs.sh BINARY OUT_DIR}"
out="${2:?usage: docker/rootfs.sh BINARY OUT_DIR}"
ca=/etc/ssl/certs/ca-certificates.crt

[ -x "$bin" ] || { echo "rootfs: $bin is not an executable" >&2; exit 1; }
if ! [ -s "$ca" ]; then
  echo "rootfs: $ca is missing: install Debian's ca-certificates package" >&2
  exit 1
fi
command -v readelf >/dev/null || { echo "rootfs: readelf is missing: install Debian's binutils" >&2; exit 1; }
# A dynamic executable in a root without a loader fails only when the container starts.
if LC_ALL=C readelf -l "$bin" 2>/dev/null | grep -q 'Requesting program interpreter'; then
  echo "rootfs: $bin is dynamically linked; build it with scripts/build-static.sh" >&2
  exit 1
fi

rm -rf "$out"
mkdir -p "$out/usr/local/bin" "$out/etc/ssl/certs" "$out/tmp"
chmod 0755 "$out" "$out/usr" "$out/usr/local" "$out/usr/local/bin" "$out/etc" "$out/etc/ssl" "$out/etc/ssl/certs"
chmod 1777 "$out/tmp"
install -m 0755 "$bin" "$out/usr/local/bin/$(basename "$bin")"
install -m 0644 "$ca" "$out/etc/ssl/certs/ca-certificates.crt"
printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
  'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
  'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >"$out/etc/passwd"
printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'nonroot:x:65532:' >"$out/etc/group"
printf '%s\n' 'passwd: files' 'group: files' 'hosts: files dns' >"$out/etc/nsswitch.conf"
chmod 0644 "$out/etc/passwd" "$out/etc/group" "$out/etc/nsswitch.conf"
