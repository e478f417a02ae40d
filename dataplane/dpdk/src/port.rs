use std::ffi::{CStr, CString};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{check, Error, Result, ENOTSUP};
use crate::mempool::SOCKET_ID_ANY;
use crate::{Burst, Eal, Mempool};

/// How to bring a port up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortConfig {
    pub rx_queues: u16,
    pub tx_queues: u16,
    /// Descriptors per RX queue (adjusted to the device's limits).
    pub rx_ring: u16,
    /// Descriptors per TX queue (adjusted to the device's limits).
    pub tx_ring: u16,
    /// A bump in the wire must see every frame, whatever its destination MAC.
    pub promiscuous: bool,
}

/// What a device says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevInfo {
    pub driver: String,
    pub max_rx_queues: u16,
    pub max_tx_queues: u16,
    pub rss_offloads: u64,
    /// RSS hash key length in bytes (0: the driver did not say).
    pub hash_key_size: u8,
}

/// Toeplitz key length used when a driver does not report its own.
const DEFAULT_RSS_KEY_LEN: usize = 40;

/// A Toeplitz key that hashes (src, dst, sport, dport) and (dst, src, dport, sport) alike: the 16-bit pattern
/// 0x6d5a repeated (Woo and Park, "Scalable TCP Session Monitoring with Symmetric Receive-side Scaling",
/// 2012). Both directions of a connection then land in the same queue, hence the same worker.
pub fn symmetric_rss_key(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| if i % 2 == 0 { 0x6d } else { 0x5a })
        .collect()
}

/// Device-level counters (`rte_eth_stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Dropped by the device because no RX descriptor was free (the poll loop fell behind).
    pub rx_missed: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    /// RX failed for lack of mbufs.
    pub rx_nombuf: u64,
}

/// An Ethernet device. Configure it, then [`Port::start`] it to get its queues; it is stopped and closed on
/// drop. Its lifetime is tied to the EAL and to the mempool its RX queues draw from.
#[derive(Debug)]
pub struct Port<'a> {
    id: u16,
    name: String,
    configured: Option<PortConfig>,
    started: AtomicBool,
    _pool: PhantomData<&'a Mempool<'a>>,
}

