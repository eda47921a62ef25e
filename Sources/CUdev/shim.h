#ifndef PASSAGE_CUDEV_SHIM_H
#define PASSAGE_CUDEV_SHIM_H
#include <libudev.h>
#endif
