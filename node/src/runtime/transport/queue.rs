//! Queues bounded in bytes as well as in messages.
//!
//! A message count alone bounds nothing: 4,096 frames of 1 MiB each are 4 GiB. Each
//! queued message therefore holds a charge of its own size against a byte budget (a
//! semaphore with one permit per byte) and gives it back when the receiver takes it.
//! A message that would pass either bound is refused at once, never waited for: the
//! sender counts it and drops it, as with a full message queue.

use std::sync::Arc;

use tokio::sync::mpsc::error::{TryRecvError, TrySendError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// Why a message was not queued; the message is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The queue holds its most messages.
    Messages,
    /// The message would take the queue (or the budget it shares) past its bytes.
    Bytes,
    /// The receiver is gone.
    Closed,
}

/// A byte budget, shared by every queue charged against it.
#[derive(Clone, Debug)]
pub struct ByteBudget {
    permits: Arc<Semaphore>,
    bytes_max: usize,
}

/// Bytes taken from a [`ByteBudget`], given back on drop.
#[derive(Debug)]
pub struct Charge {
    _permit: OwnedSemaphorePermit,
}

impl ByteBudget {
    /// A budget of `bytes_max` bytes (at most `Semaphore::MAX_PERMITS`).
    pub fn new(bytes_max: usize) -> Self {
        let bytes_max = bytes_max.min(Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(bytes_max)),
            bytes_max,
        }
    }

    /// Takes `bytes` if the budget has them, without waiting.
    pub fn try_charge(&self, bytes: usize) -> Option<Charge> {
        let n = u32::try_from(bytes).ok()?;
        self.permits
            .clone()
            .try_acquire_many_owned(n)
            .ok()
            .map(|permit| Charge { _permit: permit })
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.bytes_max - self.permits.available_permits()
    }
}

/// A queue of at most `messages_max` messages and `bytes_max` bytes.
pub fn bounded<T>(messages_max: usize, bytes_max: usize) -> (QueueSender<T>, QueueReceiver<T>) {
    let (tx, rx) = mpsc::channel(messages_max);
    let budget = ByteBudget::new(bytes_max);
    (
        QueueSender {
            tx,
            budget: budget.clone(),
        },
        QueueReceiver { rx, budget },
    )
}

/// The sending half; clones share the queue.
#[derive(Debug)]
pub struct QueueSender<T> {
    tx: mpsc::Sender<(T, Charge)>,
    budget: ByteBudget,
}

impl<T> Clone for QueueSender<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            budget: self.budget.clone(),
        }
    }
}

impl<T> QueueSender<T> {
    /// Queues `message`, which counts as `bytes`, or refuses it at once.
    pub fn try_send(&self, message: T, bytes: usize) -> Result<(), Refused> {
        if self.tx.is_closed() {
            return Err(Refused::Closed);
        }
        let charge = self.budget.try_charge(bytes).ok_or(Refused::Bytes)?;
        self.tx.try_send((message, charge)).map_err(|e| match e {
            TrySendError::Full(_) => Refused::Messages,
            TrySendError::Closed(_) => Refused::Closed,
        })
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// The receiving half: taking a message gives its bytes back.
#[derive(Debug)]
pub struct QueueReceiver<T> {
    rx: mpsc::Receiver<(T, Charge)>,
    budget: ByteBudget,
}

impl<T> QueueReceiver<T> {
    /// The next message; `None` once every sender is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<T> {
        self.rx.recv().await.map(|(message, _charge)| message)
    }

    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        self.rx.try_recv().map(|(message, _charge)| message)
    }

    /// Refuses further messages; those queued can still be taken.
    pub fn close(&mut self) {
        self.rx.close();
    }

    /// Messages queued now.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// Bytes queued now.
    pub fn bytes(&self) -> usize {
        self.budget.used()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_message_over_the_bytes_left_is_refused_and_taking_one_gives_its_bytes_back() {
        let (tx, mut rx) = bounded::<u32>(8, 100);
        assert_eq!(tx.try_send(1, 60), Ok(()));
        assert_eq!(tx.try_send(2, 41), Err(Refused::Bytes));
        assert_eq!(tx.try_send(3, 40), Ok(()));
        assert_eq!((rx.len(), rx.bytes()), (2, 100));
        assert_eq!(tx.try_send(4, 1), Err(Refused::Bytes));
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.bytes(), 40);
        assert_eq!(tx.try_send(5, 60), Ok(()));
        assert_eq!(rx.try_recv(), Ok(3));
        assert_eq!(rx.try_recv(), Ok(5));
        assert_eq!(rx.bytes(), 0);
    }

    #[tokio::test]
    async fn the_message_bound_holds_whatever_the_bytes() {
        let (tx, mut rx) = bounded::<u32>(2, 1_000);
        assert_eq!(tx.try_send(1, 1), Ok(()));
        assert_eq!(tx.try_send(2, 1), Ok(()));
        assert_eq!(tx.try_send(3, 1), Err(Refused::Messages));
        // The refused message's bytes were given back at once.
        assert_eq!(rx.bytes(), 2);
        rx.close();
        assert_eq!(tx.try_send(4, 1), Err(Refused::Closed));
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.recv().await, Some(2));
        assert_eq!(rx.recv().await, None);
    }

    #[test]
    fn a_shared_budget_bounds_every_queue_charged_against_it() {
        let budget = ByteBudget::new(10);
        let a = budget.try_charge(6).expect("6 of 10");
        assert!(budget.try_charge(5).is_none());
        let b = budget.try_charge(4).expect("the last 4");
        assert_eq!(budget.used(), 10);
        drop(a);
        assert_eq!(budget.used(), 4);
        drop(b);
        assert!(
            budget.try_charge(usize::MAX).is_none(),
            "more than a u32 of bytes"
        );
        assert_eq!(budget.used(), 0);
    }
}
