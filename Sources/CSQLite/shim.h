#pragma once
#include <sqlite3.h>

// SQLITE_TRANSIENT is a cast macro Swift cannot import: bind through these so
// SQLite copies the bytes before the Swift buffer goes away.
static inline int paymentsd_sqlite3_bind_text(sqlite3_stmt *s, int i, const char *v, int n) {
    return sqlite3_bind_text(s, i, v, n, SQLITE_TRANSIENT);
}
static inline int paymentsd_sqlite3_bind_blob(sqlite3_stmt *s, int i, const void *v, int n) {
    return sqlite3_bind_blob(s, i, v, n, SQLITE_TRANSIENT);
}

// Extended result codes are macros of expressions, which the importer drops.
enum {
    PAYMENTSD_SQLITE_CONSTRAINT_UNIQUE = SQLITE_CONSTRAINT_UNIQUE,
    PAYMENTSD_SQLITE_CONSTRAINT_PRIMARYKEY = SQLITE_CONSTRAINT_PRIMARYKEY,
    PAYMENTSD_SQLITE_CONSTRAINT_FOREIGNKEY = SQLITE_CONSTRAINT_FOREIGNKEY,
    PAYMENTSD_SQLITE_CONSTRAINT_CHECK = SQLITE_CONSTRAINT_CHECK,
    PAYMENTSD_SQLITE_CONSTRAINT_TRIGGER = SQLITE_CONSTRAINT_TRIGGER,
    PAYMENTSD_SQLITE_BUSY_SNAPSHOT = SQLITE_BUSY_SNAPSHOT,
};

// A file-control op code of a version that may predate the header's own name for it.
enum { PAYMENTSD_SQLITE_FCNTL_HAS_MOVED = SQLITE_FCNTL_HAS_MOVED };

// Asks the unix VFS whether the open database file was unlinked, renamed or replaced at its path.
static inline int paymentsd_sqlite3_has_moved(sqlite3 *db, int *moved) {
    return sqlite3_file_control(db, "main", SQLITE_FCNTL_HAS_MOVED, moved);
}
