#!/bin/sh
# Runs as PID 1 of the box's fresh PID, mount, UTS and IPC namespaces, in
# its network namespace: mounts what procd expects under ROOTFS and execs
# procd there. Nothing reaches the host's console or /sys: /dev/console and
# /dev/kmsg are files in the run dir, and sysfs is read-only.
#
#   boot.sh ROOTFS CONSOLE_LOG
set -eu
root=$1 console=$2
mount --bind "$root" "$root"
mount -t proc proc "$root/proc"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$root/sys"
mount -t tmpfs -o mode=0755,size=1m,nosuid dev "$root/dev"
for n in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
	mknod -m 0666 "$root/dev/${n%%:*}" c "$(echo "$n" | cut -d: -f2)" "${n##*:}"
done
mkdir "$root/dev/pts" "$root/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$root/dev/pts"
ln -s pts/ptmx "$root/dev/ptmx"
ln -s /proc/self/fd "$root/dev/fd"
touch "$root/dev/console" "$root/dev/kmsg"
mount --bind "$console" "$root/dev/console"
mount -t tmpfs -o mode=1777,nosuid,nodev tmp "$root/tmp"
# logd reads /proc/kmsg, which would take the host's kernel messages from
# the host's own syslog: it gets an empty pipe instead.
mkfifo -m 0400 "$root/dev/.kmsg"
mount --bind "$root/dev/.kmsg" "$root/proc/kmsg"
# procd leaves /proc, /sys and /dev alone in a container.
exec chroot "$root" /usr/bin/env -i container=pptp-alg-box \
	PATH=/usr/sbin:/usr/bin:/sbin:/bin /sbin/init
