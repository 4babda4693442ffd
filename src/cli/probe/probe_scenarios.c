/* probe_scenarios.c - the ways `closewise probe` ends a connection on the
 * client under test. Each scenario is one row: what the server waits for,
 * what it says, and how it ends. A new scenario is a new row. */
#define _GNU_SOURCE
#include "probe.h"

#include <string.h>

#define AUTH_ERROR "ERR bad credentials\n"

const struct probe_scenario probe_scenarios[] = {
    {"fin-on-accept", "close (FIN) at once, before reading anything",
     0, 0, NULL, 0, CW_END_GRACEFUL, 0},
    {"fin-after-greeting", "send a greeting line, then close",
     0, 0, "HELLO closewise-probe\n", 0, CW_END_GRACEFUL, 0},
    /* The client's request is left unread in our receive queue. */
    {"fin-while-client-writes", "close as soon as the client's first bytes arrive",
     1000, 0, NULL, 0, CW_END_GRACEFUL, 0},
    /* Waiting for the request first puts the reset mid-conversation. */
    {"rst", "abortive close (SO_LINGER {1,0}): the client gets a reset",
     500, 0, NULL, 0, CW_END_ABORT, 0},
    {"half-close", "shut down writing, keep reading until the client closes",
     0, 0, NULL, 0, CW_END_GRACEFUL, 1},
    {"auth-error", "the seed: read a line, answer '" "ERR bad credentials" "', close",
     1000, 1, AUTH_ERROR, 0, CW_END_GRACEFUL, 0},
    {"silent", "accept and never answer: does the client ever give up?",
     0, 0, NULL, 0, CW_END_NONE, 0},
    {"slow-drip", "send the auth error one byte per --drip interval, then close",
     0, 0, AUTH_ERROR, 1, CW_END_GRACEFUL, 0},
};

const size_t probe_nscenarios = sizeof probe_scenarios / sizeof probe_scenarios[0];

const struct probe_scenario *probe_scenario_find(const char *name)
{
    for (size_t i = 0; i < probe_nscenarios; i++)
        if (!strcmp(probe_scenarios[i].name, name))
            return &probe_scenarios[i];
    return NULL;
}
