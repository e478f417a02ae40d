/* Things bindgen cannot reach: macros and thread-locals. Kept tiny on purpose. */
#ifndef BULKHEAD_DPDK_SHIM_H
#define BULKHEAD_DPDK_SHIM_H
#include <rte_errno.h>
#include <rte_mbuf.h>
#include <rte_ethdev.h>

/* rte_errno is a per-lcore (thread-local) macro. */
int bh_rte_errno(void);
/* rte_pktmbuf_mtod is a macro. */
void *bh_pktmbuf_mtod(struct rte_mbuf *m);
/* The RSS hash-type sets are RTE_BIT64() expressions bindgen does not evaluate. */
uint64_t bh_rss_ip(void);
uint64_t bh_rss_tcp(void);
uint64_t bh_rss_udp(void);
#endif
