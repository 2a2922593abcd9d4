/* lt_cl_ptx_sm90a, which finishes the compiled PTX of the wgmma GEMM for sm_90a: the marked
 * instructions are uncommented, the one ".target sm_90" becomes sm_90a, nothing else
 * changes, only the given length is read, and PTX for any other target is refused. Runs
 * wherever the OpenCL backend is built; the GEMM itself is tested on the GPU by
 * test_gemm_mma. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "tap.h"

#if LT_HAVE_OPENCL
#include "cl_impl.h"

/* lt_cl_ptx_sm90a(in) equals want (NULL: refused). */
static int patched_to(const char *in, size_t len, const char *want)
{
	char *got = lt_cl_ptx_sm90a(in, len);
	int same = want ? got && !strcmp(got, want) : got == NULL;
	if (!same)
		tap_diag("got: %s", got ? got : "(refused)");
	free(got);
	return same;
}

int main(void)
{
	static const char ptx[] =
		"//\n// Generated\n//\n.version 8.5\n.target sm_90, texmode_independent\n"
		".address_size 64\n\t// begin inline asm\n\t//LTWG:wgmma.fence.sync.aligned;\n"
		"\t// end inline asm\n//LTWG:{\n//LTWG:wgmma.mma_async %f1, %rd2;\n//LTWG:}\n"
		"\tret;\n";
	static const char want[] =
		"//\n// Generated\n//\n.version 8.5\n.target sm_90a, texmode_independent\n"
		".address_size 64\n\t// begin inline asm\n\twgmma.fence.sync.aligned;\n"
		"\t// end inline asm\n{\nwgmma.mma_async %f1, %rd2;\n}\n\tret;\n";
	tap_plan(6);
	tap_ok(patched_to(ptx, sizeof ptx, want),
	       "marked lines are uncommented, the target becomes sm_90a, the rest is kept");
	tap_ok(patched_to(".target sm_90\n//LTWG:x;\n", 24, ".target sm_90a\nx;\n"),
	       "a target at the end of its line");
	static const char cut[] = ".target sm_90\nret;\n//LTWG:never read";
	tap_ok(patched_to(cut, 19, ".target sm_90a\nret;\n"),
	       "only the given length is read (PTX without its terminating NUL)");
	tap_ok(patched_to(".version 7.0\n.target sm_80\n//LTWG:x;\n", 37, NULL),
	       "PTX for sm_80 is refused");
	tap_ok(patched_to(".target sm_90a\nx;\n", 18, NULL) &&
		       patched_to(".target sm_900\nx;\n", 18, NULL),
	       "targets that only begin with sm_90 are refused");
	tap_ok(patched_to(".target sm_90\n.target sm_90\n", 28, NULL),
	       "PTX with two targets is refused");
	return tap_done();
}
#else
int main(void)
{
	tap_skip_all("built without OpenCL, which lt_cl_ptx_sm90a belongs to");
}
#endif
