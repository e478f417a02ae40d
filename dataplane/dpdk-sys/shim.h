/* Things bindgen cannot reach: macros and thread-locals. Kept tiny on purpose. */
#ifndef BULKHEAD_DPDK_SHIM_H
#define BULKHEAD_DPDK_SHIM_H
#include <rte_errno.h>
#include <rte_mbuf.h>

/* rte_errno is a per-lcore (thread-local) macro. */
int bh_rte_errno(void);
/* rte_pktmbuf_mtod is a macro. */
void *bh_pktmbuf_mtod(struct rte_mbuf *m);
#endif
