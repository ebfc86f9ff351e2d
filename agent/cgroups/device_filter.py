"""A DevicePolicy as a BPF_PROG_TYPE_CGROUP_DEVICE program: cgroup v2's replacement for devices.allow/deny.
Pure: returns eBPF instructions as bytes (runc's libcontainer/cgroups/devices/devicefilter.go, same layout).

The kernel calls the program with struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; } where
access_type = access << 16 | device type. It returns 1 to allow, 0 to refuse (EPERM).
"""
import struct
from typing import NamedTuple

from .device_rules import DevicePolicy

DEV_BLOCK, DEV_CHAR = 1, 2                      # BPF_DEVCG_DEV_*
ACC_MKNOD, ACC_READ, ACC_WRITE = 1, 2, 4        # BPF_DEVCG_ACC_*
DEVICE_TYPE = {"b": DEV_BLOCK, "c": DEV_CHAR}
ACCESS_BIT = {"m": ACC_MKNOD, "r": ACC_READ, "w": ACC_WRITE}
LICENSE = b"Apache\0"

# Opcodes (linux/bpf.h, linux/bpf_common.h).
LDX_MEM_W = 0x61     # BPF_LDX | BPF_MEM | BPF_W
ALU32_AND_K = 0x54   # BPF_ALU | BPF_AND | BPF_K
ALU32_RSH_K = 0x74   # BPF_ALU | BPF_RSH | BPF_K
ALU32_MOV_K = 0xB4   # BPF_ALU | BPF_MOV | BPF_K
ALU32_MOV_X = 0xBC   # BPF_ALU | BPF_MOV | BPF_X
JMP32_JNE_K = 0x56   # BPF_JMP32 | BPF_JNE | BPF_K: 32-bit compare, so majors/minors >= 2^31 compare right
JMP32_JNE_X = 0x5E   # BPF_JMP32 | BPF_JNE | BPF_X
EXIT = 0x95          # BPF_JMP | BPF_EXIT
R0, R1, R2, R3, R4, R5 = range(6)


class Insn(NamedTuple):
    code: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0

    def encode(self) -> bytes:
        return struct.pack("<BBhi", self.code, (self.src << 4) | self.dst, self.off, _s32(self.imm))


def instructions(policy: DevicePolicy) -> list[Insn]:
    """Load type/access/major/minor into R2-R5; one block per exception that returns its verdict when it matches
    and jumps to the next block otherwise; the default verdict last."""
    insns = [
        Insn(LDX_MEM_W, R2, R1, 0), Insn(ALU32_AND_K, R2, imm=0xFFFF),   # R2 <- device type
        Insn(LDX_MEM_W, R3, R1, 0), Insn(ALU32_RSH_K, R3, imm=16),       # R3 <- access requested
        Insn(LDX_MEM_W, R4, R1, 4),                                      # R4 <- major
        Insn(LDX_MEM_W, R5, R1, 8),                                      # R5 <- minor
    ]
    for rule in policy.exceptions:
        block: list[Insn | str] = [Insn(JMP32_JNE_K, R2, imm=DEVICE_TYPE[rule.type])]
        access = sum(ACCESS_BIT[c] for c in rule.access)
        if access != ACC_MKNOD | ACC_READ | ACC_WRITE:
            # Everything requested must be in the rule's access: (R3 & access) != R3 means no match.
            block += [Insn(ALU32_MOV_X, R1, R3), Insn(ALU32_AND_K, R1, imm=access), Insn(JMP32_JNE_X, R1, R3)]
        if rule.major is not None:
            block.append(Insn(JMP32_JNE_K, R4, imm=rule.major))
        if rule.minor is not None:
            block.append(Insn(JMP32_JNE_K, R5, imm=rule.minor))
        block += [Insn(ALU32_MOV_K, R0, imm=int(rule.allow)), Insn(EXIT)]
        # Every conditional jump in the block skips to the instruction after the block's EXIT.
        insns += [i._replace(off=len(block) - 1 - n) if i.code in (JMP32_JNE_K, JMP32_JNE_X) else i
                  for n, i in enumerate(block)]
    insns += [Insn(ALU32_MOV_K, R0, imm=int(policy.default_allow)), Insn(EXIT)]
    return insns


def program(policy: DevicePolicy) -> bytes:
    return b"".join(insn.encode() for insn in instructions(policy))


def _s32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value
