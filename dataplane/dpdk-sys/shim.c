#include "shim.h"

int bh_rte_errno(void) { return rte_errno; }

void *bh_pktmbuf_mtod(struct rte_mbuf *m) { return rte_pktmbuf_mtod(m, void *); }

uint64_t bh_rss_ip(void) { return RTE_ETH_RSS_IP; }
uint64_t bh_rss_tcp(void) { return RTE_ETH_RSS_TCP; }
uint64_t bh_rss_udp(void) { return RTE_ETH_RSS_UDP; }
