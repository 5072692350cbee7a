#pragma once
#include <libpq-fe.h>

// The diagnostic field codes are character-literal macros; named here so Swift sees them as values.
enum {
    PAYMENTSD_PG_DIAG_SQLSTATE = PG_DIAG_SQLSTATE,
    PAYMENTSD_PG_DIAG_MESSAGE_PRIMARY = PG_DIAG_MESSAGE_PRIMARY,
};
