#include "textflag.h"

// func hasRDTSCP() bool
TEXT ·hasRDTSCP(SB), NOSPLIT, $0-1
	MOVL $0x80000000, AX
	CPUID
	CMPL AX, $0x80000001
	JB   none
	MOVL $0x80000001, AX
	MOVL $0, CX
	CPUID
	SHRL $27, DX
	ANDL $1, DX
	MOVB DX, ret+0(FP)
	RET
none:
	MOVB $0, ret+0(FP)
	RET

// func rdtscpCore() int
// The same three bytes and mask as M3's src/x/sync/cpu_linux_amd64.s.
TEXT ·rdtscpCore(SB), NOSPLIT, $0-8
	BYTE $0x0f; BYTE $0x01; BYTE $0xf9
	ANDQ $0xff, CX
	MOVQ CX, ret+0(FP)
	RET
