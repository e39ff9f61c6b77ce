/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Boot sector, setup header and real-mode setup code of skiff-test-guest.bzimage
 * (Linux x86 boot protocol, Documentation/arch/x86/boot.rst). Linked at 0; the loader
 * places it at some real-mode segment S and enters at S+0x20:0 (the jump at 0x200).
 *
 * skiff never runs this code: it reads the header and enters the protected-mode image
 * at +0x200 in 64-bit mode. It exists so that BIOS loaders (QEMU -M pc -kernel) can boot
 * the same file: it asks the BIOS for the memory map (INT 15h, E820h), builds a
 * boot_params ("zero page") at setup offset 0x1000, enters 32-bit protected mode and
 * jumps to code32_start with ESI = boot_params, as the protocol's 32-bit boot does.
 *
 * Fields that depend on the image sizes (setup_sects, syssize, init_size) are filled by
 * mkbzimage.py.
 */

#define ZERO_PAGE 0x1000	/* boot_params built here, inside the setup area */
#define SETUP_STACK_TOP 0x3000	/* the setup area is 0x3000 bytes (setup_sects = 23) */
#define BP_E820_ENTRIES 0x1e8
#define BP_E820_TABLE 0x2d0
#define BP_HDR 0x1f1
#define BP_HDR_END 0x290	/* end of the setup header we know about (2.15) */
#define E820_MAX_ENTRIES 128
#define SMAP 0x534d4150
#define REAL_MODE_MAGIC 0x4d524b53

	.section .bstext, "ax"
	.code16
	.globl _start
_start:
	/* Booted as a floppy? There is nothing to do: stop. */
	cli
1:	hlt
	jmp	1b

	.section .header, "a"
	.globl hdr, hdr_end
hdr:
setup_sects:		.byte	0		/* mkbzimage.py */
root_flags:		.word	0
syssize:		.long	0		/* mkbzimage.py: image size / 16 */
ram_size:		.word	0
vid_mode:		.word	0xffff		/* NORMAL_VGA */
root_dev:		.word	0
boot_flag:		.word	0xaa55
/* 0x200 */
			.byte	0xeb		/* jmp short start_of_setup */
			.byte	start_of_setup - 1f
1:
header:			.ascii	"HdrS"
version:		.word	0x020f
realmode_swtch:		.long	0
start_sys_seg:		.word	0x1000
kernel_version:		.word	version_string - 0x200
type_of_loader:		.byte	0
loadflags:		.byte	0x01		/* LOADED_HIGH */
setup_move_size:	.word	0x8000
code32_start:		.long	0x100000
ramdisk_image:		.long	0
ramdisk_size:		.long	0
bootsect_kludge:	.long	0
heap_end_ptr:		.word	0
ext_loader_ver:		.byte	0
ext_loader_type:	.byte	0
cmd_line_ptr:		.long	0
initrd_addr_max:	.long	0x7fffffff
kernel_alignment:	.long	0x200000
relocatable_kernel:	.byte	0
min_alignment:		.byte	21
xloadflags:		.word	0x0001		/* XLF_KERNEL_64: entry at +0x200 */
cmdline_size:		.long	4095
hardware_subarch:	.long	0
hardware_subarch_data:	.quad	0
payload_offset:		.long	0
payload_length:		.long	0
setup_data:		.quad	0
pref_address:		.quad	0x100000
init_size:		.long	0		/* mkbzimage.py */
handover_offset:	.long	0
kernel_info_offset:	.long	0x1c0		/* head.S kernel_info */
hdr_end:

	.section .text16, "ax"
	.code16
start_of_setup:
	cli
	cld
	/* Make CS = DS = ES = SS = the setup segment so offsets equal link addresses. */
	mov	%cs, %ax
	sub	$0x20, %ax
	mov	%ax, %ds
	mov	%ax, %es
	mov	%ax, %ss
	mov	$SETUP_STACK_TOP, %sp
	push	%ax
	push	$normalized
	lret
normalized:
	/* Fast A20 gate (port 0x92), in case the firmware left A20 masked. */
	in	$0x92, %al
	or	$0x02, %al
	and	$0xfe, %al
	out	%al, $0x92

	/* boot_params = 0, then the setup header as the loader left it. */
	xor	%ax, %ax
	mov	$ZERO_PAGE, %di
	mov	$2048, %cx
	rep stosw
	mov	$BP_HDR, %si
	mov	$(ZERO_PAGE + BP_HDR), %di
	mov	$(BP_HDR_END - BP_HDR), %cx
	rep movsb

	/* Memory map: INT 15h, AX=E820h, 20-byte entries straight into e820_table. */
	xor	%ebx, %ebx
	xor	%bp, %bp
	mov	$(ZERO_PAGE + BP_E820_TABLE), %di
e820_next:
	mov	$0xe820, %eax
	mov	$SMAP, %edx
	mov	$20, %ecx
	int	$0x15
	jc	e820_done
	cmp	$SMAP, %eax
	jne	e820_done
	inc	%bp
	add	$20, %di
	cmp	$E820_MAX_ENTRIES, %bp
	jae	e820_done
	test	%ebx, %ebx
	jnz	e820_next
e820_done:
	mov	%bp, %ax
	mov	%al, (ZERO_PAGE + BP_E820_ENTRIES)

	/* EBX = physical address of the setup area; patch the GDT base and jump target. */
	xor	%ebx, %ebx
	mov	%ds, %bx
	shl	$4, %ebx
	mov	%ebx, %eax
	add	$gdt, %eax
	mov	%eax, (gdt_desc + 2)
	mov	%ebx, %eax
	add	$protected_mode, %eax
	mov	%eax, (protected_mode_ptr)
	lgdtl	(gdt_desc)
	mov	%cr0, %eax
	or	$1, %eax
	mov	%eax, %cr0
	ljmpl	*(protected_mode_ptr)

	.section .text32, "ax"
	.code32
protected_mode:
	mov	$0x18, %eax		/* __BOOT_DS */
	mov	%eax, %ds
	mov	%eax, %es
	mov	%eax, %ss
	mov	%eax, %fs
	mov	%eax, %gs
	lea	ZERO_PAGE(%ebx), %esi
	mov	0x214(%esi), %eax	/* hdr.code32_start */
	mov	$REAL_MODE_MAGIC, %edi	/* tells startup_32 it came through here */
	jmp	*%eax

	.section .data, "aw"
	.balign	8
gdt:
	.quad	0
	.quad	0
	.quad	0x00cf9b000000ffff	/* 0x10: __BOOT_CS, flat 32-bit code */
	.quad	0x00cf93000000ffff	/* 0x18: __BOOT_DS, flat data */
gdt_end:
gdt_desc:
	.word	gdt_end - gdt - 1
	.long	0
protected_mode_ptr:
	.long	0
	.word	0x10
version_string:
	.asciz	"skiff-test-guest"
