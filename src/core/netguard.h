/*
 * netguard.h - which peer addresses crewd's outbound requests on behalf of users may reach:
 * the http tools (tools/runner.c) and webhooks (webhooks/webhooks.c).
 *
 * The check runs on the address libcurl is about to connect to (CURLOPT_OPENSOCKETFUNCTION),
 * never on a name, so a DNS answer that changes between two lookups (rebinding) gains
 * nothing.
 */
#ifndef CREWD_CORE_NETGUARD_H
#define CREWD_CORE_NETGUARD_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/*
 * True when `sa` (AF_INET or AF_INET6; any other family is refused too) is not a public
 * unicast address: unspecified (0.0.0.0/8, ::), loopback (127/8, ::1), private (10/8,
 * 172.16/12, 192.168/16), shared CGNAT (100.64/10), link-local (169.254/16, fe80::/10),
 * IETF protocol assignments (192.0.0/24), benchmarking (198.18/15), documentation ranges,
 * multicast (224/4, ff00::/8), reserved (240/4, broadcast), unique-local (fc00::/7),
 * site-local (fec0::/10); IPv6 forms that carry an IPv4 address (v4-mapped ::ffff:0:0/96,
 * v4-compatible, NAT64 64:ff9b::/96, 6to4 2002::/16) are judged by that address.
 * `why`, if not NULL, receives "127.0.0.1 (loopback)" style text.
 */
bool netguard_blocked(const struct sockaddr *sa, char *why, size_t why_len);

/*
 * The body of a guarded transfer's CURLOPT_OPENSOCKETFUNCTION: for a connection (purpose
 * CURLSOCKTYPE_IPCXN) to an address netguard_blocked refuses, and allow_private false,
 * CURL_SOCKET_BAD with the reason in `why` (the transfer then fails with "couldn't connect");
 * else a new close-on-exec socket for `a`.
 */
curl_socket_t netguard_open_socket(curlsocktype purpose, const struct curl_sockaddr *a,
                                   bool allow_private, char *why, size_t why_len);

#endif
