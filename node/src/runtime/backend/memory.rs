//! A backend held in memory, steered by a test through a [`MemoryHandle`]: the test
//! sets this cluster's exports and leadership, and reads what the driver asked to write.

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::seam::{
    Backend, BackendCounters, BackendEvent, ExportSet, Imports, ImportsUpdate, LeaseSeen,
    export_changes,
};

/// Most events a test may queue before the driver takes them.
pub const EVENTS_MAX: usize = 64;

/// What the driver has written, for the test to read.
#[derive(Clone, Debug, Default)]
pub struct Written {
    /// The imports after the latest apply or resync.
    pub imports: Imports,
    /// How many times imports were applied (changes) and resynced (everything).
    pub applies: u64,
    pub resyncs: u64,
    /// Whether the latest update said the view was settled.
    pub settled: bool,
    pub leases: Vec<LeaseSeen>,
}

/// The test's side.
#[derive(Clone, Debug)]
pub struct MemoryHandle {
    events: mpsc::Sender<Input>,
    written: Arc<Mutex<Written>>,
}

#[derive(Debug)]
enum Input {
    Exports(ExportSet),
    Leadership(bool),
    Resync,
}

impl MemoryHandle {
    /// Replaces this cluster's exports (the backend reports the difference).
    pub async fn set_exports(&self, exports: ExportSet) {
        self.send(Input::Exports(exports)).await;
    }

    pub async fn set_leader(&self, leader: bool) {
        self.send(Input::Leadership(leader)).await;
    }

    pub async fn resync(&self) {
        self.send(Input::Resync).await;
    }

    async fn send(&self, input: Input) {
        self.events
            .send(input)
            .await
            .expect("the driver owns the backend while the test runs");
    }

    pub fn written(&self) -> Written {
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The driver's side.
#[derive(Debug)]
pub struct MemoryBackend {
    events: mpsc::Receiver<Input>,
    current: Option<ExportSet>,
    written: Arc<Mutex<Written>>,
}

impl MemoryBackend {
    pub fn new() -> (Self, MemoryHandle) {
        let (tx, rx) = mpsc::channel(EVENTS_MAX);
        let written = Arc::new(Mutex::new(Written::default()));
        let backend = Self {
            events: rx,
            current: None,
            written: Arc::clone(&written),
        };
        (
            backend,
            MemoryHandle {
                events: tx,
                written,
            },
        )
    }

    fn write(&self, f: impl FnOnce(&mut Written)) {
        f(&mut self.written.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

impl Backend for MemoryBackend {
    async fn next_event(&mut self) -> BackendEvent {
        match self.events.recv().await {
            Some(Input::Exports(next)) => {
                let changes = export_changes(self.current.as_ref(), &next);
                self.current = Some(next);
                BackendEvent::Exports(changes)
            }
            Some(Input::Leadership(leader)) => BackendEvent::Leadership(leader),
            Some(Input::Resync) => BackendEvent::Resync,
            None => std::future::pending().await,
        }
    }

    fn exports(&self) -> Option<&ExportSet> {
        self.current.as_ref()
    }

    fn apply_imports(&mut self, update: ImportsUpdate<'_>) {
        self.write(|w| {
            w.imports = update.all.clone();
            w.applies += 1;
            w.settled = update.settled;
        });
    }

    fn resync_imports(&mut self, update: ImportsUpdate<'_>) {
        self.write(|w| {
            w.imports = update.all.clone();
            w.resyncs += 1;
            w.settled = update.settled;
        });
    }

    fn mirror_leases(&mut self, leases: &[LeaseSeen]) {
        self.write(|w| w.leases = leases.to_vec());
    }

    fn counters(&self) -> BackendCounters {
        Vec::new()
    }

    async fn shutdown(&mut self) {}
}
