"""A stack policy with only a lower guard page, as coroutine runtimes often use.

Each stack gets its own mapping with one non-present page below it and none above; the kernel's
cleanup hook unmaps it. ``catches`` is inherited: it promises both overflow and underflow, and
the property test finds the underflow it cannot keep (docs/property-tests.md).
"""

from mmusim.kernel import (
    K_MEM_MAP_UNINIT,
    K_MEM_PERM_RW,
    PAGE,
    MappedInfo,
    StackPolicy,
    map_phys_guarded,
    unmap_phys_guarded,
)


class LowerGuardPolicy(StackPolicy):
    """One guard page below each stack, none above."""

    name = "lower-guard"

    def map_stack(self, k, t, stack, obj_len):
        addr = yield from map_phys_guarded(
            k, stack.addr - k.virt_offset, obj_len, K_MEM_PERM_RW | K_MEM_MAP_UNINIT, False,
            kind="stack", owner=t.name, front=1, rear=0,
        )  # fmt: skip
        return MappedInfo(addr, obj_len)

    def unmap_stack(self, k, mapped):
        yield from unmap_phys_guarded(k, mapped.addr, mapped.sz, False, front=1, rear=0)

    def guards(self, k, t):
        m = t.stack_info.mapped
        return [] if m.addr is None else [(m.addr - PAGE, m.addr)]
