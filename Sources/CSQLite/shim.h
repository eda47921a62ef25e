#ifndef PASSAGE_CSQLITE_SHIM_H
#define PASSAGE_CSQLITE_SHIM_H
#include <sqlite3.h>

/* SQLITE_TRANSIENT is a cast of -1 to a function pointer: Swift cannot import it. */
static inline sqlite3_destructor_type passage_sqlite_transient(void) { return SQLITE_TRANSIENT; }
#endif
