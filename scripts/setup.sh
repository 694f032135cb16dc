#!/usr/bin/env bash
# Everything a fresh Debian machine needs, as root; safe to run again.
#   Debian packages: the Go reference plugins (test oracle and benchmark baseline),
#   iproute2 and nftables (tests look at kernel state with them), python3-venv;
#   gcc and libc6-dev (the static shim, build/shim);
#   iputils-ping, curl, netcat-openbsd, conntrack (tests send real traffic);
#   for tests/guest/run (the kernel-dependent tests in a QEMU guest): qemu-system-x86,
#   busybox-static, cpio, kmod, xz-utils, and linux-image-amd64 (only booted as the guest's kernel).
#   golang-go and golang-github-appc-cni-dev (the Go libcni's source): the libcni interop
#   tests build a small Go libcni driver from them as their oracle (tests/fixtures/go_libcni.py).
#   systemd (its systemd-socket-activate starts the server as the installed units do);
#   dnsmasq-base: the DHCP server the dhcp tests start in a throw-away netns (never the host's).
#   dbus and firewalld: the firewall plugin's firewalld backend is tested against a real
#   firewalld on a private bus (tests/fixtures/firewalld.py; nothing on the host is started:
#   apt runs with a policy-rc.d that starts no service, so installing firewalld (or dbus,
#   containerd) never changes the host's running firewall or daemons).
#   podman, runc, containerd: the real-runtime tests (tests/e2e/test_podman.py,
#   test_containerd.py; they also install them themselves when missing).
#   .venv: the project in editable mode with its test and build extras, and .venv/bin/cni-shim
#   (build/shim: the native exec'd file) beside its cni-plugins.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PKGS="containernetworking-plugins iproute2 nftables python3 python3-venv gcc libc6-dev
          iputils-ping curl netcat-openbsd conntrack
          qemu-system-x86 busybox-static cpio kmod xz-utils linux-image-amd64
          golang-go golang-github-appc-cni-dev podman runc containerd systemd
          dbus firewalld dnsmasq-base"
missing=""
for p in $APT_PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "setup: apt-get install$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # no service is started by the packages (a policy-rc.d of ours while apt runs): the
    # tests start their own firewalld, dbus and containerd, confined to throw-away netns
    own_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    apt-get install -y -qq --no-install-recommends $missing >/dev/null || status=$?
    [ $own_policy = 0 ] || rm -f /usr/sbin/policy-rc.d
    [ "${status:-0}" = 0 ] || exit "$status"
    if [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ] && [[ " $missing " == *" firewalld "* ]]; then
        systemctl disable --now firewalld >/dev/null 2>&1 || true   # installed for the tests only
    fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
# editable_mode=compat: the checkout goes on sys.path through a plain .pth line; the default
# mode installs an import finder whose set-up (pathlib, importlib.util, re) costs every
# exec'd plugin 20-50 ms before our first line runs.
if ! .venv/bin/python -c "import cni_plugins, pyroute2, pydantic, pytest, hypothesis, PyInstaller" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.installed ] \
   || compgen -G ".venv/lib/python3*/site-packages/__editable___cni_plugins_*_finder.py" >/dev/null; then
    .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,build]' \
        --config-settings editable_mode=compat \
        2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
    touch .venv/.installed
fi
# This environment sets PYTHONDONTWRITEBYTECODE: without compiled files every exec'd plugin
# would compile its modules again (~40 ms). Compile once; python still reads them.
.venv/bin/python -m compileall -q -j 0 cni_plugins .venv/lib >/dev/null 2>&1 || true
# The native shim the plugin links point at, beside the venv's cni-plugins (its fallback).
if [ ! -x .venv/bin/cni-shim ] || [ build/shim/cni-shim.c -nt .venv/bin/cni-shim ] \
   || [ cni_plugins/__init__.py -nt .venv/bin/cni-shim ]; then
    build/shim/build.sh .venv/bin/cni-shim >/dev/null
fi
echo "setup: ok ($(.venv/bin/python --version), $(ls /usr/lib/cni | wc -l) Go plugins in /usr/lib/cni)"
