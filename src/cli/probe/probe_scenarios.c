/* probe_scenarios.c - the ways `closewise probe` ends a connection on the
 * client under test. Each scenario is one row: what the server waits for,
 * what it says, and how it ends. A new scenario is a new row. */
#define _GNU_SOURCE
#include "probe.h"

#include <string.h>

#define AUTH_ERROR "ERR bad credentials\n"

const struct probe_scenario probe_scenarios[] = {
    {"fin-on-accept", "close (FIN) at once, before reading anything",
     0, 0, NULL, 0, CW_END_GRACEFUL, 0, 0},
    {"fin-after-greeting", "send a greeting line, then close",
     0, 0, "HELLO closewise-probe\n", 0, CW_END_GRACEFUL, 0, 0},
    /* The client's request is left unread in our receive queue. */
    {"fin-while-client-writes", "close as soon as the client's first bytes arrive",
     1000, 0, NULL, 0, CW_END_GRACEFUL, 0, 0},
    /* Waiting for the request first puts the reset mid-conversation. */
    {"rst", "abortive close (SO_LINGER {1,0}): the client gets a reset",
     500, 0, NULL, 0, CW_END_ABORT, 0, 0},
    {"half-close", "shut down writing, keep reading until the client closes",
     0, 0, NULL, 0, CW_END_GRACEFUL, 1, 0},
    {"auth-error", "the seed: read a line, answer '" "ERR bad credentials" "', close",
     1000, 1, AUTH_ERROR, 0, CW_END_GRACEFUL, 0, 0},
    {"silent", "accept and never answer: does the client ever give up?",
     0, 0, NULL, 0, CW_END_NONE, 0, 0},
    {"slow-drip", "send the auth error one byte per --drip interval, then close",
     0, 0, AUTH_ERROR, 1, CW_END_GRACEFUL, 0, 0},
    /* The seed's trigger: an established session the server ends later
     * (idle timeout, restart). Some clients close promptly on a FIN that
     * comes at once and leak one that finds them settled. */
    {"fin-when-idle", "once quiet for --settle (no byte either way), close (FIN)",
     0, 0, NULL, 0, CW_END_GRACEFUL, 0, 1},
    {"rst-when-idle", "once quiet for --settle, abortive close: the client gets a reset",
     0, 0, NULL, 0, CW_END_ABORT, 0, 1},
    {"auth-error-when-idle", "the seed: read a line; once quiet for --settle, answer '"
     "ERR bad credentials" "', close",
     1000, 1, AUTH_ERROR, 0, CW_END_GRACEFUL, 0, 1},
};

const size_t probe_nscenarios = sizeof probe_scenarios / sizeof probe_scenarios[0];

const struct probe_scenario *probe_scenario_find(const char *name)
{
    for (size_t i = 0; i < probe_nscenarios; i++)
        if (!strcmp(probe_scenarios[i].name, name))
            return &probe_scenarios[i];
    return NULL;
}

/* --server: what a client does to a server, one connection each. The
 * seed's server-side traps: a close with unread input, or with SO_LINGER
 * {1,0}, turns the last reply into a reset. */
const struct probe_sscenario probe_sscenarios[] = {
    {"request", "send DATA, read to the end: the reply whole, then FIN?", 1, 0, 0, 0, 0, 0},
    {"request-extra-input", "send DATA and 64 KiB more the server will not read (a plain "
     "close then resets)", 1, 1, 0, 0, 0, 0},
    /* Pipelined input after the request, as in request-extra-input: a
     * plain close then destroys what is still queued of the reply. */
    {"large-reply", "send --large and 64 KiB more, read the reply slowly through a small "
     "receive buffer", 2, 1, 1, 0, 0, 0},
    {"half-close", "once quiet for --settle, shut down writing: does the server close?",
     0, 0, 0, 1, 0, 0},
    {"idle", "connect and say nothing: does the server ever time it out?", 0, 0, 0, 0, 0, 1},
    {"reset-mid-request", "send half of DATA, then reset: does the server let go of the "
     "socket?", 3, 0, 0, 0, 1, 0},
};

const size_t probe_nsscenarios = sizeof probe_sscenarios / sizeof probe_sscenarios[0];

const struct probe_sscenario *probe_sscenario_find(const char *name)
{
    for (size_t i = 0; i < probe_nsscenarios; i++)
        if (!strcmp(probe_sscenarios[i].name, name))
            return &probe_sscenarios[i];
    return NULL;
}
