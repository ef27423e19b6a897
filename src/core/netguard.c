/*
 * netguard.c - netguard_blocked. Ranges from the IANA special-purpose registries (RFC 6890
 * and successors); everything special is refused, since a tool talking to the public web has
 * no business with any of them.
 */
#include "core/netguard.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static const struct {
    uint32_t net;
    int bits;
    const char *what;
} v4_ranges[] = {
    {0x00000000, 8, "unspecified"},           {0x0a000000, 8, "private"},
    {0x64400000, 10, "shared (CGNAT)"},       {0x7f000000, 8, "loopback"},
    {0xa9fe0000, 16, "link-local"},           {0xac100000, 12, "private"},
    {0xc0000000, 24, "IETF protocol"},        {0xc0000200, 24, "documentation"},
    {0xc0a80000, 16, "private"},              {0xc6120000, 15, "benchmarking"},
    {0xc6336400, 24, "documentation"},        {0xcb007100, 24, "documentation"},
    {0xe0000000, 4, "multicast"},             {0xf0000000, 4, "reserved"},
};

static const char *v4_class(uint32_t a)
{
    for (size_t i = 0; i < sizeof v4_ranges / sizeof v4_ranges[0]; i++) {
        uint32_t mask = 0xffffffffu << (32 - v4_ranges[i].bits);
        if ((a & mask) == v4_ranges[i].net)
            return v4_ranges[i].what;
    }
    return NULL;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != 0)
            return false;
    return true;
}

static const char *v6_class(const uint8_t *b)
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const uint8_t nat64[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
    static const uint8_t translated[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0};
    static const uint8_t local_nat64[6] = {0, 0x64, 0xff, 0x9b, 0, 0x01};
    if (all_zero(b, 16))
        return "unspecified";
    if (all_zero(b, 15) && b[15] == 1)
        return "loopback";
    if (memcmp(b, mapped, 12) == 0 || memcmp(b, nat64, 12) == 0 ||
        memcmp(b, translated, 12) == 0 || all_zero(b, 12))
        return v4_class(be32(b + 12)); /* the IPv4 address inside decides */
    /* 64:ff9b:1::/48 (RFC 8215): a site's own NAT64, whose prefix length, and so where the
     * IPv4 address sits, is the site's choice; it leads into the site's network. */
    if (memcmp(b, local_nat64, 6) == 0)
        return "local NAT64";
    /* 2001::/32: Teredo, a tunnel whose relay reaches IPv4 addresses of any kind. */
    if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0 && b[3] == 0)
        return "Teredo";
    if (b[0] == 0x20 && b[1] == 0x02)
        return v4_class(be32(b + 2)); /* 6to4 */
    if ((b[0] & 0xfe) == 0xfc)
        return "unique-local";
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80)
        return "link-local";
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0)
        return "site-local";
    if (b[0] == 0xff)
        return "multicast";
    if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8)
        return "documentation";
    return NULL;
}

bool netguard_blocked(const struct sockaddr *sa, char *why, size_t why_len)
{
    char text[INET6_ADDRSTRLEN] = "?";
    const char *what;
    if (sa == NULL) {
        what = "missing";
    } else if (sa->sa_family == AF_INET) {
        struct sockaddr_in sin;
        memcpy(&sin, sa, sizeof sin);
        inet_ntop(AF_INET, &sin.sin_addr, text, sizeof text);
        what = v4_class(ntohl(sin.sin_addr.s_addr));
    } else if (sa->sa_family == AF_INET6) {
        struct sockaddr_in6 sin6;
        memcpy(&sin6, sa, sizeof sin6);
        inet_ntop(AF_INET6, &sin6.sin6_addr, text, sizeof text);
        what = v6_class(sin6.sin6_addr.s6_addr);
    } else {
        what = "not an internet address";
    }
    if (what != NULL && why != NULL && why_len > 0)
        snprintf(why, why_len, "%s (%s)", text, what);
    return what != NULL;
}

curl_socket_t netguard_open_socket(curlsocktype purpose, const struct curl_sockaddr *a,
                                   bool allow_private, char *why, size_t why_len)
{
    if (purpose != CURLSOCKTYPE_IPCXN)
        return CURL_SOCKET_BAD;
    if (!allow_private && netguard_blocked(&a->addr, why, why_len))
        return CURL_SOCKET_BAD;
    int fd = socket(a->family, a->socktype, a->protocol);
    if (fd < 0)
        return CURL_SOCKET_BAD;
    int fl = fcntl(fd, F_GETFD);
    if (fl >= 0)
        fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
    return fd;
}
