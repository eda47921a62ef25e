#ifndef PASSAGE_CPCI_SHIM_H
#define PASSAGE_CPCI_SHIM_H

#include <pci/pci.h>
#include <pci/header.h>

/* pci_lookup_name() is variadic, which Swift cannot call: one fixed-arity wrapper per lookup kind.
   Each returns NULL when the ids are not in the database (PCI_LOOKUP_NO_NUMBERS). */

static inline const char *passage_pci_vendor_name(struct pci_access *a, char *buf, int size,
                                                  unsigned vendor) {
    return pci_lookup_name(a, buf, size, PCI_LOOKUP_VENDOR | PCI_LOOKUP_NO_NUMBERS, vendor);
}

static inline const char *passage_pci_device_name(struct pci_access *a, char *buf, int size,
                                                  unsigned vendor, unsigned device) {
    return pci_lookup_name(a, buf, size, PCI_LOOKUP_DEVICE | PCI_LOOKUP_NO_NUMBERS, vendor, device);
}

static inline const char *passage_pci_subsystem_name(struct pci_access *a, char *buf, int size,
                                                     unsigned vendor, unsigned device,
                                                     unsigned subvendor, unsigned subdevice) {
    return pci_lookup_name(a, buf, size,
                           PCI_LOOKUP_SUBSYSTEM | PCI_LOOKUP_DEVICE | PCI_LOOKUP_NO_NUMBERS,
                           vendor, device, subvendor, subdevice);
}

/* class is the 16-bit base class + subclass (the top two bytes of the 24-bit class code). */
static inline const char *passage_pci_class_name(struct pci_access *a, char *buf, int size,
                                                 unsigned cls) {
    return pci_lookup_name(a, buf, size, PCI_LOOKUP_CLASS | PCI_LOOKUP_NO_NUMBERS, cls);
}

/* libpci's warning/debug hooks are variadic function pointers that print to stderr. Passage
   reads capabilities and names through libpci and reports missing data itself, so it silences
   them. The error hook (declared noreturn; it prints and exits) is left alone: Passage checks the
   sysfs root before pci_init() so that it is never reached in normal use. */
static void passage_pci_ignore(char *msg, ...) { (void)msg; }

static inline void passage_pci_quiet(struct pci_access *a) {
    a->warning = passage_pci_ignore;
    a->debug = passage_pci_ignore;
}

#endif
