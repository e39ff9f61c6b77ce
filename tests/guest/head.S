/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Entry points of the skiff test guest. One image, linked at 1 MiB, serves every way
 * skiff (and QEMU, for cross-checking) can start it:
 *
 *   image+0x000  startup_32   32-bit bzImage entry (code32_start): ESI = boot_params,
 *                             flat segments, paging off (boot protocol "32-bit boot").
 *                             Also reached from the real-mode setup (setup.S) with
 *                             EDI = kRealModeMagic, which only changes the entry tag.
 *   image+0x1c0  kernel_info  "LToP" (boot protocol 2.15), then our own "SKFG" record
 *                             that mkbzimage.py reads to fill init_size.
 *   image+0x200  startup_64   64-bit bzImage entry: long mode, low 4 GiB identity
 *                             mapped, RSI = boot_params (boot protocol "64-bit boot").
 *   pvh_start                 PVH entry named by the XEN_ELFNOTE_PHYS32_ENTRY note:
 *                             32-bit protected mode, paging off, EBX = hvm_start_info.
 *
 * The 32-bit entries build long mode with the static page tables below and meet the
 * 64-bit entry in guest_main(tag, info). Code is split by CPU mode into .text16,
 * .text32 and .text so check_insns.sh can disassemble each section in its own mode;
 * .head holds only two jumps and data, so it is not an executable section.
 */

#define BOOT_TAG_PVH 1
#define BOOT_TAG_BZIMAGE16 2
#define BOOT_TAG_BZIMAGE32 3
#define BOOT_TAG_BZIMAGE64 4
#define REAL_MODE_MAGIC 0x4d524b53 /* "SKRM", set by setup.S in EDI */

#define SEL_CODE64 0x08
#define SEL_DATA 0x10
#define SEL_CODE32 0x18

#define MSR_EFER 0xc0000080
#define EFER_LME 0x100
#define CR0_PE 0x1
#define CR0_PG 0x80000000
#define CR4_PAE 0x20

/* ---- fixed-offset head ------------------------------------------------------------- */
	.section .head, "a"
	.code32
	.globl startup_32
startup_32:
	jmp	startup_32_body

	.org	0x1c0, 0
	.globl kernel_info
kernel_info:
	.ascii	"LToP"			/* Linux top-level kernel_info header */
	.long	16			/* size of the fixed part */
	.long	16			/* size including variable data (none) */
	.long	0			/* setup_type_max: we read no setup_data */
skiff_image_info:
	.ascii	"SKFG"
	.long	_end - startup_32	/* init_size: image + bss + stack */
	.long	_edata - startup_32	/* bytes the loader must copy */
	.long	0

	.org	0x200, 0
	.code64
	.globl startup_64
startup_64:
	jmp	startup_64_body

/* ---- 32-bit code -------------------------------------------------------------------- */
	.section .text32, "ax"
	.code32
startup_32_body:
	cli
	cld
	mov	%esi, %ebp
	cmp	$REAL_MODE_MAGIC, %edi
	mov	$BOOT_TAG_BZIMAGE32, %edi
	jne	enter_long_mode
	mov	$BOOT_TAG_BZIMAGE16, %edi
	jmp	enter_long_mode

	.globl pvh_start
pvh_start:
	cli
	cld
	mov	%ebx, %ebp
	mov	$BOOT_TAG_PVH, %edi

/* EDI = boot tag, EBP = boot info pointer; both survive into 64-bit mode. */
enter_long_mode:
	lgdt	gdt_desc
	mov	$SEL_DATA, %eax
	mov	%eax, %ds
	mov	%eax, %es
	mov	%eax, %ss
	mov	%eax, %fs
	mov	%eax, %gs
	mov	%cr4, %eax
	or	$CR4_PAE, %eax
	mov	%eax, %cr4
	mov	$boot_pml4, %eax
	mov	%eax, %cr3
	mov	$MSR_EFER, %ecx
	rdmsr
	or	$EFER_LME, %eax
	wrmsr
	mov	%cr0, %eax
	or	$(CR0_PG | CR0_PE), %eax
	mov	%eax, %cr0
	ljmp	$SEL_CODE64, $long_mode_32_entry

/*
 * Application processors arrive here from the real-mode trampoline (.text16, copied
 * to 0x3000) with CS = SEL_CODE32. They reuse the BSP's CR3 and EFER (ap_cr3, ap_efer
 * are filled by smp.c before the SIPIs).
 */
	.globl ap_entry32
ap_entry32:
	mov	$SEL_DATA, %eax
	mov	%eax, %ds
	mov	%eax, %es
	mov	%eax, %ss
	mov	%cr4, %eax
	or	$CR4_PAE, %eax
	mov	%eax, %cr4
	mov	ap_cr3, %eax
	mov	%eax, %cr3
	mov	$MSR_EFER, %ecx
	rdmsr
	mov	ap_efer, %eax
	or	$EFER_LME, %eax
	wrmsr
	mov	%cr0, %eax
	or	$(CR0_PG | CR0_PE), %eax
	mov	%eax, %cr0
	ljmp	$SEL_CODE64, $ap_entry64

