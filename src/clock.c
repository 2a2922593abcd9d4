/* The monotonic clock every timing in lltrain reads. */
#include "config.h"
#include "clock.h"

#include <time.h>

double lt_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
