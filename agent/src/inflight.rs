//! Backpressure: how many events and bytes are in Kafka's hands and not yet acknowledged.
//!
//! The read loop admits each event before handing it to Kafka and waits while the bounds are
//! reached; acknowledgements release their events, a batch of delivery reports at a time.
//! Atomics instead of two tokio semaphores: a semaphore release takes its waiter-list mutex,
//! which, when reports had a thread of their own, contended with the read loop's acquires
//! (BENCHMARKS.md).
//! A waiting reader is woken once the window has drained to three quarters, not for every
//! acknowledgement, so a full window costs one wake-up per quarter window rather than one per
//! event.

use std::sync::atomic::{fence, AtomicBool, Ordering};

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;

/// The counts are the `flink_agent_events_in_flight` / `flink_agent_bytes_in_flight` gauges
/// themselves: one counter per quantity, read by the window and by Prometheus alike.
pub struct InFlight {
    events: Gauge,
    bytes: Gauge,
    max_events: usize,
    max_bytes: usize,
    /// The reader is waiting for room.
    waiting: AtomicBool,
    room: Notify,
}

impl InFlight {
    pub fn new(max_events: usize, max_bytes: usize, events: Gauge, bytes: Gauge) -> Self {
        Self {
            events,
            bytes,
            max_events: max_events.max(1),
            max_bytes: max_bytes.max(1),
            waiting: AtomicBool::new(false),
            room: Notify::new(),
        }
    }

    /// Waits until an event of `size` bytes fits, then counts it; whoever ends the event's
    /// flight (its acknowledgement, or abandoning it) calls [`InFlight::release`]. An event
    /// larger than the whole byte bound still goes, alone. Meant for one admitting task (the
    /// read loop): two admitting at once could each pass the check and overshoot the bound
    /// by one event.
    pub async fn admit(&self, size: usize) {
        loop {
            if self.try_count(size) {
                return;
            }
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            self.waiting.store(true, Ordering::SeqCst);
            // A release between the check above and `waiting` would not wake us. The fence
            // pairs with the one in `release` (the gauges' own operations are relaxed): either
            // this check sees that release's counts, or that release sees `waiting`.
            fence(Ordering::SeqCst);
            if self.try_count(size) {
                self.waiting.store(false, Ordering::SeqCst);
                return;
            }
            notified.await;
        }
    }

    fn try_count(&self, size: usize) -> bool {
        let events = self.events();
        let bytes = self.bytes();
        let fits = events == 0 || (events < self.max_events && bytes + size <= self.max_bytes);
        if fits {
            self.events.inc();
            self.bytes.inc_by(as_i64(size));
        }
        fits
    }

    /// Ends the flight of `events` admitted events of `bytes` bytes in all.
    pub fn release(&self, events: usize, bytes: usize) {
        let events = as_usize(self.events.dec_by(as_i64(events))).saturating_sub(events);
        let bytes = as_usize(self.bytes.dec_by(as_i64(bytes))).saturating_sub(bytes);
        fence(Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst)
            && (events == 0
                || (events <= self.max_events / 4 * 3 && bytes <= self.max_bytes / 4 * 3))
            && self.waiting.swap(false, Ordering::SeqCst)
        {
            self.room.notify_one();
        }
    }

    /// Events admitted and not yet released.
    pub fn events(&self) -> usize {
        as_usize(self.events.get())
    }

    /// Bytes admitted and not yet released.
    pub fn bytes(&self) -> usize {
        as_usize(self.bytes.get())
    }
}

fn as_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn as_usize(n: i64) -> usize {
    usize::try_from(n).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    /// Admitting `size` bytes waits (`why` it must) until `release` frees room, then goes.
    async fn admitted_only_after(
        w: &Arc<InFlight>,
        size: usize,
        release: (usize, usize),
        why: &str,
    ) {
        let w2 = w.clone();
        let mut next = tokio::spawn(async move { w2.admit(size).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!next.is_finished(), "admitted too early: {why}");
        w.release(release.0, release.1);
        tokio::time::timeout(Duration::from_secs(5), &mut next)
            .await
            .unwrap_or_else(|_| panic!("not woken after the release: {why}"))
            .expect("admit task");
    }

    #[tokio::test]
    async fn waits_for_room_and_wakes_at_three_quarters() {
        let w = Arc::new(InFlight::new(4, 1000, Gauge::default(), Gauge::default()));
        for _ in 0..4 {
            w.admit(10).await;
        }
        // Releasing one leaves 3 of 4 in flight: the wake-up mark, so the waiter gets room.
        admitted_only_after(&w, 10, (1, 10), "a fifth event in a window of four").await;
        assert_eq!((w.events(), w.bytes()), (4, 40));
        w.release(4, 40);
        assert_eq!((w.events(), w.bytes()), (0, 0));
    }

    #[tokio::test]
    async fn byte_bound_and_oversized_event_goes_alone() {
        let w = Arc::new(InFlight::new(100, 100, Gauge::default(), Gauge::default()));
        w.admit(60).await;
        // An oversized event goes once the window is empty.
        admitted_only_after(
            &w,
            500,
            (1, 60),
            "500 bytes next to 60 in a 100-byte window",
        )
        .await;
        assert_eq!((w.events(), w.bytes()), (1, 500));
    }

    #[tokio::test]
    async fn no_lost_wakeup_under_concurrent_releases() {
        let w = Arc::new(InFlight::new(
            8,
            1 << 20,
            Gauge::default(),
            Gauge::default(),
        ));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let releaser = {
            let w = w.clone();
            std::thread::spawn(move || {
                let mut n = 0;
                while rx.blocking_recv().is_some() {
                    w.release(1, 1);
                    n += 1;
                }
                n
            })
        };
        for _ in 0..20_000 {
            tokio::time::timeout(Duration::from_secs(10), w.admit(1))
                .await
                .expect("admit hung: a wake-up was lost");
            assert!(w.events() <= 8);
            assert!(tx.send(()).is_ok(), "releaser gone");
        }
        drop(tx);
        assert_eq!(releaser.join().ok(), Some(20_000));
        assert_eq!((w.events(), w.bytes()), (0, 0));
    }
}
