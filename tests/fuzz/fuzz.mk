# tests/fuzz/fuzz.mk - the libFuzzer build behind `make fuzz` (GNU make):
# the library's sources compiled again with clang under libFuzzer's coverage
# instrumentation, ASan and UBSan into fuzz-build/liblt.a, and one program
# fuzz-build/fuzz_NAME per harness. Makefile.am's fuzz rule runs it with
# the configured sources, flags and libraries:
#   FUZZ_CC FUZZ_SOURCES FUZZ_CPPFLAGS FUZZ_CFLAGS FUZZ_LIBS FUZZ_NAMES srcdir
# Objects land under fuzz-build/ with the tree's layout, each with a .d
# file, so a second run compiles only what changed.

B := fuzz-build
SAN := -fsanitize=address,undefined -fno-sanitize-recover=all
# The instrumentation keeps `omp simd` loops from vectorising, which clang
# reports as a warning (an error under --enable-werror): not the code's fault.
FLAGS := -g -O1 -fno-omit-frame-pointer -fopenmp $(SAN) $(FUZZ_CPPFLAGS) $(FUZZ_CFLAGS) \
	-Wno-pass-failed
LIB_OBJS := $(patsubst %.c,$(B)/%.o,$(filter %.c,$(FUZZ_SOURCES)))
HARNESS_OBJS := $(FUZZ_NAMES:%=$(B)/tests/fuzz/fuzz_%.o) $(B)/tests/fuzz.o
PROGS := $(FUZZ_NAMES:%=$(B)/fuzz_%)

# Sources are looked for here first (the generated ones), then in srcdir.
vpath %.c $(srcdir)

ifeq ($(V),1)
Q :=
else
Q := @
endif

.PHONY: all
.SECONDARY:
.DELETE_ON_ERROR:

all: $(PROGS)

$(B)/%.o: %.c
	@mkdir -p $(@D)
	@$(if $(Q),echo "  FUZZCC   $@")
	$(Q)$(FUZZ_CC) $(FLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c -o $@ $<

$(B)/liblt.a: $(LIB_OBJS)
	@$(if $(Q),echo "  AR       $@")
	$(Q)rm -f $@ && ar cr $@ $(LIB_OBJS) && ranlib $@

$(B)/fuzz_%: $(B)/tests/fuzz/fuzz_%.o $(B)/tests/fuzz.o $(B)/liblt.a
	@$(if $(Q),echo "  FUZZLD   $@")
	$(Q)$(FUZZ_CC) $(FLAGS) -fsanitize=fuzzer -o $@ $^ $(FUZZ_LIBS)

-include $(LIB_OBJS:.o=.d) $(HARNESS_OBJS:.o=.d)
