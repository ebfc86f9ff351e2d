"""Sandbox VMs ready to serve: a copy-on-write clone of a pre-forked template, or a cold boot when there is none.

    shape = shape_from_config(cfg)
    launched = await Launcher(shape, work_dir).launch(LaunchRequest(name, run_dir, rootfs_images=(img,), pre_exec=lease.placement()))
    launched.agent   # connected; Health answered (and PostRestore done for a clone)
    launched.rootfs_devices[0]   # where the guest sees img: "/dev/pmem1" (q35, DAX) or "/dev/vdb" (microvm)
"""
from rund.templates.launch import LaunchRequest, LaunchedVM, Launcher
from rund.templates.shape import SandboxShape, shape_from_config

__all__ = ["LaunchRequest", "LaunchedVM", "Launcher", "SandboxShape", "shape_from_config"]