impl<'a> Port<'a> {
    /// Finds the port DPDK created for a device (`net_tap0`, `0000:03:00.0`, ...).
    pub fn by_name(_eal: &'a Eal, name: &str) -> Result<Self> {
        let cname = CString::new(name).map_err(|_| Error::BadArgument(name.into()))?;
        let mut id = 0u16;
        // SAFETY: valid C string and out-pointer; the EAL is initialized.
        let ret = unsafe { dpdk_sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) };
        if ret < 0 {
            return Err(Error::NoSuchPort(name.into()));
        }
        Ok(Port {
            id,
            name: name.into(),
            configured: None,
            started: AtomicBool::new(false),
            _pool: PhantomData,
        })
    }

    pub fn id(&self) -> u16 {
        self.id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn info(&self) -> Result<DevInfo> {
        let mut info = dpdk_sys::rte_eth_dev_info::default();
        // SAFETY: valid port id and out-pointer.
        check("rte_eth_dev_info_get", unsafe {
            dpdk_sys::rte_eth_dev_info_get(self.id, &mut info)
        })?;
        let driver = if info.driver_name.is_null() {
            String::new()
        } else {
            // SAFETY: DPDK fills driver_name with a static NUL-terminated string.
            unsafe { CStr::from_ptr(info.driver_name) }
                .to_string_lossy()
                .into_owned()
        };
        Ok(DevInfo {
            driver,
            max_rx_queues: info.max_rx_queues,
            max_tx_queues: info.max_tx_queues,
            rss_offloads: info.flow_type_rss_offloads,
            hash_key_size: info.hash_key_size,
        })
    }

    /// The port's MAC address.
    pub fn mac(&self) -> Result<[u8; 6]> {
        let mut addr = dpdk_sys::rte_ether_addr::default();
        // SAFETY: valid port id and out-pointer.
        check("rte_eth_macaddr_get", unsafe {
            dpdk_sys::rte_eth_macaddr_get(self.id, &mut addr)
        })?;
        Ok(addr.addr_bytes)
    }

    /// Configures the device and sets up its queues; RX queues take their buffers from `pool`.
    pub fn configure(&mut self, cfg: &PortConfig, pool: &'a Mempool<'a>) -> Result<()> {
        if self.started.load(Ordering::Acquire) {
            return Err(Error::AlreadyStarted(self.id));
        }
        let info = self.info()?;
        let mut conf = dpdk_sys::rte_eth_conf::default();
        // Several queues: spread by a symmetric Toeplitz (DPDK 22.11's default RSS function) hash over addresses and ports, so both directions
        // of a connection meet in one queue. A multi-queue device that cannot hash cannot promise that.
        // (`key` lives until after rte_eth_dev_configure, which copies it.)
        let mut key = symmetric_rss_key(match info.hash_key_size {
            0 => DEFAULT_RSS_KEY_LEN,
            n => usize::from(n),
        });
        if cfg.rx_queues > 1 {
            // SAFETY: pure functions returning DPDK's RSS hash-type constants.
            let wanted =
                unsafe { dpdk_sys::bh_rss_ip() | dpdk_sys::bh_rss_tcp() | dpdk_sys::bh_rss_udp() };
            let hf = info.rss_offloads & wanted;
            if hf == 0 {
                return Err(Error::NoRss {
                    port: self.name.clone(),
                    driver: info.driver,
                });
            }
            conf.rxmode.mq_mode = dpdk_sys::RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_hf = hf;
            conf.rx_adv_conf.rss_conf.rss_key = key.as_mut_ptr();
            conf.rx_adv_conf.rss_conf.rss_key_len = key.len() as u8;
        }
        // SAFETY: valid port id and configuration (its RSS key pointer, if set, points into `key`, alive
        // until the end of this function); the port is not started.
        check("rte_eth_dev_configure", unsafe {
            dpdk_sys::rte_eth_dev_configure(self.id, cfg.rx_queues, cfg.tx_queues, &conf)
        })?;
        let (mut rx_ring, mut tx_ring) = (cfg.rx_ring, cfg.tx_ring);
        // SAFETY: valid port id and out-pointers.
        check("rte_eth_dev_adjust_nb_rx_tx_desc", unsafe {
            dpdk_sys::rte_eth_dev_adjust_nb_rx_tx_desc(self.id, &mut rx_ring, &mut tx_ring)
        })?;
        // SAFETY: valid port id.
        let socket = match unsafe { dpdk_sys::rte_eth_dev_socket_id(self.id) } {
            s if s < 0 => SOCKET_ID_ANY as u32,
            s => s as u32,
        };
        for q in 0..cfg.rx_queues {
            // SAFETY: configured port, queue index below the configured count, default rxconf (NULL), and a
            // pool that outlives the port ('a).
            check("rte_eth_rx_queue_setup", unsafe {
                dpdk_sys::rte_eth_rx_queue_setup(
                    self.id,
                    q,
                    rx_ring,
                    socket,
                    std::ptr::null(),
                    pool.as_ptr(),
                )
            })?;
        }
        for q in 0..cfg.tx_queues {
            // SAFETY: configured port, queue index below the configured count, default txconf (NULL).
            check("rte_eth_tx_queue_setup", unsafe {
                dpdk_sys::rte_eth_tx_queue_setup(self.id, q, tx_ring, socket, std::ptr::null())
            })?;
        }
        if cfg.promiscuous {
            // SAFETY: valid port id. Devices without the notion (pcap, null) answer ENOTSUP: they already
            // see every frame, so that is not an error.
            let ret = unsafe { dpdk_sys::rte_eth_promiscuous_enable(self.id) };
            if ret < 0 && ret != -ENOTSUP {
                check("rte_eth_promiscuous_enable", ret)?;
            }
        }
        self.configured = Some(cfg.clone());
        Ok(())
    }

    /// Starts the device and hands out its queues, once: each queue must be polled by exactly one lcore.
    pub fn start(&self) -> Result<Queues<'_>> {
        let Some(cfg) = &self.configured else {
            return Err(Error::NotConfigured(self.name.clone()));
        };
        if self.started.swap(true, Ordering::AcqRel) {
            return Err(Error::AlreadyStarted(self.id));
        }
        // SAFETY: the port is configured with its queues set up.
        if let Err(e) = check("rte_eth_dev_start", unsafe {
            dpdk_sys::rte_eth_dev_start(self.id)
        }) {
            self.started.store(false, Ordering::Release);
            return Err(e);
        }
        Ok(Queues {
            rx: (0..cfg.rx_queues)
                .map(|queue| RxQueue {
                    port: self.id,
                    queue,
                    _port: PhantomData,
                })
                .collect(),
            tx: (0..cfg.tx_queues)
                .map(|queue| TxQueue {
                    port: self.id,
                    queue,
                    _port: PhantomData,
                })
                .collect(),
        })
    }

    /// Stops the device. Needs `&mut self`: no queue handed out by [`Port::start`] may still be alive.
    pub fn stop(&mut self) -> Result<()> {
        if self.started.swap(false, Ordering::AcqRel) {
            // SAFETY: valid, started port; no queue handle exists (they borrow self).
            check("rte_eth_dev_stop", unsafe {
                dpdk_sys::rte_eth_dev_stop(self.id)
            })?;
        }
        Ok(())
    }

    /// Takes the link administratively down or up (`rte_eth_dev_set_link_down`/`_up`): the neighbour sees
    /// its carrier go away (on `net_tap`: the interface loses `IFF_UP`). Devices without the operation give
    /// an error (`-ENOTSUP`).
    pub fn set_link(&self, up: bool) -> Result<()> {
        if up {
            // SAFETY: valid port id; the ethdev API allows this on a started port from the control thread.
            check("rte_eth_dev_set_link_up", unsafe {
                dpdk_sys::rte_eth_dev_set_link_up(self.id)
            })
        } else {
            // SAFETY: as above.
            check("rte_eth_dev_set_link_down", unsafe {
                dpdk_sys::rte_eth_dev_set_link_down(self.id)
            })
        }
    }

    /// Whether the link is up, without waiting (`rte_eth_link_get_nowait`). Virtual devices that connect to a
    /// peer (memif) come up only once the peer has connected; senders wait for this before timing anything.
    pub fn link_up(&self) -> Result<bool> {
        let mut link = dpdk_sys::rte_eth_link::default();
        // SAFETY: valid port id and out-pointer; reading the link status is allowed while the port runs.
        check("rte_eth_link_get_nowait", unsafe {
            dpdk_sys::rte_eth_link_get_nowait(self.id, &mut link)
        })?;
        Ok(link.link_status() != 0)
    }

    /// Device counters; safe to read while workers poll the queues.
    pub fn stats(&self) -> Result<PortStats> {
        let mut s = dpdk_sys::rte_eth_stats::default();
        // SAFETY: valid port id and out-pointer; ethdev stats reads are allowed concurrently with the datapath.
        check("rte_eth_stats_get", unsafe {
            dpdk_sys::rte_eth_stats_get(self.id, &mut s)
        })?;
        Ok(PortStats {
            rx_packets: s.ipackets,
            tx_packets: s.opackets,
            rx_bytes: s.ibytes,
            tx_bytes: s.obytes,
            rx_missed: s.imissed,
            rx_errors: s.ierrors,
            tx_errors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        })
    }
}

