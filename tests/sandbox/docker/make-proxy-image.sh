#!/bin/sh
# Builds a tiny stand-in for istio/proxyv2 from busybox-static and imports it into a Docker
# engine (no registry is reachable here):
#   make-proxy-image.sh SOCKET IMAGE      e.g. make-proxy-image.sh /tmp/d/docker.sock docker.io/istio/proxyv2:1.8.6
# The image's /entrypoint behaves like pilot-agent as far as onboard cares: it accepts
# "proxy sidecar ..." arguments, requires the env file's variables (POD_NAME, POD_NAMESPACE,
# CA_ADDR) and the bind-mounted token and root cert, then runs forever, copying the token it
# sees to /tmp/seen-token every second (a test reads it with docker exec).
set -eu
sock=${1:?usage: make-proxy-image.sh SOCKET IMAGE}
image=${2:?usage: make-proxy-image.sh SOCKET IMAGE}
docker_bin=${DOCKER_CLIENT:-/usr/bin/docker}
busybox=$(command -v busybox-static 2>/dev/null || true)
[ -z "$busybox" ] && [ -x /bin/busybox ] && busybox=/bin/busybox
[ -z "$busybox" ] && busybox=$(command -v busybox 2>/dev/null || true)
if [ -z "$busybox" ]; then
  echo "make-proxy-image: busybox not found (install busybox-static)" >&2
  exit 2
fi
root=$(mktemp -d "${TMPDIR:-/tmp}/proxy-rootfs.XXXXXX")
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/tmp" "$root/etc" "$root/var/run/secrets" "$root/usr/local/bin"
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
chmod 1777 "$root/tmp"
echo "root:x:0:0:root:/:/bin/sh" >"$root/etc/passwd"
echo "root:x:0:" >"$root/etc/group"
cat >"$root/entrypoint" <<'EOS'
#!/bin/sh
# pilot-agent stand-in: "proxy sidecar [flags...]".
if [ "${1:-}" != proxy ] || [ "${2:-}" != sidecar ]; then
  echo "entrypoint: expected 'proxy sidecar ...', got: $*" >&2
  exit 64
fi
for v in POD_NAME POD_NAMESPACE CA_ADDR; do
  eval "val=\${$v:-}"
  if [ -z "$val" ]; then
    echo "entrypoint: $v is not set: was the env file (--env-file sidecar.env) given?" >&2
    exit 65
  fi
done
for f in /var/run/secrets/tokens/istio-token /var/run/secrets/istio/root-cert.pem; do
  if [ ! -s "$f" ]; then
    echo "entrypoint: $f is missing or empty: is it bind-mounted?" >&2
    exit 66
  fi
done
echo "proxy stand-in for $POD_NAMESPACE/$POD_NAME started with: $*"
echo "$*" >/tmp/args
while :; do
  cat /var/run/secrets/tokens/istio-token >/tmp/seen-token.new 2>/dev/null && mv /tmp/seen-token.new /tmp/seen-token
  sleep 1
done
EOS
chmod 0755 "$root/entrypoint"
ln -sf /entrypoint "$root/usr/local/bin/pilot-agent"
tar -C "$root" -c . | "$docker_bin" -H "unix://$sock" import --change 'ENTRYPOINT ["/entrypoint"]' - "$image" >/dev/null
echo "$image"
