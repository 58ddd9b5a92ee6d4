#!/usr/bin/env bash
# Installs the peer tools the end-to-end tests (internal/testenv) start for
# real: containerd (containerd + ctr), skopeo, docker-registry and tar from
# Debian, then builds the Go peer clients pinned in tools/go.mod (crane, oras)
# into the cache internal/testenv's PeerBinary reads:
# $MODELCAR_TOOLS_BIN, or ~/.cache/modelcar-testenv/tools, as NAME-VERSION.
# Debian/Ubuntu only; run as root (or with sudo available). Idempotent: when
# every package is already installed it does nothing, not even apt-get update,
# and a peer binary already in the cache is not rebuilt.
set -euo pipefail

# containerd's ctr imports the real test node's pause image; gcc, libc6-dev,
# pkg-config and libseccomp-dev build its runc (cgo, seccomp);
# containernetworking-plugins gives its pods a bridge network; busybox-static
# is the shell base of the modelcars its tests run.
packages=(docker-registry skopeo containerd tar iproute2 util-linux busybox-static gcc libc6-dev pkg-config libseccomp-dev containernetworking-plugins)

missing=()
for pkg in "${packages[@]}"; do
	# dpkg -s succeeds for removed-but-not-purged packages too; require the
	# "install ok installed" state.
	if [[ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)" != "install ok installed" ]]; then
		missing+=("$pkg")
	fi
done

if ((${#missing[@]} == 0)); then
	echo "install-deps: all installed: ${packages[*]}"
else
	sudo=()
	if ((EUID != 0)); then
		sudo=(sudo)
	fi

	echo "install-deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	# Another apt (an unattended upgrade, a parallel job) holds the dpkg
	# lock for a while: wait for it instead of failing.
	lock=(-o DPkg::Lock::Timeout=600)
	"${sudo[@]}" apt-get "${lock[@]}" update -qq
	"${sudo[@]}" apt-get "${lock[@]}" install -y --no-install-recommends "${missing[@]}"
fi

# Peer clients built from source at the versions tools/go.mod pins. Tests
# build a missing one themselves (internal/testenv/peers.go); building them
# here keeps that minute out of the test run. Same file names, same flags.
tools_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/../tools" && pwd)"
tools_bin="${MODELCAR_TOOLS_BIN:-${HOME:?}/.cache/modelcar-testenv/tools}"
peers=(
	"crane github.com/google/go-containerregistry github.com/google/go-containerregistry/cmd/crane"
	"oras oras.land/oras oras.land/oras/cmd/oras"
)
if ! command -v go >/dev/null 2>&1; then
	echo "install-deps: go not found; not building crane and oras" >&2
	exit 0
fi
for peer in "${peers[@]}"; do
	read -r name module pkg <<<"$peer"
	# The version tools/go.mod requires (go.mod only: no network).
	version="$(cd "$tools_dir" && GOWORK=off GOFLAGS=-mod=mod go list -m -f '{{.Version}}' "$module")"
	bin="$tools_bin/$name-$version"
	if [[ -x "$bin" ]]; then
		continue
	fi
	echo "install-deps: building $name $version into $tools_bin"
	mkdir -p "$tools_bin"
	tmp="$bin.tmp-$$"
	trap 'rm -f "$tmp"' EXIT
	(cd "$tools_dir" && CGO_ENABLED=0 GOWORK=off GOFLAGS=-mod=mod go build -trimpath -o "$tmp" "$pkg")
	mv -f "$tmp" "$bin"
	trap - EXIT
done

# --- Kubernetes test cluster (internal/testcluster) --------------------------
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok, helm and
# kubeconform, built from the nested modules tools/etcd, tools/k8s and
# tools/kwok into the same cache as NAME-VERSION. The first build takes about
# ten minutes and 3 GB of memory; afterwards this step takes seconds (a
# binary already in the cache is not rebuilt).
cluster_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cluster_bin="${MODELCAR_TOOLS_BIN:-${HOME:?}/.cache/modelcar-testenv/tools}"
echo "install-deps: Kubernetes test cluster binaries (cache ${cluster_bin})"
(cd "$cluster_repo" && MODELCAR_TOOLS_BIN="$cluster_bin" go run ./internal/cmd/testcluster build)

# --- toxiproxy (fault-injection suite: internal/testenv/toxiproxy.go) --------
# toxiproxy-server from the nested module tools/toxiproxy, into the same cache
# as toxiproxy-server-VERSION, with the flags internal/testenv builds it with
# (ToxiproxyBuildArgs): the version stamped in, no cgo, no workspace.
toxi_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/../tools/toxiproxy" && pwd)"
toxi_bin="${MODELCAR_TOOLS_BIN:-${HOME:?}/.cache/modelcar-testenv/tools}"
toxi_module=github.com/Shopify/toxiproxy/v2
toxi_version="$(cd "$toxi_dir" && GOWORK=off GOFLAGS=-mod=mod go list -m -f '{{.Version}}' "$toxi_module")"
if [[ ! -x "$toxi_bin/toxiproxy-server-$toxi_version" ]]; then
	echo "install-deps: building toxiproxy-server $toxi_version into $toxi_bin"
	mkdir -p "$toxi_bin"
	toxi_tmp="$toxi_bin/toxiproxy-server-$toxi_version.tmp-$$"
	trap 'rm -f "$toxi_tmp"' EXIT
	(cd "$toxi_dir" && CGO_ENABLED=0 GOWORK=off GOFLAGS=-mod=mod go build -trimpath \
		-ldflags "-X $toxi_module.Version=$toxi_version" -o "$toxi_tmp" "$toxi_module/cmd/server")
	mv -f "$toxi_tmp" "$toxi_bin/toxiproxy-server-$toxi_version"
	trap - EXIT
fi
