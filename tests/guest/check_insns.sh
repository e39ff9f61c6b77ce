#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Fails if the test guest contains an instruction that the emulated ring 0 of the
# development machines' /dev/kvm cannot execute (/work/shared/ENVIRONMENT.md: the VM
# stops with KVM_EXIT_INTERNAL_ERROR or the guest gets #UD).
#
# usage: check_insns.sh OBJDUMP GUEST_ELF [SETUP_ELF]
#
# Each code section is disassembled in the CPU mode it runs in: .text (64-bit),
# .text32 (32-bit), .text16 (16-bit). The setup ELF is the bzImage's real-mode setup,
# which only BIOS loaders run (skiff enters at +0x200), so `int $0x15` (the BIOS E820
# call) is allowed there and nowhere else.
set -eu

if [ $# -lt 2 ]; then
  echo "usage: $0 OBJDUMP GUEST_ELF [SETUP_ELF]" >&2
  exit 2
fi
objdump=$1
guest=$2
setup=${3:-}

# Mnemonics (after prefixes) the emulator cannot run, or that our flags must never
# produce: x87, MMX/SSE/AVX, XSAVE family, BMI/ADX, software interrupts, etc.
forbidden='^(int|int1|int3|icebp|into|cmpxchg16b|xsave.*|xrstor.*|xgetbv|xsetbv|fwait|wait|f[a-z0-9]*|emms|femms|ldmxcsr|stmxcsr|vldmxcsr|vstmxcsr|p[a-z0-9]*xor|pxor|pshufb|aes[a-z0-9]*|pclmul[a-z0-9]*|sha[0-9a-z]*|vzeroupper|vzeroall|v[a-z0-9]+|andn|mulx|shlx|shrx|sarx|rorx|adcx|adox|bextr|blsi|blsmsk|blsr|bzhi|pdep|pext|popcnt|lzcnt|tzcnt|crc32.*|movbe|stac|clac|rdtscp|rdpid|invpcid|clwb|clflushopt|verw|verr|lsl|lar|monitor.*|mwait.*|ud1|ud0|sysenter|syscall|\(bad\))$'
# Any operand naming a vector or x87 register.
forbidden_operands='%(x|y|z)mm[0-9]|%st(\(|$|,)|%mm[0-9]|%k[0-7]'

status=0
report=$(mktemp)
trap 'rm -f "$report"' EXIT

# check FILE SECTION MODE ALLOWED_REGEX
check() {
  file=$1 section=$2 mode=$3 allowed=$4
  if ! "$objdump" -h "$file" | awk '{print $2}' | grep -qx -- "$section"; then
    return 0
  fi
  "$objdump" -d --no-show-raw-insn -M "$mode" -j "$section" "$file" |
    awk -F '\t' -v forbidden="$forbidden" -v operands="$forbidden_operands" \
        -v allowed="$allowed" -v where="$file:$section" '
      NF >= 2 && $1 ~ /^ *[0-9a-f]+:$/ {
        insn = $2
        n = split(insn, words, /[ ]+/)
        i = 1
        # Skip prefixes so "lock xadd" or "rep stos" are judged by the mnemonic.
        while (i < n && words[i] ~ /^(lock|rep|repz|repe|repnz|repne|data16|data32|addr16|addr32|cs|ds|es|ss|fs|gs|rex(\.[WRXB]+)?|notrack|bnd|xacquire|xrelease)$/) i++
        mnemonic = words[i]
        if (allowed != "" && insn ~ allowed) next
        if (mnemonic ~ forbidden || insn ~ operands) printf "%s %s %s\n", where, $1, insn
      }' >> "$report"
}

check "$guest" .text x86-64 ''
check "$guest" .text32 i386 ''
check "$guest" .text16 i8086 ''
if [ -n "$setup" ]; then
  check "$setup" .bstext i8086 ''
  check "$setup" .text16 i8086 '^int +\$0x15$'
  check "$setup" .text32 i386 ''
fi

# The sections above must be all the code there is: an unexpected executable section
# would escape the check.
for file in "$guest" ${setup:+"$setup"}; do
  extra=$("$objdump" -h "$file" | awk '
    /^ *[0-9]+ / { name = $2; getline; if ($0 ~ /CODE/ && name !~ /^\.(text|text32|text16|bstext)$/) print name }')
  if [ -n "$extra" ]; then
    echo "$file: unchecked code sections: $extra" >> "$report"
  fi
done

if [ -s "$report" ]; then
  echo "forbidden instructions in the test guest:" >&2
  cat "$report" >&2
  status=1
else
  echo "test guest: no forbidden instructions"
fi
exit $status