/* ---- 16-bit AP trampoline, copied to kApTrampolineAddr (0x3000) ----------------------- */
	.section .text16, "ax"
	.code16
	.globl ap_trampoline_start
ap_trampoline_start:
	cli
	mov	%cs, %ax
	mov	%ax, %ds
	lgdtl	(ap_trampoline_gdtr - ap_trampoline_start)
	mov	%cr0, %eax
	or	$CR0_PE, %eax
	mov	%eax, %cr0
	ljmpl	$SEL_CODE32, $ap_entry32
	.balign	4
ap_trampoline_gdtr:
	.word	gdt_end - gdt - 1
	.long	gdt
	.globl ap_trampoline_end
ap_trampoline_end:

/* ---- 64-bit code ---------------------------------------------------------------------- */
	.section .text, "ax"
	.code64
long_mode_32_entry:
	mov	%ebp, %esi			/* zero-extends: info pointers are < 4 GiB */
	jmp	call_main

startup_64_body:
	cli
	cld
	/* Our own GDT, so nothing below depends on where the loader put its one. */
	lgdt	gdt_desc(%rip)
	pushq	$SEL_CODE64
	lea	1f(%rip), %rax
	pushq	%rax
	lretq
1:	mov	$SEL_DATA, %eax
	mov	%eax, %ds
	mov	%eax, %es
	mov	%eax, %ss
	mov	%eax, %fs
	mov	%eax, %gs
	mov	$BOOT_TAG_BZIMAGE64, %edi

/* EDI = boot tag, RSI = boot info pointer. */
call_main:
	lea	stack_top(%rip), %rsp
	/* Zero .bss (not the stack): a loader copies only the file part of the image. */
	mov	%rdi, %r8
	lea	__bss_start(%rip), %rdi
	lea	__bss_end(%rip), %rcx
	sub	%rdi, %rcx
	shr	$3, %rcx
	xor	%eax, %eax
	rep stosq
	mov	%r8, %rdi
	call	guest_main
2:	cli
	hlt
	jmp	2b

	.globl ap_entry64
ap_entry64:
	lock incl ap_started_count(%rip)
3:	cli
	hlt
	jmp	3b

/* ---- data ---------------------------------------------------------------------------- */
	.section .data, "aw"
	.balign	16
	.globl gdt
gdt:
	.quad	0
	.quad	0x00af9b000000ffff	/* 0x08: 64-bit code, accessed bit preset */
	.quad	0x00cf93000000ffff	/* 0x10: flat data */
	.quad	0x00cf9b000000ffff	/* 0x18: flat 32-bit code */
gdt_end:
	.balign	8
	.word	0, 0, 0
gdt_desc:
	.word	gdt_end - gdt - 1
	.quad	gdt

	.balign	8
	.globl ap_cr3, ap_efer, ap_started_count
ap_cr3:	.long	0
ap_efer: .long	0
ap_started_count: .long 0

/*
 * Identity map of the low 4 GiB with 2 MiB pages, built by the assembler so it costs
 * no ring-0 instructions at run time. The top GiB (MMIO: LAPIC, IOAPIC, PCI) is
 * mapped uncached (PCD | PWT).
 */
	.section .data.pagetables, "aw"
	.balign	4096
	.globl boot_pml4
boot_pml4:
	.quad	boot_pdpt + 0x3
	.fill	511, 8, 0
boot_pdpt:
	.quad	boot_pd + 0x0003
	.quad	boot_pd + 0x1003
	.quad	boot_pd + 0x2003
	.quad	boot_pd + 0x3003
	.fill	508, 8, 0
boot_pd:
	.set	page, 0
	.rept	2048
	.if	page >= 0xc0000000
	.quad	page + 0x9b		/* present, writable, PWT, PCD, 2 MiB */
	.else
	.quad	page + 0x83		/* present, writable, 2 MiB */
	.endif
	.set	page, page + 0x200000
	.endr

/* ---- PVH note: XEN_ELFNOTE_PHYS32_ENTRY (18), an 8-byte address as Linux emits it. ---- */
	.section .note.Xen, "a", @note
	.balign	4
	.long	4			/* namesz: "Xen\0" */
	.long	8			/* descsz */
	.long	18			/* XEN_ELFNOTE_PHYS32_ENTRY */
	.asciz	"Xen"
	.quad	pvh_start

/* ---- stack (not zeroed, not in the file) ------------------------------------------- */
	.section .stack, "aw", @nobits
	.balign	16
	.space	16384
stack_top:
