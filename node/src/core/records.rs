//! The view: every verified record, one per (origin, service), and the merge rule.
//!
//! Each (origin, service) has one writer, so records merge by version alone: a higher
//! version replaces, a lower one is dropped, and the same version with other bytes is
//! equivocation. The view keeps per-origin summaries (highest version, an
//! order-independent hash) up to date for anti-entropy.

use std::collections::BTreeMap;
use std::sync::Arc;

use shoal_proto::wire::{OriginSummary, RECORDS_PER_ORIGIN_MAX};
use shoal_proto::{ClusterId, RecordRef, ServiceKey, SignedRecord, Verified};

/// What merging one record did. Only `Accepted` changes state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MergeOutcome {
    /// New, or newer than what was held (`previous` is the replaced version).
    Accepted { previous: Option<u64> },
    /// Exactly the record already held.
    Duplicate,
    /// Older than what is held; dropped and never re-gossiped.
    Stale,
    /// Same version as held but different contents: the origin equivocated. Dropped.
    Equivocation,
    /// A record of a service new to the view, from an origin that already holds
    /// [`RECORDS_PER_ORIGIN_MAX`] records. Dropped; state unchanged.
    OverBound,
}

#[derive(Debug, Default)]
pub(super) struct OriginRecords {
    pub(super) services: BTreeMap<ServiceKey, Arc<SignedRecord>>,
    pub(super) max_version: u64,
    pub(super) hash: u64,
}

impl OriginRecords {
    fn summary(&self, origin: &ClusterId) -> OriginSummary {
        OriginSummary {
            origin: origin.clone(),
            max_version: self.max_version,
            hash: self.hash,
            records: u32::try_from(self.services.len()).unwrap_or(u32::MAX),
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct View {
    origins: BTreeMap<ClusterId, OriginRecords>,
    /// The same records indexed by service, then origin: imports read one service.
    by_service: BTreeMap<ServiceKey, BTreeMap<ClusterId, Arc<SignedRecord>>>,
    root: u64,
    len: u64,
}

impl View {
    /// Merges a verified record. The caller persists and disseminates on `Accepted`.
    pub(super) fn merge(
        &mut self,
        verified: Verified<Arc<SignedRecord>>,
    ) -> (MergeOutcome, Arc<SignedRecord>) {
        let signed = verified.into_inner();
        let origin = self
            .origins
            .entry(signed.record.origin.clone())
            .or_default();
        let held = origin.services.get(&signed.record.service);
        let outcome = match held {
            None if origin.services.len() >= RECORDS_PER_ORIGIN_MAX => MergeOutcome::OverBound,
            None => MergeOutcome::Accepted { previous: None },
            Some(old) if signed.record.version > old.record.version => MergeOutcome::Accepted {
                previous: Some(old.record.version),
            },
            Some(old) if signed.record.version < old.record.version => MergeOutcome::Stale,
            Some(old) if **old == *signed => MergeOutcome::Duplicate,
            Some(_) => MergeOutcome::Equivocation,
        };
        if let MergeOutcome::Accepted { .. } = outcome {
            let arc = signed;
            let new_hash = arc.digest_hash();
            let old = origin
                .services
                .insert(arc.record.service.clone(), Arc::clone(&arc));
            let old_hash = match &old {
                Some(old) => old.digest_hash(),
                None => {
                    self.len += 1;
                    0
                }
            };
            self.by_service
                .entry(arc.record.service.clone())
                .or_default()
                .insert(arc.record.origin.clone(), Arc::clone(&arc));
            origin.hash ^= old_hash ^ new_hash;
            origin.max_version = origin.max_version.max(arc.record.version);
            self.root ^= old_hash ^ new_hash;
            return (outcome, arc);
        }
        let held = held.map(Arc::clone).unwrap_or(signed);
        (outcome, held)
    }

    pub(super) fn get(
        &self,
        origin: &ClusterId,
        service: &ServiceKey,
    ) -> Option<&Arc<SignedRecord>> {
        self.origins.get(origin)?.services.get(service)
    }

    pub(super) fn origin(&self, origin: &ClusterId) -> Option<&OriginRecords> {
        self.origins.get(origin)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Arc<SignedRecord>> {
        self.origins.values().flat_map(|o| o.services.values())
    }

    /// All records of one service, by origin.
    pub(super) fn service_records(
        &self,
        service: &ServiceKey,
    ) -> impl Iterator<Item = &Arc<SignedRecord>> {
        self.by_service
            .get(service)
            .into_iter()
            .flat_map(|by_origin| by_origin.values())
    }

    pub(super) fn root(&self) -> u64 {
        self.root
    }

    pub(super) fn len(&self) -> u64 {
        self.len
    }

    pub(super) fn summaries(&self) -> Vec<OriginSummary> {
        self.origins.iter().map(|(id, o)| o.summary(id)).collect()
    }

    pub(super) fn summary(&self, origin: &ClusterId) -> Option<OriginSummary> {
        self.origins.get(origin).map(|o| o.summary(origin))
    }

    /// The (service, version) pairs held from `origin`, for a pull.
    pub(super) fn refs(&self, origin: &ClusterId) -> Vec<RecordRef> {
        self.origins
            .get(origin)
            .map(|o| o.services.values().map(|r| r.reference()).collect())
            .unwrap_or_default()
    }

    /// Records of `origin` the peer lacks or holds older, given what it has.
    pub(super) fn newer_than(
        &self,
        origin: &ClusterId,
        have: &[RecordRef],
    ) -> Vec<Arc<SignedRecord>> {
        let Some(records) = self.origins.get(origin) else {
            return Vec::new();
        };
        let theirs: BTreeMap<&ServiceKey, u64> =
            have.iter().map(|r| (&r.service, r.version)).collect();
        records
            .services
            .values()
            .filter(|r| {
                theirs
                    .get(&r.record.service)
                    .is_none_or(|v| *v < r.record.version)
            })
            .cloned()
            .collect()
    }

    /// Recomputes every summary from scratch and compares with the incremental ones.
    pub(super) fn check(&self) -> Result<(), String> {
        let mut root = 0;
        let mut len = 0;
        for (id, origin) in &self.origins {
            let hash = origin.services.values().fold(0, |h, r| h ^ r.digest_hash());
            let max = origin
                .services
                .values()
                .map(|r| r.record.version)
                .max()
                .unwrap_or(0);
            if hash != origin.hash || max != origin.max_version {
                return Err(format!("origin {id}: summary out of date"));
            }
            if let Some(r) = origin.services.values().find(|r| &r.record.origin != id) {
                return Err(format!("record of {} filed under {id}", r.record.origin));
            }
            root ^= hash;
            len += origin.services.len() as u64;
        }
        if root != self.root || len != self.len {
            return Err("view root or length out of date".into());
        }
        let indexed: usize = self.by_service.values().map(BTreeMap::len).sum();
        let by_service_agrees = self.by_service.iter().all(|(service, by_origin)| {
            by_origin.iter().all(|(origin, r)| {
                self.get(origin, service)
                    .is_some_and(|held| Arc::ptr_eq(held, r))
            })
        });
        if indexed as u64 != self.len || !by_service_agrees {
            return Err("service index disagrees with the view".into());
        }
        Ok(())
    }
}
