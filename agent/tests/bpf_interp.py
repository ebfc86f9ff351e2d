"""A tiny interpreter for the opcodes agent/cgroups/device_filter.py emits: what the kernel computes for one
device access, so unit tests can check the program's verdicts without loading it."""
from agent.cgroups.device_filter import (ACCESS_BIT, ALU32_AND_K, ALU32_MOV_K, ALU32_MOV_X, ALU32_RSH_K,
                                         DEVICE_TYPE, EXIT, JMP32_JNE_K, JMP32_JNE_X, LDX_MEM_W, R0, Insn)


def run(insns: list[Insn], kind: str, major: int, minor: int, access: str) -> int:
    """The verdict (1 allow, 0 refuse) for one access; off the end or an unknown opcode is an error."""
    ctx = ((sum(ACCESS_BIT[c] for c in access) << 16) | DEVICE_TYPE[kind], major, minor)
    regs = [0] * 11
    pc = 0
    while True:
        i = insns[pc]
        pc += 1
        if i.code == LDX_MEM_W:
            regs[i.dst] = ctx[i.off // 4]
        elif i.code == ALU32_AND_K:
            regs[i.dst] &= i.imm & 0xFFFFFFFF
        elif i.code == ALU32_RSH_K:
            regs[i.dst] = (regs[i.dst] & 0xFFFFFFFF) >> i.imm
        elif i.code == ALU32_MOV_K:
            regs[i.dst] = i.imm & 0xFFFFFFFF
        elif i.code == ALU32_MOV_X:
            regs[i.dst] = regs[i.src] & 0xFFFFFFFF
        elif i.code in (JMP32_JNE_K, JMP32_JNE_X):
            other = i.imm if i.code == JMP32_JNE_K else regs[i.src]
            if regs[i.dst] & 0xFFFFFFFF != other & 0xFFFFFFFF:
                pc += i.off
        elif i.code == EXIT:
            return regs[R0]
        else:
            raise ValueError(f"opcode {i.code:#x} is not one this builder emits")
