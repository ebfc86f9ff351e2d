"""Host resources a sandbox holds: a cgroup from the pre-created pool (cgroups/) and cached erofs images of its
containers' rootfs (rootfs/). Pod networking has no module here yet."""
