#!/bin/busybox sh
# rund initramfs /init: load the modules that reach the root device, mount the erofs root, switch_root into it.
#
# Kernel command line (see guest/cmdline.py):
#   rund.root=/dev/pmem0|/dev/vda   root device (required)
#   rund.rootflags=dax=always       extra erofs mount options
#   rund.init=/sbin/init            program to exec in the new root (no arguments)
#   rund.initcmd=<base64>           instead, run this shell script as PID 1 (smoke tests, debugging)
#   rund.trace=1                    print uptime at each stage
B=/bin/busybox
set -f  # the command line is split into words below; never glob it

say() { echo "rund-init: $*" > /dev/console; }
fatal() {
	say "FATAL: $*"
	$B poweroff -f
}
trace() {
	[ -n "$TRACE" ] || return 0
	read -r up _ < /proc/uptime
	say "$up $*"
}

$B mount -t proc -o nosuid,nodev,noexec proc /proc || fatal "mount /proc"
$B mount -t sysfs -o nosuid,nodev,noexec sysfs /sys || fatal "mount /sys"
$B mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev || fatal "mount /dev"

ROOT= FLAGS= INIT=/sbin/init INITCMD= TRACE=
for arg in $($B cat /proc/cmdline); do
	case "$arg" in
	rund.root=*) ROOT=${arg#rund.root=} ;;
	rund.rootflags=*) FLAGS=${arg#rund.rootflags=} ;;
	rund.init=*) INIT=${arg#rund.init=} ;;
	rund.initcmd=*) INITCMD=${arg#rund.initcmd=} ;;
	rund.trace=*) TRACE=${arg#rund.trace=} ;;
	esac
done
[ -n "$ROOT" ] || fatal "no rund.root= on the kernel command line"
trace "init started"

load_group() {
	while read -r ko; do
		$B insmod "$ko" || fatal "insmod $ko"
	done < "/lib/modules/$1.list"
}

has_virtio_pci() {
	for v in /sys/bus/pci/devices/*/vendor; do
		[ -e "$v" ] && read -r id < "$v" && [ "$id" = 0x1af4 ] && return 0
	done
	return 1
}

set +f
load_group core
# Transports: only the ones this machine has (q35: PCI; microvm: virtio-mmio devices described in ACPI).
has_virtio_pci && load_group pci
for d in /sys/bus/acpi/devices/LNRO0005:*; do
	[ -e "$d" ] && load_group mmio
	break
done
set -f
case "$ROOT" in
/dev/pmem*) load_group pmem ;;
/dev/vd*) load_group blk ;;
*) fatal "unsupported root device $ROOT" ;;
esac
load_group erofs
trace "modules loaded"

# Device probing can finish after insmod returns (libnvdimm probes asynchronously): wait up to 5 s.
n=0
while [ ! -b "$ROOT" ]; do
	n=$((n + 1))
	[ $n -le 5000 ] || fatal "root device $ROOT did not appear"
	$B usleep 1000
done
$B mount -t erofs -o "ro${FLAGS:+,$FLAGS}" "$ROOT" /newroot || fatal "mount $ROOT (erofs, ro${FLAGS:+,$FLAGS})"
trace "root mounted"

# Hand /proc, /sys and /dev over to the new root so PID 1 there starts with them mounted.
for m in dev proc sys; do
	$B mount --move "/$m" "/newroot/$m" || fatal "move /$m"
done

if [ -n "$INITCMD" ]; then
	CMD=$(echo "$INITCMD" | $B base64 -d) || fatal "rund.initcmd is not base64"
	exec $B switch_root /newroot /bin/sh -c "$CMD"
fi
exec $B switch_root /newroot "$INIT"
