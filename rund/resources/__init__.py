"""Host resources a sandbox holds: the cgroup pool (cgroups/), and later rootfs and network."""
