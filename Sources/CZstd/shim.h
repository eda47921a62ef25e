#ifndef PASSAGE_CZSTD_SHIM_H
#define PASSAGE_CZSTD_SHIM_H
/* libzstd (libzstd-dev): passage-vmm unpacks zstd-compressed bzImage payloads with it. */
#include <zstd.h>
#include <zstd_errors.h>
#endif
