/* cgroup.c - a readable container identity from a cgroup v2 path.
 *
 * Container runtimes and systemd name the cgroups they create in a few
 * well-known shapes; the last path component usually says who made it:
 *   /system.slice/docker-<64 hex>.scope            docker (systemd driver)
 *   /docker/<64 hex>                               docker (cgroupfs driver)
 *   /.../cri-containerd-<hex>.scope, crio-<hex>.scope, libpod-<hex>.scope
 *   /kubepods.slice/kubepods-burstable.slice/
 *       kubepods-burstable-pod<uid with _>.slice/...   Kubernetes (systemd)
 *   /kubepods/burstable/pod<uid>/<hex>              Kubernetes (cgroupfs)
 *   /system.slice/nginx.service, /user.slice/.../session-3.scope  systemd */
#define _GNU_SOURCE
#include "../net/internal.h"

#include <closewise/diag.h>
#include <ctype.h>
#include <stdio.h>
#include <string.h>

static int is_hex_run(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isxdigit((unsigned char)p[i]))
            return 0;
    return n > 0;
}

/* A Kubernetes pod UID after "pod" in p: 36 characters of hex and '-'
 * (or '_' under the systemd driver). */
static int pod_uid(const char *path, char uid[37])
{
    if (!strstr(path, "kubepods"))
        return 0;
    for (const char *p = strstr(path, "pod"); p; p = strstr(p + 1, "pod")) {
        const char *u = p + 3;
        size_t n = 0;
        while (n < 36 && (isxdigit((unsigned char)u[n]) || u[n] == '-' || u[n] == '_'))
            n++;
        if (n != 36)
            continue;
        for (size_t i = 0; i < 36; i++)
            uid[i] = u[i] == '_' ? '-' : u[i];
        uid[36] = '\0';
        return 1;
    }
    return 0;
}

struct scope_kind {
    const char *prefix;
    const char *name;
};

static const struct scope_kind kinds[] = {
    {"docker-", "docker"},   {"cri-containerd-", "containerd"},
    {"crio-", "crio"},       {"libpod-", "podman"},
    {NULL, NULL}};

/* "<prefix><hex>.scope" as a container of that kind. */
static int scope_container(const char *last, size_t len, char *buf, size_t size)
{
    if (len < 7 || strncmp(last + len - 6, ".scope", 6))
        return 0;
    for (const struct scope_kind *k = kinds; k->prefix; k++) {
        size_t pl = strlen(k->prefix);
        const char *id = last + pl;
        size_t idl = len - 6 - pl;
        if (len > pl + 6 && !strncmp(last, k->prefix, pl) && idl >= 12 && is_hex_run(id, idl)) {
            snprintf(buf, size, "%s:%.12s", k->name, id);
            return 1;
        }
    }
    return 0;
}

const char *cw_cgroup_container(const char *path, char *buf, size_t size)
{
    char uid[37];
    if (!buf || !size)
        return "";
    buf[0] = '\0';
    if (!path)
        return buf;
    if (pod_uid(path, uid)) {
        snprintf(buf, size, "k8s-pod:%s", uid);
        return buf;
    }
    size_t plen = strlen(path);
    while (plen > 1 && path[plen - 1] == '/')
        plen--;
    const char *last = path + plen;
    while (last > path && last[-1] != '/')
        last--;
    size_t len = (size_t)(path + plen - last);
    if (len == 0 || scope_container(last, len, buf, size))
        return buf;
    if (len == 64 && is_hex_run(last, 64)) {
        /* cgroupfs driver: /docker/<id>, /containerd/<id>, ... */
        const char *parent = last - 1;
        const char *ps = parent;
        while (ps > path && ps[-1] != '/')
            ps--;
        int pl = (int)(parent - ps);
        snprintf(buf, size, "%.*s:%.12s", pl > 0 && pl < 32 ? pl : 9,
                 pl > 0 && pl < 32 ? ps : "container", last);
        return buf;
    }
    if ((len > 8 && !strncmp(last + len - 8, ".service", 8)) ||
        (len > 6 && !strncmp(last + len - 6, ".scope", 6)))
        snprintf(buf, size, "unit:%.*s", (int)len, last);
    return buf;
}
