//! The safe layer against a real EAL, with a loopback `net_ring` device (what a port transmits, it receives).
//! The EAL can be initialized once per process, so this is one test walking through the layer in order.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};

use dpdk::{lcore, Burst, Eal, Error, Mbuf, Mempool, Port, PortConfig, MAX_BURST};

const POOL: u32 = 4095;
/// net_ring's rings hold 1024 slots, one of which is always empty.
const RING_CAPACITY: usize = 1023;

fn frame(i: usize) -> Vec<u8> {
    let mut f = vec![0u8; 60 + i % 7];
    f[..8].copy_from_slice(&(i as u64).to_be_bytes());
    f
}

#[test]
fn eal_mbufs_ports_and_lcores() {
    let extra = ["--vdev=net_ring0"];
    let eal = support::start_eal("layer", &extra);
    assert!(matches!(
        Eal::init(&support::eal_args("layer", &extra)),
        Err(Error::AlreadyInitialized)
    ));

    let pool = Mempool::new(&eal, "layer", POOL, 0, 2048 + 128, None).expect("mempool");
    assert_eq!(pool.in_use(), 0);

    // RAII: a dropped mbuf goes back to the pool.
    {
        let m = Mbuf::from_bytes(&pool, b"hello").expect("alloc");
        assert_eq!(m.data(), b"hello");
        assert_eq!(pool.in_use(), 1);
    }
    assert_eq!(pool.in_use(), 0);

    assert!(matches!(
        Port::by_name(&eal, "net_nope0"),
        Err(Error::NoSuchPort(_))
    ));
    let mut port = Port::by_name(&eal, "net_ring0").expect("port");
    assert!(matches!(port.start(), Err(Error::NotConfigured(_))));
    let cfg = PortConfig {
        rx_queues: 1,
        tx_queues: 1,
        rx_ring: 512,
        tx_ring: 512,
        promiscuous: true,
    };
    // Two queues on a device that cannot hash flows to queues: refused, since the two directions of a
    // connection could reach different workers.
    let two = PortConfig {
        rx_queues: 2,
        tx_queues: 2,
        ..cfg.clone()
    };
    assert!(matches!(
        port.configure(&two, &pool),
        Err(Error::NoRss { .. })
    ));
    port.configure(&cfg, &pool).expect("configure");
    {
        let mut queues = port.start().expect("start");
        assert!(matches!(port.start(), Err(Error::AlreadyStarted(_))));
        assert!(
            port.link_up().expect("link status"),
            "net_ring is up once started"
        );
        let mut rx = queues.rx.pop().unwrap();
        let mut tx = queues.tx.pop().unwrap();

        // Round trip, contents intact and in order.
        let mut out = Burst::new();
        for i in 0..10 {
            out.push(Mbuf::from_bytes(&pool, &frame(i)).unwrap())
                .unwrap();
        }
        assert_eq!(out.bytes(), (0..10).map(|i| frame(i).len() as u64).sum());
        assert_eq!(tx.tx(&mut out), 10);
        assert!(out.is_empty());
        let mut back = Burst::new();
        assert_eq!(rx.rx(&mut back), 10);
        for (i, data) in back.iter().enumerate() {
            assert_eq!(data, frame(i).as_slice());
        }

        // retain keeps order and frees the rest.
        let freed = back.retain(|d| d[7] % 2 == 0);
        assert_eq!(freed, 5);
        assert_eq!(back.data(1).unwrap(), frame(2).as_slice());
        assert_eq!(back.clear(), 5);
        assert_eq!(pool.in_use(), 0);

        // Back-pressure: the ring fills up; unsent packets stay in the burst until freed, none leak.
        let (mut sent, mut dropped) = (0, 0);
        for round in 0..40 {
            let mut b = Burst::new();
            while !b.is_full() {
                b.push(Mbuf::from_bytes(&pool, &frame(round)).unwrap())
                    .unwrap();
            }
            sent += tx.tx(&mut b);
            dropped += b.clear();
        }
        assert_eq!(sent, RING_CAPACITY);
        assert_eq!(sent + dropped, 40 * MAX_BURST);
        assert_eq!(pool.in_use() as usize, RING_CAPACITY);

        // A worker lcore drains the ring, borrowing the queue and a counter from this stack frame.
        let received = AtomicUsize::new(0);
        let ((), joined) = lcore::scope(&eal, |s| {
            s.spawn(1, || {
                let mut b = Burst::new();
                loop {
                    let n = rx.rx(&mut b);
                    if n == 0 {
                        break;
                    }
                    received.fetch_add(n, Ordering::Relaxed);
                    b.clear();
                }
            })
            .expect("launch on lcore 1");
        });
        assert!(joined.panicked.is_empty());
        assert_eq!(received.load(Ordering::Relaxed), RING_CAPACITY);
        assert_eq!(pool.in_use(), 0);

        // A panicking worker is reported, not propagated across the C frame.
        let ((), joined) = lcore::scope(&eal, |s| {
            s.spawn(1, || panic!("worker failure")).unwrap();
        });
        assert_eq!(joined.panicked, vec![1]);
    }
    let stats = port.stats().unwrap();
    assert_eq!(stats.tx_packets as usize, 10 + RING_CAPACITY);
    port.stop().expect("stop");
}
