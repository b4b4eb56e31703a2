"""Stack object geometry: Zephyr's ``K_KERNEL_STACK_LEN``, ``K_THREAD_STACK_LEN`` and friends on x86.

Macros as in ``include/zephyr/kernel/thread_stack.h`` and ``include/zephyr/arch/x86/thread_stack.h``
(and ``setup_thread_stack`` in ``kernel/thread.c``)::

    K_KERNEL_STACK_RESERVED = PAGE if X86_STACK_PROTECTION else 0
    K_KERNEL_STACK_LEN(s)   = ROUND_UP(ROUND_UP(s, ARCH_STACK_PTR_ALIGN) + K_KERNEL_STACK_RESERVED,
                                       Z_KERNEL_STACK_OBJ_ALIGN)
    K_THREAD_STACK_RESERVED = sizeof(struct z_x86_thread_stack_header)
                            = [PAGE guard if X86_STACK_PROTECTION and not THREAD_STACK_MEM_MAPPED]
                              + [PRIVILEGED_STACK_SIZE if USERSPACE]
    K_THREAD_STACK_LEN(s)   = ROUND_UP(ROUND_UP(s + K_THREAD_STACK_RESERVED, Z_X86_STACK_SIZE_ALIGN),
                                       Z_X86_STACK_BASE_ALIGN)

Without USERSPACE every K_THREAD_* macro is its K_KERNEL_* twin. With mapped stacks the
in-object guard page of a user-capable stack disappears (the mapping's guards replace it), but a
kernel-only stack keeps its reserved page, mapped read-write as part of the object (mmusim's
reading of those macros: an overflow first runs through that unused page before reaching the
front guard).
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

PAGE = 4096
ConfigValues = Mapping[str, bool | int | str]


def round_up(x: int, align: int) -> int:
    return (x + align - 1) // align * align


def round_down(x: int, align: int) -> int:
    return x // align * align


@attrs.frozen
class StackGeometry:
    """The macros resolved for one configuration."""

    ptr_align: int  # ARCH_STACK_PTR_ALIGN: 16 on x86_64, 4 on ia32
    kernel_reserved: int  # K_KERNEL_STACK_RESERVED
    kernel_obj_align: int  # Z_KERNEL_STACK_OBJ_ALIGN
    thread_reserved: int  # K_THREAD_STACK_RESERVED (== kernel_reserved without USERSPACE)
    size_align: int  # Z_X86_STACK_SIZE_ALIGN
    base_align: int  # Z_X86_STACK_BASE_ALIGN
    legacy_guard: bool  # the in-object guard page (X86_STACK_PROTECTION without mapped stacks)
    privileged_stack_size: int
    userspace: bool

    @classmethod
    def from_config(cls, cfg: ConfigValues) -> StackGeometry:
        x86_64 = bool(cfg.get("X86_64"))
        prot = bool(cfg.get("X86_STACK_PROTECTION"))
        mapped = bool(cfg.get("THREAD_STACK_MEM_MAPPED"))
        user = bool(cfg.get("USERSPACE"))
        priv = int(cfg.get("PRIVILEGED_STACK_SIZE", 0) or 0) if user else 0
        ptr_align = 16 if x86_64 else 4
        kernel_reserved = PAGE if prot else 0
        kernel_obj_align = PAGE if prot else ptr_align
        base_align = PAGE if (prot or user or mapped) else ptr_align
        size_align = PAGE if (user or mapped) else ptr_align
        legacy_guard = prot and not mapped
        if user:
            thread_reserved = (PAGE if legacy_guard else 0) + priv
        else:
            thread_reserved = kernel_reserved
        return cls(
            ptr_align,
            kernel_reserved,
            kernel_obj_align,
            thread_reserved,
            size_align,
            base_align,
            legacy_guard,
            priv,
            user,
        )

    def kernel_stack_len(self, size: int) -> int:
        """K_KERNEL_STACK_LEN(size)."""
        return round_up(
            round_up(size, self.ptr_align) + self.kernel_reserved, self.kernel_obj_align
        )

    def thread_stack_len(self, size: int) -> int:
        """K_THREAD_STACK_LEN(size) (K_KERNEL_STACK_LEN without USERSPACE)."""
        if not self.userspace:
            return self.kernel_stack_len(size)
        return round_up(round_up(size + self.thread_reserved, self.size_align), self.base_align)

    def obj_len(self, size: int, user_capable: bool) -> int:
        return self.thread_stack_len(size) if user_capable else self.kernel_stack_len(size)

    def reserved(self, user_capable: bool) -> int:
        return self.thread_reserved if user_capable else self.kernel_reserved

    def obj_align(self, user_capable: bool) -> int:
        return self.base_align if user_capable and self.userspace else self.kernel_obj_align
