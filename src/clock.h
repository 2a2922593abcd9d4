/* The monotonic clock every timing in lltrain reads. */
#ifndef LT_CLOCK_H
#define LT_CLOCK_H

/* Monotonic wall-clock seconds (from an arbitrary start). */
double lt_seconds(void);

#endif
