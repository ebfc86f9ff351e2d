"""The pod's network on the host: CNI prepared a network namespace with the pod's interface and addresses; rund
connects it to the VM with a tap and a tc redirect each way (Kata's tcfilter model) and reads the identity the guest's
NIC must take (MAC, MTU, addresses, routes).

    pod = attach("/var/run/netns/cni-...")     # a tap fd for QEMU's -netdev tap,fd=N, and the interface to copy
    ...
    detach("/var/run/netns/cni-...")          # filters gone (the tap goes with QEMU's fd)
"""
from .errors import NetworkError
from .pod import PodAddress, PodNetwork, PodRoute, attach, attach_moved, detach, inspect

__all__ = ["NetworkError", "PodAddress", "PodNetwork", "PodRoute", "attach", "attach_moved", "detach", "inspect"]
