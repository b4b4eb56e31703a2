"""The Kconfig tree, the boards, and load_config's resolution and errors (mmusim.kconfig)."""

from __future__ import annotations

from pathlib import Path

import attrs
import kconfiglib  # type: ignore[import-untyped]
import pytest

from helpers import TmpFile
from mmusim.kconfig import KCONFIG_DIR, Config, ConfigError, boards, load_config, resolve_kconfig

BOARDS = ["qemu_x86", "qemu_x86_64", "qemu_x86_atom_virt"]


def error_of(board: str, *fragments: Path, extra: tuple[tuple[str, int, str], ...] = ()) -> str:
    """The message of the ConfigError that loading ``board`` with ``fragments`` must raise."""
    with pytest.raises(ConfigError) as info:
        load_config(board, fragments, extra_lines=extra)
    return str(info.value)


@pytest.fixture(scope="module")
def kconf() -> kconfiglib.Kconfig:
    """The Kconfig tree, parsed once for the tests that only read it."""
    return kconfiglib.Kconfig(str(KCONFIG_DIR / "Kconfig"), warn_to_stderr=False)


# -- the tree --------------------------------------------------------------------------------


def test_tree_parses_without_warnings_or_undefined_symbols(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KCONFIG_WARN_UNDEF", "y")  # warn about references to undefined symbols
    kconf = kconfiglib.Kconfig(str(KCONFIG_DIR / "Kconfig"), warn_to_stderr=False)
    assert kconf.warnings == []


@pytest.mark.parametrize(
    "name",
    [
        "MMU",
        "X86_MMU",
        "X86_64",
        "X86_PAE",
        "MMU_PAGE_SIZE",
        "KERNEL_VM_BASE",
        "KERNEL_VM_OFFSET",
        "KERNEL_VM_SIZE",
        "SRAM_BASE_ADDRESS",
        "SRAM_SIZE",
        "THREAD_STACK_MEM_MAPPED",
        "ARCH_SUPPORTS_MEM_MAPPED_STACKS",
        "THREAD_ABORT_NEED_CLEANUP",
        "THREAD_STACK_INFO",
        "X86_STACK_PROTECTION",
        "HW_STACK_PROTECTION",
        "USERSPACE",
        "PRIVILEGED_STACK_SIZE",
        "SMP",
        "MP_MAX_NUM_CPUS",
        "DEMAND_PAGING",
        "ISR_STACK_SIZE",
        "INIT_STACKS",
        "DYNAMIC_THREAD",
        "DYNAMIC_THREAD_STACK_SIZE",
        "DYNAMIC_THREAD_ALLOC",
        "DYNAMIC_THREAD_POOL_SIZE",
        "DYNAMIC_THREAD_PREFER_ALLOC",
        "DYNAMIC_THREAD_PREFER_POOL",
        "SIM_ABORT_CLEANUP_LEAK",
        "SIM_TLB_SHOOTDOWN",
    ],
)
def test_the_issue_symbols_exist_with_help(kconf: kconfiglib.Kconfig, name: str) -> None:
    sym = kconf.syms[name]
    assert sym.nodes, f"{name} is not defined"
    assert all(node.help for node in sym.nodes), f"{name} has no help text"


def test_every_symbol_has_help(kconf: kconfiglib.Kconfig) -> None:
    missing = [s.name for s in kconf.unique_defined_syms if not any(n.help for n in s.nodes)]
    assert missing == []


def test_types_and_prompts_follow_the_reference_table(kconf: kconfiglib.Kconfig) -> None:
    def prompt(name: str) -> str | None:
        node = kconf.syms[name].nodes[0]
        return node.prompt[0] if node.prompt else None

    assert prompt("THREAD_STACK_MEM_MAPPED") == "Stack to be memory mapped at runtime"
    assert prompt("THREAD_STACK_INFO") == "Thread stack info"
    assert prompt("HW_STACK_PROTECTION") == "Hardware Stack Protection"
    assert prompt("USERSPACE") == "User mode threads"
    assert prompt("PRIVILEGED_STACK_SIZE") == "Size of privileged stack"
    assert prompt("X86_MMU") == "Enable Memory Management Unit"
    for hidden in ("ARCH_SUPPORTS_MEM_MAPPED_STACKS", "THREAD_ABORT_NEED_CLEANUP", "MMU"):
        assert prompt(hidden) is None
    types = {s.name: kconfiglib.TYPE_TO_STR[s.orig_type] for s in kconf.unique_defined_syms}
    assert types["MMU_PAGE_SIZE"] == types["KERNEL_VM_BASE"] == types["KERNEL_VM_SIZE"] == "hex"
    assert types["SRAM_BASE_ADDRESS"] == "hex"
    assert types["SRAM_SIZE"] == types["MP_MAX_NUM_CPUS"] == "int"
    tsmm = kconf.syms["THREAD_STACK_MEM_MAPPED"]
    assert kconfiglib.expr_str(tsmm.direct_dep) == "MMU && ARCH_SUPPORTS_MEM_MAPPED_STACKS"
    assert {s.name for s in tsmm.selects[0][:1]} | {tsmm.selects[1][0].name} == {
        "THREAD_STACK_INFO",
        "THREAD_ABORT_NEED_CLEANUP",
    }


def test_kconfig_dir_is_in_the_package_and_linked_from_the_checkout() -> None:
    assert (KCONFIG_DIR / "Kconfig").is_file()
    assert KCONFIG_DIR.parent.name == "kconfig" and KCONFIG_DIR.parent.parent.name == "mmusim"
    top = Path(__file__).resolve().parent.parent / "kconfig"
    if top.exists():  # a source checkout: the top-level kconfig/ (docs/kconfig.md)
        assert top.resolve() == KCONFIG_DIR


# -- boards ----------------------------------------------------------------------------------


def test_boards() -> None:
    assert boards() == BOARDS


@pytest.mark.parametrize("board", BOARDS)
def test_each_board_resolves(board: str) -> None:
    cfg = load_config(board)
    assert cfg.board == board
    assert cfg.sources == (str(KCONFIG_DIR / "boards" / f"{board}.defconfig"),)
    assert cfg.X86 is True and cfg.X86_MMU is True and cfg.MMU is True
    assert cfg.HW_STACK_PROTECTION is True and cfg.X86_STACK_PROTECTION is True
    assert cfg.MMU_PAGE_SIZE == 0x1000
    assert cfg.SRAM_BASE_ADDRESS == 0x100000 and cfg.SRAM_SIZE == 4096
    assert cfg.SIM_TLB_SHOOTDOWN is True
    assert cfg.SIM_ABORT_CLEANUP_LEAK is False
    assert cfg.DEMAND_PAGING is False
    for value in cfg.values.values():
        assert type(value) in (bool, int, str)


def test_qemu_x86_64() -> None:
    cfg = load_config("qemu_x86_64")
    assert cfg.X86_64 is True and cfg.X86_PAE is False
    assert cfg.SMP is True and cfg.MP_MAX_NUM_CPUS == 2
    assert cfg.THREAD_STACK_MEM_MAPPED is True  # implied by X86_STACK_PROTECTION on x86_64
    assert cfg.THREAD_ABORT_NEED_CLEANUP is True and cfg.THREAD_STACK_INFO is True
    assert cfg.ARCH_SUPPORTS_MEM_MAPPED_STACKS is True
    assert cfg.KERNEL_VM_BASE == cfg.SRAM_BASE_ADDRESS and cfg.KERNEL_VM_SIZE == 0x800000
    assert cfg.ISR_STACK_SIZE == 16384 and cfg.X86_EXCEPTION_STACK_SIZE == 4096


def test_qemu_x86_64_fragment_turns_mapped_stacks_off(tmp_file: TmpFile) -> None:
    frag = tmp_file("prj.conf", "CONFIG_THREAD_STACK_MEM_MAPPED=n\n")
    cfg = load_config("qemu_x86_64", [frag])
    assert cfg.THREAD_STACK_MEM_MAPPED is False
    assert cfg.THREAD_ABORT_NEED_CLEANUP is False
    assert cfg.THREAD_STACK_INFO is True  # still selected by X86_STACK_PROTECTION


def test_qemu_x86() -> None:
    cfg = load_config("qemu_x86")
    assert cfg.X86_64 is False and cfg.X86_PAE is True
    assert cfg.SMP is False and cfg.MP_MAX_NUM_CPUS == 1
    assert cfg.THREAD_STACK_MEM_MAPPED is False
    assert cfg.THREAD_ABORT_NEED_CLEANUP is False
    assert cfg.ARCH_SUPPORTS_MEM_MAPPED_STACKS is True
    assert cfg.ISR_STACK_SIZE == 2048


def test_qemu_x86_fragment_turns_mapped_stacks_on(tmp_file: TmpFile) -> None:
    frag = tmp_file("prj.conf", "# mapped stacks on ia32\nCONFIG_THREAD_STACK_MEM_MAPPED=y\n")
    cfg = load_config("qemu_x86", [frag])
    assert cfg.THREAD_STACK_MEM_MAPPED is True
    assert cfg.THREAD_ABORT_NEED_CLEANUP is True and cfg.THREAD_STACK_INFO is True
    assert cfg.sources[1:] == (str(frag),)


def test_qemu_x86_atom_virt_forces_mapped_stacks_off(tmp_file: TmpFile) -> None:
    cfg = load_config("qemu_x86_atom_virt")
    assert cfg.THREAD_STACK_MEM_MAPPED is False
    assert cfg.KERNEL_VM_BASE == 0x40000000 != cfg.SRAM_BASE_ADDRESS
    assert cfg.KERNEL_VM_SIZE == 0x400000 and cfg.KERNEL_VM_OFFSET == 0
    frag = tmp_file("prj.conf", "CONFIG_INIT_STACKS=y\n\nCONFIG_THREAD_STACK_MEM_MAPPED=y\n")
    assert error_of("qemu_x86_atom_virt", frag) == (
        f"{frag}:3: THREAD_STACK_MEM_MAPPED=y needs identity-mapped RAM (virt == phys), but"
        " KERNEL_VM_BASE=0x40000000 != SRAM_BASE_ADDRESS=0x100000: a mapped stack's virtual"
        " address is used as its physical address (Zephyr forces it off on qemu_x86_atom_virt)"
    )


def test_moving_the_vm_window_under_implied_mapped_stacks_names_the_move(tmp_file: TmpFile) -> None:
    frag = tmp_file("prj.conf", "CONFIG_KERNEL_VM_BASE=0x40000000\n")
    message = error_of("qemu_x86_64", frag)
    assert message.startswith(
        f"{frag}:1: THREAD_STACK_MEM_MAPPED=y (implied by X86_STACK_PROTECTION) needs"
        " identity-mapped RAM (virt == phys), but KERNEL_VM_BASE=0x40000000 !="
    )
    ok = tmp_file(
        "ok.conf",
        "CONFIG_KERNEL_VM_BASE=0x40000000\n# CONFIG_THREAD_STACK_MEM_MAPPED is not set\n",
    )
    assert load_config("qemu_x86_64", [ok]).KERNEL_VM_BASE == 0x40000000


def test_kernel_vm_offset_must_be_zero_for_mapped_stacks(tmp_file: TmpFile) -> None:
    frag = tmp_file(
        "prj.conf", "CONFIG_THREAD_STACK_MEM_MAPPED=y\nCONFIG_KERNEL_VM_OFFSET=0x1000\n"
    )
    assert "but KERNEL_VM_OFFSET=0x1000 != 0" in error_of("qemu_x86", frag)
    assert error_of("qemu_x86", frag).startswith(f"{frag}:1: THREAD_STACK_MEM_MAPPED=y needs")


def test_demand_paging_makes_mapped_stacks_unavailable(tmp_file: TmpFile) -> None:
    frag = tmp_file("prj.conf", "CONFIG_DEMAND_PAGING=y\n")
    cfg = load_config("qemu_x86", [frag])
    assert cfg.DEMAND_PAGING is True
    assert cfg.ARCH_SUPPORTS_MEM_MAPPED_STACKS is False and cfg.THREAD_STACK_MEM_MAPPED is False
    both = tmp_file("both.conf", "CONFIG_DEMAND_PAGING=y\nCONFIG_THREAD_STACK_MEM_MAPPED=y\n")
    assert error_of("qemu_x86", both) == (
        f"{both}:2: THREAD_STACK_MEM_MAPPED=y has no effect: depends on"
        " MMU && ARCH_SUPPORTS_MEM_MAPPED_STACKS, which is n (DEMAND_PAGING=y)"
    )


def test_leak_knob_needs_the_cleanup_and_can_be_turned_on(tmp_file: TmpFile) -> None:
    frag = tmp_file("prj.conf", "CONFIG_SIM_ABORT_CLEANUP_LEAK=y\n")
    assert load_config("qemu_x86_64", [frag]).SIM_ABORT_CLEANUP_LEAK is True
    assert error_of("qemu_x86", frag) == (
        f"{frag}:1: SIM_ABORT_CLEANUP_LEAK=y has no effect: depends on"
        " THREAD_ABORT_NEED_CLEANUP, which is n (THREAD_STACK_MEM_MAPPED=n)"
    )


def test_tlb_shootdown_can_be_turned_off(tmp_file: TmpFile) -> None:
    frag = tmp_file("prj.conf", "# CONFIG_SIM_TLB_SHOOTDOWN is not set\n")
    assert load_config("qemu_x86_64", [frag]).SIM_TLB_SHOOTDOWN is False


# -- errors, each with file:line ---------------------------------------------------------------

ERRORS = [
    # (board, fragment text, line, reason)
    ("qemu_x86", "CONFIG_SMPP=y\n", 1, "unknown symbol CONFIG_SMPP (did you mean CONFIG_SMP?)"),
    ("qemu_x86", "\n# CONFIG_NOPE is not set\n", 2, "unknown symbol CONFIG_NOPE"),
    ("qemu_x86", "CONFIG_smp=y\n", 1, "unknown symbol CONFIG_smp (did you mean CONFIG_SMP?)"),
    (
        "qemu_x86",
        "# comment\n\nSMP=y\n",
        3,
        "malformed line 'SMP=y': symbol names need the CONFIG_ prefix (write CONFIG_SMP=y)",
    ),
    (
        "qemu_x86",
        "CONFIG_INIT_STACKS = y\n",
        1,
        "malformed line 'CONFIG_INIT_STACKS = y': no blanks around '=' (write CONFIG_INIT_STACKS=y)",
    ),
    (
        "qemu_x86",
        "CONFIG_INIT_STACKS=y\nhello\n",
        2,
        "malformed line 'hello': expected CONFIG_NAME=value, '# CONFIG_NAME is not set', a comment"
        " or a blank line",
    ),
    ("qemu_x86_64", "CONFIG_SMP=5\n", 1, "SMP is a bool symbol: '5' is not y or n"),
    ("qemu_x86_64", "CONFIG_SMP=yes\n", 1, "SMP is a bool symbol: 'yes' is not y or n"),
    (
        "qemu_x86_64",
        "CONFIG_MP_MAX_NUM_CPUS=two\n",
        1,
        "MP_MAX_NUM_CPUS is an int symbol: 'two' is not a decimal integer",
    ),
    (
        "qemu_x86",
        "CONFIG_KERNEL_VM_SIZE=400000\n",
        1,
        "KERNEL_VM_SIZE is a hex symbol: '400000' is not a hex number starting with 0x"
        " (write 0x400000)",
    ),
    (
        "qemu_x86",
        "# CONFIG_SRAM_SIZE is not set\n",
        1,
        "'# CONFIG_SRAM_SIZE is not set' applies to bool symbols only; SRAM_SIZE is an int symbol",
    ),
    (
        "qemu_x86_64",
        "CONFIG_MP_MAX_NUM_CPUS=5\n",
        1,
        "MP_MAX_NUM_CPUS=5 is out of range: allowed 1..4",
    ),
    (
        "qemu_x86",
        "CONFIG_MP_MAX_NUM_CPUS=2\n",
        1,
        "MP_MAX_NUM_CPUS=2 is out of range: allowed 1..1 while !SMP",
    ),
    (
        "qemu_x86",
        "CONFIG_DYNAMIC_THREAD=y\nCONFIG_DYNAMIC_THREAD_POOL_SIZE=9000\n",
        2,
        "DYNAMIC_THREAD_POOL_SIZE=9000 is out of range: allowed 0..8192",
    ),
    (
        "qemu_x86",
        "CONFIG_SMP=y\n",
        1,
        "SMP=y has no effect: depends on USE_SWITCH, which is n (X86_64=n)",
    ),
    (
        "qemu_x86_64",
        "CONFIG_DEMAND_PAGING=y\n",
        1,
        "DEMAND_PAGING=y has no effect: depends on ARCH_HAS_DEMAND_PAGING && MMU, which is n"
        " (X86_64=y)",
    ),
    (
        "qemu_x86_64",
        "CONFIG_X86_PAE=y\n",
        1,
        "X86_PAE=y has no effect: depends on X86_MMU && !X86_64, which is n (X86_64=y)",
    ),
    (
        "qemu_x86",
        "CONFIG_X86_MMU=n\nCONFIG_THREAD_STACK_MEM_MAPPED=y\n",
        2,
        "THREAD_STACK_MEM_MAPPED=y has no effect: depends on MMU && ARCH_SUPPORTS_MEM_MAPPED_STACKS,"
        " which is n (X86_MMU=n)",
    ),
    (
        "qemu_x86",
        "CONFIG_X86_MMU=n\nCONFIG_KERNEL_VM_BASE=0x100000\n",
        2,
        "KERNEL_VM_BASE=0x100000 has no effect: depends on KERNEL_VM_SUPPORT, which is n"
        " (X86_MMU=n)",
    ),
    (
        "qemu_x86",
        "CONFIG_PRIVILEGED_STACK_SIZE=8192\n",
        1,
        "PRIVILEGED_STACK_SIZE=8192 has no effect: depends on USERSPACE, which is n",
    ),
    (
        "qemu_x86_64",
        "CONFIG_THREAD_STACK_INFO=n\n",
        1,
        "THREAD_STACK_INFO=n has no effect: it is selected by X86_STACK_PROTECTION,"
        " THREAD_STACK_MEM_MAPPED",
    ),
    (
        "qemu_x86",
        "CONFIG_MMU=y\n",
        1,
        "MMU cannot be set: it has no prompt, its value is derived (selected by X86_MMU)",
    ),
    (
        "qemu_x86",
        "CONFIG_X86_STACK_PROTECTION=y\n",
        1,
        "X86_STACK_PROTECTION cannot be set: it has no prompt, its value is derived"
        " (default y if HW_STACK_PROTECTION)",
    ),
    (
        "qemu_x86",
        "# CONFIG_ARCH_SUPPORTS_MEM_MAPPED_STACKS is not set\n",
        1,
        "ARCH_SUPPORTS_MEM_MAPPED_STACKS cannot be set: it has no prompt, its value is derived"
        " (selected by X86)",
    ),
    (
        "qemu_x86",
        "CONFIG_MMU_PAGE_SIZE=0x2000\n",
        1,
        "MMU_PAGE_SIZE cannot be set: it has no prompt, its value is derived (default 0x1000)",
    ),
    (
        "qemu_x86",
        "CONFIG_DYNAMIC_THREAD=y\nCONFIG_DYNAMIC_THREAD_PREFER_ALLOC=y\n",
        2,
        "DYNAMIC_THREAD_PREFER_ALLOC=y has no effect: depends on DYNAMIC_THREAD_ALLOC, which is n",
    ),
    (
        "qemu_x86",
        "CONFIG_DYNAMIC_THREAD_PREFER_POOL=y\n",
        1,
        "DYNAMIC_THREAD_PREFER_POOL=y has no effect: depends on DYNAMIC_THREAD, which is n",
    ),
    (
        "qemu_x86",
        "CONFIG_DYNAMIC_THREAD=y\n# CONFIG_DYNAMIC_THREAD_PREFER_POOL is not set\n",
        2,
        "DYNAMIC_THREAD_PREFER_POOL=n has no effect: it is the selection of the choice"
        " DYNAMIC_THREAD_PREFER; set another of its symbols to y instead",
    ),
    (
        "qemu_x86",
        "CONFIG_USERSPACE=y\nCONFIG_PRIVILEGED_STACK_SIZE=1024\n",
        2,
        "PRIVILEGED_STACK_SIZE=1024 is not a positive multiple of MMU_PAGE_SIZE (0x1000): on x86"
        " the privilege stack is mapped in whole pages",
    ),
    (
        "qemu_x86",
        "CONFIG_KERNEL_VM_BASE=0x100800\n",
        1,
        "KERNEL_VM_BASE=0x100800 is not a multiple of MMU_PAGE_SIZE (0x1000)",
    ),
    (
        "qemu_x86",
        "CONFIG_KERNEL_VM_SIZE=0x0\n",
        1,
        "KERNEL_VM_SIZE=0x0 is not a positive multiple of MMU_PAGE_SIZE (0x1000)",
    ),
    (
        "qemu_x86",
        "CONFIG_SRAM_SIZE=4095\n",
        1,
        "SRAM_SIZE=4095 KiB is not a whole number of pages (MMU_PAGE_SIZE 0x1000)",
    ),
    (
        "qemu_x86",
        "CONFIG_KERNEL_VM_BASE=0xfff00000\nCONFIG_KERNEL_VM_SIZE=0x800000\n",
        2,
        "KERNEL_VM_BASE + KERNEL_VM_SIZE = 0x100700000 is beyond the 32-bit address space"
        " (0x100000000)",
    ),
]


@pytest.mark.parametrize(("board", "text", "line", "reason"), ERRORS)
def test_errors_name_file_line_and_reason(
    tmp_file: TmpFile, board: str, text: str, line: int, reason: str
) -> None:
    frag = tmp_file("prj.conf", text)
    with pytest.raises(ConfigError) as info:
        load_config(board, [frag])
    e = info.value
    assert (e.path, e.line, e.reason) == (str(frag), line, reason)
    assert str(e) == f"{frag}:{line}: {reason}"


# values the kernel cannot boot with: each int/hex symbol has a range (issue 11)
UNBOOTABLE = [
    ("qemu_x86", "CONFIG_MAIN_STACK_SIZE=-4096", "MAIN_STACK_SIZE=-4096 is out of range: allowed 256..1048576"),
    ("qemu_x86", "CONFIG_SRAM_SIZE=0", "SRAM_SIZE=0 is out of range: allowed 256..1048576"),
    ("qemu_x86", "CONFIG_SRAM_SIZE=99999996", "SRAM_SIZE=99999996 is out of range: allowed 256..1048576"),
    ("qemu_x86_64", "CONFIG_ISR_STACK_SIZE=2147483647", "ISR_STACK_SIZE=2147483647 is out of range: allowed 1024..65536"),
    ("qemu_x86", "CONFIG_IDLE_STACK_SIZE=0", "IDLE_STACK_SIZE=0 is out of range: allowed 256..65536"),
    ("qemu_x86_64", "CONFIG_X86_EXCEPTION_STACK_SIZE=-1", "X86_EXCEPTION_STACK_SIZE=-1 is out of range: allowed 1024..65536"),
    ("qemu_x86", "CONFIG_TEST_EXTRA_STACK_SIZE=-8", "TEST_EXTRA_STACK_SIZE=-8 is out of range: allowed 0..65536"),
    ("qemu_x86", "CONFIG_KERNEL_VM_SIZE=0x100000000", "KERNEL_VM_SIZE=0x100000000 is out of range: allowed 0x0..0x40000000"),
    ("qemu_x86", "CONFIG_SRAM_BASE_ADDRESS=0xffffffff000", "SRAM_BASE_ADDRESS=0xffffffff000 is out of range: allowed 0x0..0xfffff000"),
    ("qemu_x86", "CONFIG_USERSPACE=y\nCONFIG_PRIVILEGED_STACK_SIZE=-4096", "PRIVILEGED_STACK_SIZE=-4096 is out of range: allowed 0..1048576"),
    ("qemu_x86", "CONFIG_USERSPACE=y\nCONFIG_X86_MAX_ADDITIONAL_MEM_DOMAINS=-1", "X86_MAX_ADDITIONAL_MEM_DOMAINS=-1 is out of range: allowed 0..256"),
    ("qemu_x86", "CONFIG_USERSPACE=y\nCONFIG_MAX_DOMAIN_PARTITIONS=256", "MAX_DOMAIN_PARTITIONS=256 is out of range: allowed 0..255"),
    ("qemu_x86", "CONFIG_DYNAMIC_THREAD=y\nCONFIG_DYNAMIC_THREAD_STACK_SIZE=0", "DYNAMIC_THREAD_STACK_SIZE=0 is out of range: allowed 256..1048576"),
    ("qemu_x86_atom_virt", "CONFIG_SRAM_BASE_ADDRESS=0xfff00000", "SRAM_BASE_ADDRESS + SRAM_SIZE KiB = 0x100300000 is beyond 4 GiB (0x100000000): mmusim keeps RAM, and the page tables in it, below 4 GiB"),
]  # fmt: skip


@pytest.mark.parametrize(("board", "text", "reason"), UNBOOTABLE)
def test_values_the_kernel_cannot_boot_are_refused(
    tmp_file: TmpFile, board: str, text: str, reason: str
) -> None:
    frag = tmp_file("prj.conf", text + "\n")
    line = text.count("\n") + 1
    assert error_of(board, frag) == f"{frag}:{line}: {reason}"


def test_every_int_and_hex_symbol_with_a_prompt_has_a_range(kconf: kconfiglib.Kconfig) -> None:
    free = {"KERNEL_VM_BASE", "KERNEL_VM_OFFSET"}  # checked by the loader's x86 rules instead
    missing = [
        s.name
        for s in kconf.unique_defined_syms
        if s.orig_type in (kconfiglib.INT, kconfiglib.HEX)
        and any(n.prompt for n in s.nodes)
        and not s.ranges
        and s.name not in free
    ]
    assert missing == []


def test_a_later_line_that_makes_a_range_apply_is_blamed(tmp_file: TmpFile) -> None:
    frag = tmp_file("prj.conf", "CONFIG_INIT_STACKS=y\nCONFIG_SMP=n\n")
    defconfig = KCONFIG_DIR / "boards" / "qemu_x86_64.defconfig"
    assert error_of("qemu_x86_64", frag) == (
        f"{frag}:2: SMP=n puts MP_MAX_NUM_CPUS=2 ({defconfig}:19) out of range: allowed 1..1"
        " while !SMP (set CONFIG_MP_MAX_NUM_CPUS too)"
    )
    ok = tmp_file("ok.conf", "CONFIG_SMP=n\nCONFIG_MP_MAX_NUM_CPUS=1\n")
    assert load_config("qemu_x86_64", [ok]).MP_MAX_NUM_CPUS == 1


def test_the_vm_window_may_be_large_on_x86_64(tmp_file: TmpFile) -> None:
    frag = tmp_file(
        "prj.conf", "CONFIG_THREAD_STACK_MEM_MAPPED=n\nCONFIG_KERNEL_VM_BASE=0xfff00000\n"
    )
    assert load_config("qemu_x86_64", [frag]).KERNEL_VM_BASE == 0xFFF00000


def test_userspace_with_a_page_multiple_privilege_stack(tmp_file: TmpFile) -> None:
    frag = tmp_file("prj.conf", "CONFIG_USERSPACE=y\nCONFIG_PRIVILEGED_STACK_SIZE=8192\n")
    cfg = load_config("qemu_x86", [frag])
    assert cfg.USERSPACE is True and cfg.PRIVILEGED_STACK_SIZE == 8192
    assert (
        load_config("qemu_x86", [tmp_file("u.conf", "CONFIG_USERSPACE=y\n")]).get(
            "PRIVILEGED_STACK_SIZE"
        )
        == 4096
    )


def test_dynamic_thread_choice(tmp_file: TmpFile) -> None:
    frag = tmp_file(
        "prj.conf",
        "CONFIG_DYNAMIC_THREAD=y\nCONFIG_DYNAMIC_THREAD_ALLOC=y\n"
        "CONFIG_DYNAMIC_THREAD_PREFER_ALLOC=y\nCONFIG_DYNAMIC_THREAD_POOL_SIZE=4\n",
    )
    cfg = load_config("qemu_x86", [frag])
    assert cfg.DYNAMIC_THREAD_PREFER_ALLOC is True and cfg.DYNAMIC_THREAD_PREFER_POOL is False
    assert cfg.DYNAMIC_THREAD_POOL_SIZE == 4 and cfg.DYNAMIC_THREAD_STACK_SIZE == 4096
    # a later pick in the same choice overrides an earlier one without error
    later = tmp_file("later.conf", "CONFIG_DYNAMIC_THREAD_PREFER_POOL=y\n")
    assert load_config("qemu_x86", [frag, later]).DYNAMIC_THREAD_PREFER_POOL is True


def test_error_in_the_board_defconfig_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mmusim.kconfig as kc

    fake = tmp_path / "boards"
    fake.mkdir()
    (fake / "bad.defconfig").write_text("CONFIG_X86_MMU=y\nCONFIG_NOT_A_SYMBOL=y\n")
    monkeypatch.setattr(kc, "_BOARDS_DIR", fake)
    assert error_of("bad") == f"{fake / 'bad.defconfig'}:2: unknown symbol CONFIG_NOT_A_SYMBOL"


def test_unreadable_fragment(tmp_path: Path) -> None:
    missing = tmp_path / "nope.conf"
    with pytest.raises(ConfigError) as info:
        load_config("qemu_x86", [missing])
    assert (info.value.path, info.value.line) == (str(missing), None)
    assert (
        str(info.value) == f"{missing}: cannot read configuration file: No such file or directory"
    )


def test_unknown_board() -> None:
    with pytest.raises(ValueError, match=r"unknown board 'qemu_arm' \(choose from qemu_x86, "):
        load_config("qemu_arm")


# -- override order ----------------------------------------------------------------------------


def test_later_assignments_override_earlier_ones(tmp_file: TmpFile) -> None:
    a = tmp_file("a.conf", "CONFIG_MP_MAX_NUM_CPUS=3\nCONFIG_INIT_STACKS=y\n")
    b = tmp_file("b.conf", "CONFIG_MP_MAX_NUM_CPUS=4\n")
    assert load_config("qemu_x86_64").MP_MAX_NUM_CPUS == 2  # the defconfig
    assert load_config("qemu_x86_64", [a]).MP_MAX_NUM_CPUS == 3
    cfg = load_config("qemu_x86_64", [a, b])
    assert cfg.MP_MAX_NUM_CPUS == 4 and cfg.INIT_STACKS is True
    assert load_config("qemu_x86_64", [b, a]).MP_MAX_NUM_CPUS == 3
    extra = (("scenario.toml", 7, "CONFIG_MP_MAX_NUM_CPUS=1"),)
    assert load_config("qemu_x86_64", [a, b], extra_lines=extra).MP_MAX_NUM_CPUS == 1


def test_only_the_value_in_force_is_range_checked(tmp_file: TmpFile) -> None:
    a = tmp_file("a.conf", "CONFIG_MP_MAX_NUM_CPUS=9\n")
    b = tmp_file("b.conf", "CONFIG_MP_MAX_NUM_CPUS=3\n")
    assert load_config("qemu_x86_64", [a, b]).MP_MAX_NUM_CPUS == 3
    assert (
        error_of("qemu_x86_64", b, a) == f"{a}:1: MP_MAX_NUM_CPUS=9 is out of range: allowed 1..4"
    )


def test_a_dependency_error_names_the_last_assignment(tmp_file: TmpFile) -> None:
    a = tmp_file("a.conf", "CONFIG_PRIVILEGED_STACK_SIZE=8192\n")
    b = tmp_file("b.conf", "CONFIG_INIT_STACKS=y\n\nCONFIG_PRIVILEGED_STACK_SIZE=12288\n")
    assert error_of("qemu_x86", a, b) == (
        f"{b}:3: PRIVILEGED_STACK_SIZE=12288 has no effect: depends on USERSPACE, which is n"
    )
    # a board line that a fragment makes ineffective is reported at the board line, naming
    # the fragment's line that did it (X86_64=n selects USE_SWITCH no more)
    off = tmp_file("off.conf", "CONFIG_X86_64=n\n")
    defconfig = KCONFIG_DIR / "boards" / "qemu_x86_64.defconfig"
    line = defconfig.read_text().splitlines().index("CONFIG_SMP=y") + 1
    assert error_of("qemu_x86_64", off) == (
        f"{defconfig}:{line}: SMP=y has no effect: depends on USE_SWITCH, which is n (X86_64=n);"
        f" X86_64=n is set at {off}:1"
    )


def test_a_later_fragment_can_satisfy_an_earlier_dependency(tmp_file: TmpFile) -> None:
    a = tmp_file("a.conf", "CONFIG_PRIVILEGED_STACK_SIZE=8192\n")
    b = tmp_file("b.conf", "CONFIG_USERSPACE=y\n")
    assert load_config("qemu_x86", [a, b]).PRIVILEGED_STACK_SIZE == 8192


def test_extra_lines_report_their_origin_and_line() -> None:
    extra = (
        ("scenario.toml", 11, "CONFIG_INIT_STACKS=y"),
        ("scenario.toml", 12, "CONFIG_SMP=5"),
    )
    assert error_of("qemu_x86_64", extra=extra) == (
        "scenario.toml:12: SMP is a bool symbol: '5' is not y or n"
    )
    cfg = load_config(
        "qemu_x86_64",
        extra_lines=extra[:1] + (("other.toml", 3, "# CONFIG_SIM_TLB_SHOOTDOWN is not set"),),
    )
    assert cfg.INIT_STACKS is True and cfg.SIM_TLB_SHOOTDOWN is False
    assert cfg.sources[1:] == ("scenario.toml", "other.toml")
    dep = (("scenario.toml", 4, "CONFIG_THREAD_STACK_MEM_MAPPED=y"),)
    assert error_of("qemu_x86_atom_virt", extra=dep).startswith(
        "scenario.toml:4: THREAD_STACK_MEM_MAPPED=y needs identity-mapped RAM"
    )


# -- Config ------------------------------------------------------------------------------------


def test_config_access() -> None:
    cfg = load_config("qemu_x86")
    assert cfg.get("SMP") is False and cfg.values["SMP"] is False
    assert cfg.get("PRIVILEGED_STACK_SIZE") is None  # no USERSPACE: no value
    assert cfg.get("PRIVILEGED_STACK_SIZE", 4096) == 4096
    assert cfg.get("NOT_A_SYMBOL", 7) == 7
    with pytest.raises(AttributeError, match="NOT_A_SYMBOL is not a Kconfig symbol"):
        _ = cfg.NOT_A_SYMBOL
    with pytest.raises(AttributeError, match="PRIVILEGED_STACK_SIZE has no value in this"):
        _ = cfg.PRIVILEGED_STACK_SIZE
    assert "PRIVILEGED_STACK_SIZE" in cfg.inactive and "PRIVILEGED_STACK_SIZE" not in cfg.values
    with pytest.raises(AttributeError):
        _ = cfg.lowercase_attribute


def test_config_is_a_frozen_hashable_value() -> None:
    cfg = load_config("qemu_x86_64")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        cfg.board = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.values["SMP"] = False  # type: ignore[index]
    assert cfg == load_config("qemu_x86_64") and hash(cfg) == hash(load_config("qemu_x86_64"))
    assert cfg != load_config("qemu_x86")
    assert list(cfg.values)[:3] == ["X86", "X86_64", "X86_MMU"]  # Kconfig order
    handmade = Config(board="test", values={"SMP": True, "MP_MAX_NUM_CPUS": 2})
    assert handmade.MP_MAX_NUM_CPUS == 2 and handmade.lines() == []


def test_lines_look_like_a_dotconfig() -> None:
    lines = load_config("qemu_x86_64").lines()
    assert lines[0] == "CONFIG_X86=y"
    for expected in (
        "CONFIG_X86_64=y",
        "CONFIG_MMU_PAGE_SIZE=0x1000",
        "CONFIG_KERNEL_VM_BASE=0x100000",
        "CONFIG_MP_MAX_NUM_CPUS=2",
        "# CONFIG_USERSPACE is not set",
        "CONFIG_THREAD_STACK_MEM_MAPPED=y",
        "CONFIG_SIM_TLB_SHOOTDOWN=y",
    ):
        assert expected in lines
    assert not any(line.startswith("CONFIG_PRIVILEGED_STACK_SIZE") for line in lines)


@pytest.mark.parametrize("board", BOARDS)
def test_lines_round_trip_as_a_saved_configuration(tmp_file: TmpFile, board: str) -> None:
    frag = tmp_file("prj.conf", "CONFIG_INIT_STACKS=y\nCONFIG_USERSPACE=y\n")
    cfg = load_config(board, [frag])
    saved = tmp_file("saved.conf", "# Generated by mmusim config\n" + "\n".join(cfg.lines()))
    again = load_config(board, [saved])
    assert again.values == cfg.values and again.lines() == cfg.lines()
    # kconfiglib reads them back to the same values too
    kconf, _ = resolve_kconfig(board)
    kconf.load_config(str(saved))
    assert {s.name: s.str_value for s in kconf.unique_defined_syms if s.config_string} == {
        line.split("=")[0].removeprefix("CONFIG_"): line.split("=")[1]
        for line in cfg.lines()
        if "=" in line
    } | {line[9:-11]: "n" for line in cfg.lines() if line.startswith("# CONFIG_")}


def test_a_dotconfig_without_the_header_is_a_handwritten_fragment(tmp_file: TmpFile) -> None:
    plain = tmp_file("plain.conf", "\n".join(load_config("qemu_x86").lines()))
    assert error_of("qemu_x86", plain) == (
        f"{plain}:1: X86 cannot be set: it has no prompt, its value is derived (default y)"
    )


def test_a_saved_configuration_must_still_match(tmp_file: TmpFile) -> None:
    saved = tmp_file("saved.conf", "# Generated by mmusim config\nCONFIG_MMU=y\nCONFIG_X86_MMU=n\n")
    assert error_of("qemu_x86", saved) == (
        f"{saved}:2: MMU=y has no effect: MMU has no prompt and is n here (selected by X86_MMU)"
    )


def test_a_menuconfig_style_save_loads_back(tmp_path: Path) -> None:
    extra = (("here", 1, "CONFIG_THREAD_STACK_MEM_MAPPED=y"),)
    kconf, cfg = resolve_kconfig("qemu_x86", extra_lines=extra)
    kconf.write_config(str(tmp_path / "saved"), header="# Generated by mmusim menuconfig\n")
    assert "# end of Simulator" in (tmp_path / "saved").read_text()
    assert load_config("qemu_x86", [tmp_path / "saved"]).values == cfg.values


def test_does_not_depend_on_cwd_or_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = load_config("qemu_x86_64").lines()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("srctree", str(tmp_path))
    monkeypatch.setenv("CONFIG_", "OTHER_")
    monkeypatch.setenv("KCONFIG_CONFIG_HEADER", "# header\n")
    monkeypatch.setenv("KCONFIG_CONFIG", str(tmp_path / "x.config"))
    (tmp_path / ".config").write_text("CONFIG_SMP=n\n")
    assert load_config("qemu_x86_64").lines() == expected
