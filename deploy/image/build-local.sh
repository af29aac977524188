#!/usr/bin/env bash
# Builds the headless-dns image on a machine with no registry: FROM scratch, holding the binary
# that `cargo build --release` made, the shared libraries it loads (as `ldd` lists them: the
# dynamic loader, libc, libm, libgcc_s, …) and an /etc/passwd naming user 65532. The result runs
# as deploy/deployment.yaml runs the image built by the top-level Containerfile: same entrypoint,
# same user, no shell. Nothing else is needed: jemalloc and ring are linked in, the API server's
# CA comes with the ServiceAccount mount, forwarding is plain DNS (no CA bundle), and the runtime
# provides /etc/resolv.conf and /etc/hosts.
#
#     cargo build --release && deploy/image/build-local.sh [BINARY] [TAG]
#
# BINARY defaults to target/release/headless-dns, TAG to headless-dns:0.1.0 (the image that
# deploy/deployment.yaml names). BUILDER=buildah uses `buildah bud` instead of `podman build`.
# Save it for another machine or a kind cluster with `podman save headless-dns:0.1.0 -o image.tar`.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${1:-$root/target/release/headless-dns}
tag=${2:-headless-dns:0.1.0}
builder=${BUILDER:-podman}

[ -x "$bin" ] || { echo "no binary at $bin: run cargo build --release first" >&2; exit 1; }

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/etc"
# Without debug info, as the Containerfile builds it (symbols stay, for backtraces and profiles).
if command -v strip >/dev/null 2>&1; then
  strip --strip-debug -o "$ctx/rootfs/headless-dns" "$bin"
else
  cp "$bin" "$ctx/rootfs/headless-dns"
fi
chmod 755 "$ctx/rootfs/headless-dns"

# Each library at the path the loader finds it: "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)"
# and, for the loader itself, "/lib64/ld-linux-x86-64.so.2 (0x…)" (the ELF interpreter path). A
# static binary has none ("not a dynamic executable", or "statically linked").
libs=$(ldd "$bin" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' || true)
for lib in $libs; do
  mkdir -p "$ctx/rootfs$(dirname "$lib")"
  cp -L "$lib" "$ctx/rootfs$lib"
done

# The distroless names for 65532, so tools that map the user (ps, logs) show "nonroot".
cat >"$ctx/rootfs/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
PASSWD
cat >"$ctx/rootfs/etc/group" <<'GROUP'
root:x:0:
nonroot:x:65532:
GROUP

cat >"$ctx/Containerfile" <<'CONTAINERFILE'
FROM scratch
COPY rootfs/ /
USER 65532:65532
EXPOSE 53/udp 53/tcp 8080/tcp
ENTRYPOINT ["/headless-dns"]
CONTAINERFILE

case "$builder" in
  buildah) buildah bud --quiet -t "$tag" -f "$ctx/Containerfile" "$ctx" ;;
  *) "$builder" build --quiet -t "$tag" -f "$ctx/Containerfile" "$ctx" ;;
esac
echo "built $tag from $bin (libraries: $(echo $libs))" >&2
