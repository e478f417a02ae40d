#include "shim.h"

int bh_rte_errno(void) { return rte_errno; }

void *bh_pktmbuf_mtod(struct rte_mbuf *m) { return rte_pktmbuf_mtod(m, void *); }
