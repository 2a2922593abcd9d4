# lt_deps.m4 - lltrain's own macros for finding its optional dependencies.
#
# LT_FIND_LIB(VAR, PKG-MODULES, HEADER, LIB, FUNCTION): look for a library by
# pkg-config first and by header + -lLIB second. Sets VAR_CFLAGS, VAR_LIBS
# and lt_have_VAR=yes|no; never fails configure.
AC_DEFUN([LT_FIND_LIB], [
  lt_have_$1=no
  PKG_CHECK_MODULES([$1], [$2], [lt_have_$1=yes], [
    lt_saved_libs=$LIBS
    AC_CHECK_HEADER([$3], [
      AC_CHECK_LIB([$4], [$5], [lt_have_$1=yes; $1_LIBS="-l$4"; $1_CFLAGS=""])
    ])
    LIBS=$lt_saved_libs
  ])
])