impl Drop for Port<'_> {
    fn drop(&mut self) {
        // Errors cannot be reported from drop; the process is shutting the device down either way.
        let _ = self.stop();
        // SAFETY: the port is stopped and no queue handle is alive.
        unsafe { dpdk_sys::rte_eth_dev_close(self.id) };
    }
}

/// The queues of a started port.
#[derive(Debug)]
pub struct Queues<'p> {
    pub rx: Vec<RxQueue<'p>>,
    pub tx: Vec<TxQueue<'p>>,
}

/// A receive queue: owned by one lcore at a time (`Send`, not `Clone`, not `Sync`).
#[derive(Debug)]
pub struct RxQueue<'p> {
    port: u16,
    queue: u16,
    _port: PhantomData<(&'p (), std::cell::Cell<()>)>,
}

/// A transmit queue: owned by one lcore at a time (`Send`, not `Clone`, not `Sync`).
#[derive(Debug)]
pub struct TxQueue<'p> {
    port: u16,
    queue: u16,
    _port: PhantomData<(&'p (), std::cell::Cell<()>)>,
}

impl<'p> RxQueue<'p> {
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// Receives into the free slots of `burst`; returns how many packets arrived.
    #[inline]
    pub fn rx(&mut self, burst: &mut Burst<'p>) -> usize {
        let (slots, room) = burst.spare();
        // SAFETY: the port is started (self borrows it), this queue is polled by this lcore only (&mut self),
        // and `slots` has room for `room` pointers.
        let n = unsafe { dpdk_sys::rte_eth_rx_burst(self.port, self.queue, slots, room) };
        burst.filled(n);
        usize::from(n)
    }
}

