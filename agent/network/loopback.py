"""Loopback up in a network namespace: runc does it for every new one, and a pod's containers talk over it."""
from . import rtnetlink as rt
from .configure import Rtnl

LOOPBACK_INDEX = 1      # the kernel gives lo index 1 in every network namespace


def bring_up() -> None:
    """Set lo up in the calling thread's network namespace. OSError if the kernel refuses."""
    rtnl = Rtnl()
    try:
        rtnl.request(rt.set_link(rtnl.next_seq(), LOOPBACK_INDEX, up=True), "lo up")
    finally:
        rtnl.close()
