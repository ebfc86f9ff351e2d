"""Per-container cgroups in the guest (cgroup v2), or none where the agent runs without them."""
