"""rund: the host side of the runtime (shim, runtime objects, hypervisor, templates, resources)."""

__version__ = "0.1.0"
