# lt_cflags.m4 - lltrain's own helper for probing compiler flags.
#
# LT_ADD_CFLAG(FLAG, VAR): append FLAG to the shell variable VAR when the C
# compiler accepts it in a trivial program (with -Werror, so a flag that only
# warns counts as refused).
AC_DEFUN([LT_ADD_CFLAG], [
  AC_MSG_CHECKING([whether $CC accepts $1])
  lt_saved_cflags=$CFLAGS
  CFLAGS="$CFLAGS -Werror $1"
  AC_LINK_IFELSE([AC_LANG_PROGRAM([], [])],
    [AC_MSG_RESULT([yes]); $2="$$2 $1"],
    [AC_MSG_RESULT([no])])
  CFLAGS=$lt_saved_cflags
])
