"""PID 1 duties in the guest: early mounts, kernel modules, the last word before power-off."""