impl<'p> TxQueue<'p> {
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// Hands as many packets of `burst` as the device accepts to it; returns how many. The unsent ones stay
    /// in `burst` (at its front) for the caller to retry or free.
    #[inline]
    pub fn tx(&mut self, burst: &mut Burst<'p>) -> usize {
        let (pkts, n) = burst.pending();
        if n == 0 {
            return 0;
        }
        // SAFETY: the port is started, this lcore owns the queue, and pkts holds n live mbufs owned by burst;
        // the driver takes ownership of the first `sent` of them, which `consumed` removes from the burst.
        let sent = unsafe { dpdk_sys::rte_eth_tx_burst(self.port, self.queue, pkts, n) };
        burst.consumed(sent);
        usize::from(sent)
    }
}

#[cfg(test)]
mod tests {
    use super::symmetric_rss_key;

    /// The Toeplitz hash RSS computes over `input` (Microsoft's RSS specification).
    fn toeplitz(key: &[u8], input: &[u8]) -> u32 {
        let bit = |i: usize| (key[i / 8] >> (7 - i % 8)) & 1;
        let window = |start: usize| (0..32).fold(0u32, |w, j| (w << 1) | u32::from(bit(start + j)));
        let mut hash = 0;
        for (i, byte) in input.iter().enumerate() {
            for b in 0..8 {
                if byte & (0x80 >> b) != 0 {
                    hash ^= window(i * 8 + b);
                }
            }
        }
        hash
    }

    fn tuple(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        [&src[..], &dst, &sport.to_be_bytes(), &dport.to_be_bytes()].concat()
    }

    #[test]
    fn both_directions_of_a_flow_hash_alike() {
        let key = symmetric_rss_key(40);
        let flows = [
            ([10, 0, 0, 1], [10, 0, 0, 2], 40000, 443),
            ([192, 168, 7, 200], [172, 16, 9, 1], 502, 61234),
            ([1, 2, 3, 4], [5, 6, 7, 8], 1, 65535),
        ];
        let mut hashes = Vec::new();
        for (a, b, pa, pb) in flows {
            let there = toeplitz(&key, &tuple(a, b, pa, pb));
            assert_eq!(there, toeplitz(&key, &tuple(b, a, pb, pa)));
            hashes.push(there);
        }
        // Still a hash: different flows spread.
        hashes.dedup();
        assert_eq!(hashes.len(), flows.len());
        // Microsoft's default key is not symmetric: the property comes from the key.
        let msft: Vec<u8> = vec![
            0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3,
            0x8f, 0xb0, 0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3,
            0x80, 0x30, 0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
        ];
        let (a, b) = ([10, 0, 0, 1], [10, 0, 0, 2]);
        assert_ne!(
            toeplitz(&msft, &tuple(a, b, 40000, 443)),
            toeplitz(&msft, &tuple(b, a, 443, 40000))
        );
    }
}
