#ifndef PASSAGE_CLINUX_H
#define PASSAGE_CLINUX_H

/* The C side of Passage: ioctl request numbers (function-like macros Swift cannot see) exported
   as constants, and small wrappers that return -errno. Every struct Swift relies on has its size
   pinned with _Static_assert in clinux.c. */

#include <stdint.h>

#endif
