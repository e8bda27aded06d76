#!/usr/bin/env bash
# Build (once) a minimal Debian root file system for systemd-nspawn and print its path.
#
# The root is cached under .cache/ (git-ignored), keyed by a hash of everything that shapes it
# (suite, package list, this script), so changing the package list builds a new one and an
# unchanged list reuses the old one. Containers boot it with --volatile=overlay: it is never
# modified after the build, and several runs can share it.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
suite="${DISTSYNC_ROOTFS_SUITE:-bookworm}"
mirror="${DISTSYNC_ROOTFS_MIRROR:-}"
packages="systemd,systemd-sysv,dbus,python3,python3-venv,iproute2,openssh-server,sudo"

key="$( { echo "$suite $packages"; cat "$0"; } | sha256sum | cut -c1-16)"
cache="$repo/.cache/systemd-rootfs"
root="$cache/$suite-$key"

if [[ -f "$root/.distsync-rootfs-complete" ]]; then
    echo "$root"
    exit 0
fi

mkdir -p "$cache"
# One builder per root at a time; a second caller waits, then finds the finished root.
# Different roots (bookworm, trixie) build side by side.
exec 9>"$cache/.lock-$suite-$key"
flock -w 900 9
if [[ -f "$root/.distsync-rootfs-complete" ]]; then
    echo "$root"
    exit 0
fi

tmp="$cache/.build-$key.$$"
rm -rf "$tmp"
trap 'rm -rf "$tmp"' EXIT
echo "building $suite root file system in $root (once; bookworm ~75 s, trixie ~130 s)" >&2
debootstrap --variant=minbase --include="$packages" "$suite" "$tmp" ${mirror:+"$mirror"} >&2

# What every boot needs and no run changes. Per-run files (authorized_keys, /etc/hosts,
# resolv.conf) are bind-mounted by the harness instead, so the root stays shared and clean.
install -d -m 0700 "$tmp/root/.ssh"
: >"$tmp/etc/resolv.conf"
# The build host's name must not leak into every container.
: >"$tmp/etc/hostname"
# A machine id per boot (nspawn makes a transient one when the file is empty).
: >"$tmp/etc/machine-id"
# Nothing to install later: no package lists or caches in the image.
rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/*
# sshd in minbase is enabled by its package; make sure, and skip units that fail without
# hardware or a network manager in a container.
ln -sf /lib/systemd/system/ssh.service "$tmp/etc/systemd/system/multi-user.target.wants/ssh.service"
touch "$tmp/.distsync-rootfs-complete"

mv "$tmp" "$root"
trap - EXIT
# Older roots of other package lists are left alone; `make clean-systemd` may remove them.
echo "$root"
