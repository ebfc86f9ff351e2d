"""Runtime objects: Sandbox ▸ Container ▸ Process, their state machines, exits and stdio. Below the shim, above the
hypervisor, agent client and resources."""
