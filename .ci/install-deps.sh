#!/usr/bin/env bash
# Installs the peer tools the end-to-end tests (internal/testenv) start for
# real: containerd (containerd + ctr), skopeo, docker-registry and tar.
# Debian/Ubuntu only; run as root (or with sudo available). Idempotent: when
# every package is already installed it does nothing, not even apt-get update.
set -euo pipefail

packages=(docker-registry skopeo containerd tar)

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
	exit 0
fi

sudo=()
if ((EUID != 0)); then
	sudo=(sudo)
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
