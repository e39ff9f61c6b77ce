/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Ring 3 for the test guest (ring3.c sets it up): the identity map with U/S set, the ring
 * transition and the exception stubs that bring the CPU back to ring 0.
 *
 * Why ring 3 at all: on the development machines' /dev/kvm guest ring 0 is emulated
 * (~1.7M instructions/s) while ring 3 runs natively (/work/shared/ENVIRONMENT.md), so a
 * loop that must run at native speed (blk_bench.c) runs at CPL 3. `syscall` and `int n`
 * do not reach ring 0 there, but exceptions do: ring-3 code ends with `ud2`.
 */

#define SEL_KERNEL_DATA 0x10
#define SEL_USER_DATA 0x1b /* GDT index 3, RPL 3 */
#define SEL_USER_CODE 0x23 /* GDT index 4, RPL 3 */
#define RFLAGS_RESERVED 0x2 /* IF = 0, IOPL = 0 (IOPL 3 is refused here) */

	.section .text, "ax"
	.code64

/*
 * u64 ring3_enter(void (*fn)(void*), void* arg, u64 user_stack_top)
 * Runs fn(arg) at CPL 3 on the given stack. Returns the vector of the exception that
 * brought the CPU back to ring 0 (6, #UD, from ring3_return_ud2 when fn returned);
 * ring3_last_* (ring3.c) hold its error code, RIP and CS.
 */
	.globl ring3_enter
ring3_enter:
	push	%rbx
	push	%rbp
	push	%r12
	push	%r13
	push	%r14
	push	%r15
	mov	%rsp, ring3_saved_rsp(%rip)
	pushq	$SEL_USER_DATA		/* SS */
	push	%rdx			/* RSP */
	pushq	$RFLAGS_RESERVED	/* RFLAGS */
	pushq	$SEL_USER_CODE		/* CS */
	lea	ring3_trampoline(%rip), %rax
	push	%rax			/* RIP */
	mov	%rdi, %rax
	mov	%rsi, %rdi
	iretq

/* CPL 3 from here on: the stack is 16-byte aligned, so after `call` fn sees the ABI's
 * entry alignment. */
ring3_trampoline:
	call	*%rax
	.globl ring3_return_ud2
ring3_return_ud2:
	ud2

/*
 * Exception and interrupt stubs, one per vector (ring3.c builds the IDT from
 * ring3_stubs, each 16 bytes apart). The CPU pushed SS, RSP, RFLAGS, CS, RIP and, for
 * vectors 8, 10-14, 17, 21, 29 and 30, an error code; the stubs even out the frame so
 * ring3_trap always finds [vector, error code, RIP, CS, ...].
 */
	.balign	16
	.globl ring3_stubs
ring3_stubs:
	.set	vector, 0
	.rept	256
	.balign	16
	.if	(vector == 8) || ((vector >= 10) && (vector <= 14)) || (vector == 17) || (vector == 21) || (vector == 29) || (vector == 30)
	pushq	$vector
	.else
	pushq	$0
	pushq	$vector
	.endif
	jmp	ring3_trap
	.set	vector, vector + 1
	.endr

/* Records the exception and unwinds to ring3_enter's caller: whatever ran at CPL 3 is
 * abandoned (its stack and the frame on the ring-0 stack are simply dropped). */
ring3_trap:
	pop	%rax
	mov	%rax, ring3_last_vector(%rip)
	pop	%rcx
	mov	%rcx, ring3_last_error(%rip)
	mov	(%rsp), %rcx
	mov	%rcx, ring3_last_rip(%rip)
	mov	8(%rsp), %rcx
	mov	%rcx, ring3_last_cs(%rip)
	mov	$SEL_KERNEL_DATA, %ecx
	mov	%ecx, %ss
	mov	%ecx, %ds
	mov	%ecx, %es
	mov	ring3_saved_rsp(%rip), %rsp
	pop	%r15
	pop	%r14
	pop	%r13
	pop	%r12
	pop	%rbp
	pop	%rbx
	ret

/*
 * The low 4 GiB identity-mapped with 2 MiB pages, like head.S's boot_pml4 but with U/S
 * set at every level so CPL 3 reaches code, data, the device rings and the MMIO BARs.
 * SMEP and SMAP stay off (ring3.c clears them), so ring 0 still reads everything.
 */
	.section .data.ring3_pagetables, "aw"
	.balign	4096
	.globl ring3_pml4
ring3_pml4:
	.quad	ring3_pdpt + 0x7
	.fill	511, 8, 0
ring3_pdpt:
	.quad	ring3_pd + 0x0007
	.quad	ring3_pd + 0x1007
	.quad	ring3_pd + 0x2007
	.quad	ring3_pd + 0x3007
	.fill	508, 8, 0
ring3_pd:
	.set	page, 0
	.rept	2048
	.if	page >= 0xc0000000
	.quad	page + 0x9f		/* present, writable, user, PWT, PCD, 2 MiB */
	.else
	.quad	page + 0x87		/* present, writable, user, 2 MiB */
	.endif
	.set	page, page + 0x200000
	.endr
