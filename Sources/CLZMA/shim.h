// liblzma (xz-utils): passage-vmm unpacks a bzImage's xz payload with it (Sources/VMM/KernelUnpacker.swift).
#include <lzma.h>
