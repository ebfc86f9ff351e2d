"""The guest build: kernel, modules, initramfs and the erofs rootfs that runs the agent.

Build with ``python3 -m guest.build``; find the result with ``guest.artifacts.current()``.
"""
